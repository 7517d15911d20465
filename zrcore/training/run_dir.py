"""A run directory records the settings it was started with; a rerun in it with other settings refuses.

``output_dir/run_config.yaml`` holds the config, with the values a trainer resolves while it builds (a reasoning cap
of 0: the longest description) as resolved. ``output_dir/run_info.json`` holds what else the run was made with: its
config class, the git commit of the code of each start (``code_commit``) and the given values of the resolved fields
(0 for the cap), so that the same command compares equal to the record before and after resolution.
Starting a recipe in a folder that already holds a checkpoint:

- the same training-relevant settings: the run resumes (restarting the same command continues it);
- different ones: one-line error naming the first differing field, unless ``--resume true`` (continue the
  checkpoint with the new settings) or ``--overwrite_output_dir true`` (remove the old checkpoint, start afresh).

Every field counts as training-relevant except the few of ``NOT_TRAINING`` (bookkeeping, evaluation and placement),
so that a field added to a config later is compared without being listed anywhere. A sweep that reuses a finished
run's results (``zrcore.training.sweep``) compares the same record, the evaluation fields of ``NOT_RESULTS``
included, and the commit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from zrcore.training.checkpoint import CKPT_DIR, complete_checkpoint
from zrcore.training.cli_args import ConfigError, _flatten

log = logging.getLogger("zrcore")

RECORD = "run_config.yaml"
INFO = "run_info.json"
# fields that do not change what is trained: bookkeeping, evaluation, placement over devices and processes
NOT_TRAINING = frozenset({
    "output_dir", "progress", "report_to", "log_every", "save_every", "eval_every", "eval_start", "eval_limit",
    "eval_batch_size", "resume", "overwrite_output_dir", "device", "distributed", "fsdp_cpu_offload",
    "attn_implementation", "gradient_checkpointing", "pretrain_cache", "ref_offload", "micro_batch_tokens",
    "sampling.rollout_batch_size", "sampling.unshard_once", "sampling.decode",
})
# fields that change no result: NOT_TRAINING but the evaluation fields (what is evaluated, when, and on how much)
NOT_RESULTS = NOT_TRAINING - {"eval_every", "eval_start", "eval_limit"}


def settings(cfg) -> dict:
    """The config as a flat dict ("sampling.temperature": 1.0)."""
    return _flatten(dataclasses.asdict(cfg))


def _same(old, new) -> bool:
    """Equal values; numbers compare as numbers (1 == 1.0), booleans only with booleans."""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(new, bool):
        return float(old) == float(new)
    return old == new


def first_difference(recorded: dict, current: dict, given: dict | None = None,
                     ignore: frozenset[str] = NOT_TRAINING) -> tuple[str, object, object] | None:
    """(field, recorded value, current value) of the first field not in ``ignore`` that differs, in the config's
    field order; a field the record lacks (added to the config since) is not compared. ``given``: the recorded
    fields' values as given where the run resolved them (a cap of 0): the current value may equal either."""
    given = given or {}
    for key, value in current.items():
        if key in ignore or key not in recorded:
            continue
        if not (_same(recorded[key], value) or (key in given and _same(given[key], value))):
            return key, recorded[key], value
    return None


def _git(root: Path, *args: str) -> str | None:
    """The output of ``git args`` in ``root``, None when git is missing or fails."""
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def code_commit() -> str | None:
    """The git commit of the zrcore source this process runs, with ``-dirty-<hash of the diff>`` when tracked files
    differ from it; None when zrcore does not run from a git checkout (an installed wheel) or git is missing."""
    root = Path(__file__).resolve().parents[2]
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root:
        return None
    head = _git(root, "rev-parse", "HEAD")
    diff = _git(root, "diff", "HEAD", "--no-ext-diff", "--binary")
    if head is None or diff is None:
        return None
    if not diff:
        return head.strip()
    return f"{head.strip()}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


def _write(path: Path, text: str) -> None:
    """Writes ``path`` whole or not at all (a temporary file renamed over it): the other ranks, reading the record
    for their own check, never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_info(output_dir: str | Path) -> dict | None:
    """The run's ``run_info.json`` (config class, commits, given values of resolved fields), None when absent."""
    path = Path(output_dir) / INFO
    return json.loads(path.read_text()) if path.exists() else None


def recorded_settings(output_dir: str | Path) -> tuple[dict, dict] | None:
    """(the recorded config as a flat dict, the given values of its resolved fields), None without a record."""
    record = Path(output_dir) / RECORD
    if not record.exists():
        return None
    info = read_info(output_dir) or {}
    return _flatten(yaml.safe_load(record.read_text()) or {}), info.get("given", {})


def _write_info(out: Path, cfg, new_record: bool, new_history: bool) -> None:
    """Writes run_info.json: the config class, the commits of the starts that trained the checkpoint (this one
    appended when it differs from the last; ``new_history``: a new checkpoint, whose history starts here) and the
    given values of resolved fields (none yet when the record was just written: ``new_record``)."""
    info = (None if new_history else read_info(out)) or {"commits": []}
    info["config"] = f"{type(cfg).__module__}.{type(cfg).__qualname__}"
    if new_record or "given" not in info:
        info["given"] = {}
    commit = code_commit()
    if not info["commits"] or info["commits"][-1] != commit:
        info["commits"].append(commit)
    _write(out / INFO, json.dumps(info, indent=1) + "\n")


def record_resolved(cfg, given: dict) -> None:
    """After a trainer has resolved fields of ``cfg`` (``given``: flat field -> its value as given): the record shows
    the resolved values and run_info.json keeps the given ones (main rank only). A field the record already holds
    resolved (a resumed run's) keeps its record."""
    out = Path(cfg.output_dir)
    info = read_info(out) or {"commits": [code_commit()]}
    known = info.setdefault("given", {})
    new = {key: value for key, value in given.items() if key not in known}
    if not new:
        return
    record = yaml.safe_load((out / RECORD).read_text()) or {}
    current = settings(cfg)
    for key in new:
        *groups, name = key.split(".")
        node = record
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = current[key]
    _write(out / RECORD, yaml.safe_dump(record, sort_keys=False))
    known |= new
    _write(out / INFO, json.dumps(info, indent=1) + "\n")


def prepare_run_dir(cfg, main: bool = True) -> str:
    """Checks ``cfg`` against the run recorded in ``cfg.output_dir`` (see the module docstring) and returns what
    the run does: "new", "resume" or "overwrite". Rank 0 (``main``) removes the old checkpoint on overwrite and
    writes the record and run_info.json; every rank runs the check (they read the same files)."""
    out = Path(cfg.output_dir)
    ckpt = complete_checkpoint(out)
    record = out / RECORD
    current = settings(cfg)
    action = "new"
    if cfg.overwrite_output_dir:
        action = "overwrite"
        if main:
            for name in (CKPT_DIR, CKPT_DIR + ".old", CKPT_DIR + ".tmp"):
                if (out / name).exists():
                    shutil.rmtree(out / name)
            for name in ("metrics.jsonl",):
                if (out / name).exists():
                    (out / name).unlink()
    elif ckpt is not None:
        action = "resume"
        if record.exists():
            recorded, given = recorded_settings(out)
            diff = first_difference(recorded, current, given)
            if diff is not None and not cfg.resume:
                key, old, new = diff
                raise ConfigError(
                    f"output_dir {str(out)!r} holds a run with {key}={old!r}, now {key}={new!r}: pass "
                    f"--overwrite_output_dir true to start afresh, --resume true to continue it with the new "
                    f"settings, or another --output_dir")
            if diff is not None:
                log.warning("resuming %s with changed settings (first: %s %r -> %r)", ckpt, diff[0], diff[1], diff[2])
    elif cfg.resume:
        raise ConfigError(f"resume: output_dir {str(out)!r} holds no checkpoint to resume")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        rewrite = action != "resume" or cfg.resume or not record.exists()
        if rewrite:
            _write(record, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        _write_info(out, cfg, new_record=rewrite, new_history=action != "resume")
    return action
