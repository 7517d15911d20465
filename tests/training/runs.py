"""Helpers of the training tests: tiny recipe arguments, torchrun launches, the metrics a run logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--train_prompts", "4", "--eval_prompts", "2", "--batch_size", "2", "--candidates", "3",
        "--dimensions", "realism", "--image_size", "56", "--progress", "false", "--save_every", "1", "--lr", "1e-3",
        "--init_from", ""]
GDSO_TINY = TINY + ["--sampling.num_samples", "2", "--sampling.max_reasoning_tokens", "3", "--eval_samples", "1", "--steps", "4"]
GENERATOR_TINY = ["--steps", "3", "--batch_size", "2", "--latent_size", "8", "--num_steps", "2", "--val_prompts", "2",
                  "--eval_every", "2", "--dimensions", "realism", "--lr", "0.05", "--progress", "false"]


def torchrun(recipe: str, args: list[str], nproc: int, out: Path, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """Runs recipes/<recipe>.py under torchrun with ``nproc`` processes (gloo on CPU) into ``out``."""
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    run_env.pop("ZRCORE_STOP_AFTER_STEP", None)
    run_env.update(env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"recipes/{recipe}.py", *args, "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def logged(out: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def final_metrics(out: Path) -> dict:
    res = json.loads((Path(out) / "results.json").read_text())
    return res.get("final", res.get("after"))
