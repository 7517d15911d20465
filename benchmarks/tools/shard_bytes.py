"""Bytes each rank holds under FSDP2: local parameter + optimizer-state bytes of the trained model, and local
parameter bytes of the frozen GDSO reference policy and the RISD teacher, against the one-process totals.

    python benchmarks/tools/shard_bytes.py --out one.json                                        # the one-process totals
    torchrun --nproc_per_node 4 benchmarks/tools/shard_bytes.py --distributed fsdp --out four.json

Measured on the local tensors (``DTensor.to_local()``) after one GDSO step, so AdamW's state exists. Rank 0
prints the table and writes JSON with the per-rank byte counts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

ARGS = ["--init_from", "", "--train_prompts", "4", "--eval_prompts", "1", "--batch_size", "4", "--candidates", "2",
        "--dimensions", "realism", "--image_size", "56", "--progress", "false", "--sampling.max_reasoning_tokens", "2"]
GDSO_ARGS = ["--sampling.num_samples", "2", "--beta", "0.05"]


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if hasattr(t, "to_local"):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total


def optimizer_tensors(opt):
    for state in opt.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)


def measure(distributed: str, arch: str, preset: str) -> dict:
    from zrcore.models import build_tiny_reward_model
    from zrcore.training.config import GDSOTeacherConfig, RISDConfig, parse_config
    from zrcore.training.gdso import GDSOTeacherTrainer
    from zrcore.training.student import RISDTrainer

    common = ARGS + ["--distributed", distributed, "--arch", arch, "--preset", preset]
    with tempfile.TemporaryDirectory() as tmp:
        gdso = GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, common + GDSO_ARGS + ["--output_dir", f"{tmp}/gdso"]))
        gdso.train_step(0)
        rt = gdso.rt
        teacher = Path(rt.broadcast(tmp)) / "teacher"  # rank 0's folder, read by every rank
        if rt.main:
            build_tiny_reward_model(arch, "teacher", seed=1).save_pretrained(teacher)
        rt.barrier()
        risd = RISDTrainer(parse_config(RISDConfig, common + ["--output_dir", f"{tmp}/risd", "--teacher", str(teacher)]))
        row = {"model_params": local_bytes(gdso.rm.parameters()), "optimizer_state": local_bytes(optimizer_tensors(gdso.opt)),
               "reference_params": local_bytes(gdso.ref.parameters()),
               "teacher_params": local_bytes(risd.frozen["teacher"].parameters())}
        rows = rt.gather(row)
        rt.barrier()
    return {"world": rt.world, "mode": distributed, "arch": arch, "preset": preset, "ranks": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distributed", default="none")
    parser.add_argument("--arch", default="qwen2_vl")
    parser.add_argument("--preset", default="teacher")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    res = measure(args.distributed, args.arch, args.preset)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        keys = ("model_params", "optimizer_state", "reference_params", "teacher_params")
        print(f"{args.arch} {args.preset}, {args.distributed}, {res['world']} process(es): bytes per rank")
        print("| rank | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for r, row in enumerate(res["ranks"]):
            print(f"| {r} | " + " | ".join(f"{row[k]:,}" for k in keys) + " |")
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()
    return res


if __name__ == "__main__":
    main()
