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
    """``python script *args --output_dir out_dir --progress false`` unless out_dir/results.json exists; returns it.
    A failed run ends the sweep with the run's exit code (its error line is already on stderr)."""
    if not (out_dir / "results.json").exists():
        cmd = [sys.executable, str(script), *args, "--output_dir", str(out_dir), "--progress", "false"]
        log.info("$ " + " ".join(cmd))
        code = subprocess.run(cmd).returncode
        if code:  # the run has said why in its one line: the sweep stops with its exit code, no traceback
            raise SystemExit(code)
    return json.loads((out_dir / "results.json").read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std); the std of one value is 0."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
