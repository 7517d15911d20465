"""What the multi-run drivers (recipes/paper_table.py, recipes/generator_seeds.py) share: one recipe run per output
folder, skipped when its results.json exists (a sweep can be restarted), and the mean ± std over seeds."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("zrcore")


def run_once(script: str | Path, args: list[str], out_dir: Path) -> dict:
    """``python script *args --output_dir out_dir --progress false`` unless out_dir/results.json exists; returns it."""
    if not (out_dir / "results.json").exists():
        cmd = [sys.executable, str(script), *args, "--output_dir", str(out_dir), "--progress", "false"]
        log.info("$ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    return json.loads((out_dir / "results.json").read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std); the std of one value is 0."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
