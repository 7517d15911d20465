"""Atomic checkpoints and exact resume: model, optimizer, LR scheduler, RNG states, data position, metrics."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

CKPT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, state: dict) -> Path:
    """Writes ``state`` to output_dir/checkpoint.pt atomically: a temporary file, fsync, then rename, so a run
    killed while saving leaves the previous checkpoint intact."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CKPT_NAME + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    final = out / CKPT_NAME
    os.replace(tmp, final)
    return final


def stop_if_requested(step: int, total: int, before_exit=None) -> None:
    """Simulates a killed run (tests): raises SystemExit after ``step`` when ZRCORE_STOP_AFTER_STEP <= step < total,
    calling ``before_exit`` first (e.g. to close a progress bar)."""
    stop_after = int(os.environ.get("ZRCORE_STOP_AFTER_STEP", "0"))
    if stop_after and stop_after <= step < total:
        if before_exit is not None:
            before_exit()
        raise SystemExit(f"stopped after step {step} (ZRCORE_STOP_AFTER_STEP)")


def load_checkpoint(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / CKPT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def save_model_atomic(rm, folder: str | Path) -> None:
    """RewardModel.save_pretrained into a temporary folder, then swapped in."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rm.save_pretrained(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
