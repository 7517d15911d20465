"""The memory plan against a measured peak: the row of the GPU suite's ``scale`` step that says how far the
estimate (``zrcore.training.memory_plan``) is from ``torch.cuda.max_memory_allocated`` of the same step.

    python -m benchmarks.plan_error --measured /tmp/zrcore-scale.json --preset qwen2_5_vl_3b --batch 2x4x4 \\
        --reasoning_tokens 256 --distributed none --dtype bf16 --master_dtype bf16 --optimizer adamw_8bit ...

``--measured``: the JSON that ``benchmarks/train_gpu.py --out`` wrote (its ``peak_gib``); the other flags are the
memory plan's, set as the measured run was. Without a measured peak (a CPU run) the row says so.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.results import Table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", required=True, help="train_gpu.py's JSON")
    args, rest = parser.parse_known_args(argv)
    from zrcore.training.memory_plan import estimate, parse_args

    preset, workload, options, _ = parse_args(rest)
    plan = estimate(preset, workload, options)
    path = Path(args.measured)
    measured = json.loads(path.read_text()).get("peak_gib", float("nan")) if path.exists() else float("nan")
    planned = plan.peak / 2**30
    known = not math.isnan(measured)
    error = f"{100 * (planned - measured) / measured:+.1f}%" if known else "not measured (no CUDA peak)"
    Table("preset", "batch", "tokens", "plan peak (GiB):", "measured peak (GiB):", "plan error").row(
        preset, f"{workload.prompts}x{workload.candidates}x{workload.samples}", workload.reasoning_tokens,
        f"{planned:.2f}", f"{measured:.2f}" if known else "-", error)
    return {"plan_gib": planned, "measured_gib": measured}


if __name__ == "__main__":
    main()
