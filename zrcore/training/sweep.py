"""What the multi-run drivers (recipes/paper_table.py, recipes/generator_seeds.py) share: one recipe run per output
folder, its results.json reused when the folder's record says it was made with the same settings and code (a sweep
can be restarted), and the mean ± std over seeds.

A finished run is reused only when its record (``zrcore.training.run_dir``: run_config.yaml and run_info.json) matches
what the sweep asks for now: the config the arguments give (every field but the bookkeeping ones of
``run_dir.NOT_RESULTS``) and the git commit of the code (every start of the run, when git tells it). Otherwise the
sweep refuses, naming the folder and the first difference, or with ``rerun_changed`` runs it again afresh.
"""

from __future__ import annotations

import importlib
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

from zrcore.training.cli_args import ConfigError, parse_config
from zrcore.training.run_dir import NOT_RESULTS, code_commit, first_difference, read_info, recorded_settings, settings

log = logging.getLogger("zrcore")


def _config_class(name: str):
    """The config class recorded as "module.Class"."""
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def run_args(args: list[str], out_dir: Path) -> list[str]:
    """The arguments of a sweep's run in ``out_dir``: ``args`` and the folder, without progress bars."""
    return [*args, "--output_dir", str(out_dir), "--progress", "false"]


def stale_reason(args: list[str], out_dir: Path) -> str | None:
    """Why the finished run in ``out_dir`` is not the one ``args`` ask for now (another setting, another commit of
    the code, no record of either); None when it is."""
    info, recorded = read_info(out_dir), recorded_settings(out_dir)
    if info is None or recorded is None:
        return "no record of the settings and code it was made with"
    try:
        current = settings(parse_config(_config_class(info["config"]), run_args(args, out_dir)))
    except ValueError as err:  # the arguments of another recipe
        return f"another recipe ({info['config']}, which does not take these arguments: {err})"
    diff = first_difference(recorded[0], current, recorded[1], ignore=NOT_RESULTS)
    if diff is not None:
        key, old, new = diff
        return f"{key}={old!r}, now {key}={new!r}"
    commit = code_commit()
    if info["commits"] != [commit]:
        return f"the code at commit {', then '.join(map(str, info['commits']))}, now {commit}"
    return None


def run_once(script: str | Path, args: list[str], out_dir: Path, rerun_changed: bool = False) -> dict:
    """``python script *args --output_dir out_dir --progress false``; returns its results.json. A finished run
    (out_dir/results.json) is reused when it was made with the same settings and code (``stale_reason``); else a
    ``ConfigError`` names the folder and the difference, or with ``rerun_changed`` the run starts afresh
    (``--overwrite_output_dir true``). A failed run ends the sweep with the run's exit code (its error line is already
    on stderr)."""
    out_dir = Path(out_dir)
    results = out_dir / "results.json"
    extra: list[str] = []
    if results.exists():
        reason = stale_reason(args, out_dir)
        if reason is None:
            return json.loads(results.read_text())
        if not rerun_changed:
            raise ConfigError(f"{out_dir} holds results made with {reason}: remove the folder to make them again "
                              f"with the current settings and code, or restore those it was made with")
        log.warning("%s holds results made with %s: running it again afresh", out_dir, reason)
        results.unlink()  # a failed rerun must not leave the old results to be reused
        extra = ["--overwrite_output_dir", "true"]
    cmd = [sys.executable, str(script), *run_args(args, out_dir), *extra]
    log.info("$ " + " ".join(cmd))
    code = subprocess.run(cmd).returncode
    if code:  # the run has said why in its one line: the sweep stops with its exit code, no traceback
        raise SystemExit(code)
    return json.loads(results.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std); the std of one value is 0."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
