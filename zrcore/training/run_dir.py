"""A run directory records the settings it was started with; a rerun in it with other settings refuses.

``output_dir/run_config.yaml`` holds the config as given (before any value is resolved, e.g. a reasoning cap of 0).
Starting a recipe in a folder that already holds a checkpoint:

- the same training-relevant settings: the run resumes (restarting the same command continues it);
- different ones: one-line error naming the first differing field, unless ``--resume true`` (continue the
  checkpoint with the new settings) or ``--overwrite_output_dir true`` (remove the old checkpoint, start afresh).

Every field counts as training-relevant except the few of ``NOT_TRAINING`` (bookkeeping, evaluation and placement),
so that a field added to a config later is compared without being listed anywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import yaml

from zrcore.training.checkpoint import CKPT_DIR, complete_checkpoint
from zrcore.training.cli_args import ConfigError, _flatten

log = logging.getLogger("zrcore")

RECORD = "run_config.yaml"
# fields that do not change what is trained: bookkeeping, evaluation, placement over devices and processes
NOT_TRAINING = frozenset({
    "output_dir", "progress", "report_to", "log_every", "save_every", "eval_every", "eval_start", "eval_limit",
    "eval_batch_size", "resume", "overwrite_output_dir", "device", "distributed", "fsdp_cpu_offload",
    "attn_implementation", "gradient_checkpointing", "pretrain_cache", "ref_offload", "micro_batch_tokens",
    "sampling.rollout_batch_size", "sampling.unshard_once", "sampling.decode",
})


def settings(cfg) -> dict:
    """The config as a flat dict ("sampling.temperature": 1.0)."""
    return _flatten(dataclasses.asdict(cfg))


def first_difference(recorded: dict, current: dict) -> tuple[str, object, object] | None:
    """(field, recorded value, current value) of the first training-relevant field that differs, in the config's
    field order; a field the record lacks (added to the config since) is not compared."""
    for key, value in current.items():
        if key in NOT_TRAINING or key not in recorded:
            continue
        old = recorded[key]
        if isinstance(old, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            same = float(old) == float(value)
        else:
            same = old == value
        if not same:
            return key, old, value
    return None


def prepare_run_dir(cfg, main: bool = True) -> str:
    """Checks ``cfg`` against the run recorded in ``cfg.output_dir`` (see the module docstring) and returns what
    the run does: "new", "resume" or "overwrite". Rank 0 (``main``) removes the old checkpoint on overwrite and
    writes the record; every rank runs the check (they read the same files)."""
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
            recorded = _flatten(yaml.safe_load(record.read_text()) or {})
            diff = first_difference(recorded, current)
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
        if action != "resume" or cfg.resume or not record.exists():
            record.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return action
