"""Checkpoints with ``torch.distributed.checkpoint`` (DCP), atomic, with exact resume; the final model export.

Layout of ``output_dir/checkpoint/``:

- ``*.distcp`` + ``.metadata``: DCP shards of the trained model, its optimizer and any frozen state (the GDSO
  reference policy), each rank writing its own part (under fsdp only its shard; under ddp rank 0 writes the
  replicated tensors once);
- ``rng_rank{r}.pt``: the torch / CUDA / Python RNG states of rank r;
- ``extra.pt``: plain tensors a recipe keeps (e.g. the generator's validation images before training);
- ``trainer_state.json``: step (the data position), LR scheduler, evaluation results, recipe state (e.g. the
  reward trainers' sampled reasoning traces, for the report). It is written last: a folder without it is incomplete.

Every rank writes into ``checkpoint.tmp/``; when all are done rank 0 renames it into place (the previous one is
first renamed to ``checkpoint.old`` and removed after), so a run killed while saving leaves a loadable checkpoint.
Resume reads the shards into the already sharded model (no rank materialises the full model); DCP reshards, so a
different world size at resume works. RNG files of ranks that did not exist before are absent: those ranks keep
their seeded state (the recipes' sampling is seeded per item and step, so it does not depend on them).
Files are read with ``weights_only=True``: nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch

CKPT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"


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


def _state(model, optimizer, frozen: dict) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    for name, module in frozen.items():
        state[name] = get_model_state_dict(module)
    return state


def jsonable(obj):
    """``obj`` with tensors made plain numbers or lists (e.g. a scheduler's state when the optimizer keeps its
    learning rate as a tensor, as torchao's do), so that it can be written as JSON."""
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder (``checkpoint/``, or ``checkpoint.old/`` when a rename was cut)."""
    out = Path(output_dir)
    for name in (CKPT_DIR, CKPT_DIR + ".old"):
        if (out / name / STATE_FILE).exists():
            return out / name
    return None


def save_checkpoint(output_dir: str | Path, rt, model, optimizer, meta: dict, frozen: dict | None = None,
                    extra_tensors: dict | None = None) -> Path:
    """Collective (every rank calls it). ``model``: the trained module (unwrapped from DDP), ``frozen``:
    name -> module whose parameters are saved too; ``meta``: JSON-able state written by rank 0."""
    import torch.distributed.checkpoint as dcp

    out = Path(output_dir)
    tmp, final, old = out / (CKPT_DIR + ".tmp"), out / CKPT_DIR, out / (CKPT_DIR + ".old")
    if rt.main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    rt.barrier()
    with warnings.catch_warnings():  # one process: DCP says it assumes one process
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(_state(model, optimizer, frozen or {}), checkpoint_id=str(tmp), no_dist=rt.world == 1)
    torch.save(rng_state(), tmp / f"rng_rank{rt.rank}.pt")
    rt.barrier()
    if rt.main:
        if extra_tensors:
            torch.save(extra_tensors, tmp / "extra.pt")
        with open(tmp / STATE_FILE, "w") as fh:
            json.dump(jsonable(meta) | {"world_size": rt.world}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if os.environ.get("ZRCORE_STOP_BEFORE_RENAME"):  # tests: a kill between the write and the rename
            raise SystemExit("stopped before the checkpoint rename (ZRCORE_STOP_BEFORE_RENAME)")
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    rt.barrier()
    return final


def load_checkpoint(output_dir: str | Path, rt, model, optimizer, frozen: dict | None = None) -> dict | None:
    """Loads the newest complete checkpoint into ``model`` / ``optimizer`` / ``frozen`` (collective) and restores
    this rank's RNG state; returns its meta (with "extra_tensors"), or None when there is none."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    path = complete_checkpoint(output_dir)
    if path is None:
        return None
    frozen = frozen or {}
    state = _state(model, optimizer, frozen)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path), no_dist=rt.world == 1)
    except (Exception, CheckpointException) as err:  # another architecture or size: one line, not DCP's dump
        lines = [x.strip() for x in str(err).strip().splitlines() if x.strip()] or [type(err).__name__]
        first = lines[-1][:200]  # DCP puts the rank's traceback first and the cause last
        raise ValueError(f"checkpoint {path} does not fit this model ({first}); start afresh with "
                         f"--overwrite_output_dir true or use another --output_dir") from err
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for name, module in frozen.items():
        set_model_state_dict(module, state[name])
    rng_file = path / f"rng_rank{rt.rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=True))
    meta = json.loads((path / STATE_FILE).read_text())
    extra = path / "extra.pt"
    meta["extra_tensors"] = torch.load(extra, weights_only=True) if extra.exists() else {}
    meta["path"] = str(path)
    return meta


def full_state_dict(module) -> dict:
    """The full, unsharded state dict of ``module`` gathered to rank 0 on the CPU (collective; other ranks get
    an empty dict). Works for plain, DDP-wrapped and FSDP2-sharded modules."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def stop_if_requested(step: int, total: int, before_exit=None) -> None:
    """Simulates a killed run (tests): raises SystemExit after ``step`` when ZRCORE_STOP_AFTER_STEP <= step < total,
    calling ``before_exit`` first (e.g. to close a progress bar)."""
    stop_after = int(os.environ.get("ZRCORE_STOP_AFTER_STEP", "0"))
    if stop_after and stop_after <= step < total:
        if before_exit is not None:
            before_exit()
        raise SystemExit(f"stopped after step {step} (ZRCORE_STOP_AFTER_STEP)")


def replace_folder_atomic(folder: str | Path, write) -> None:
    """``write(tmp)`` into a temporary folder, then swapped in for ``folder``."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def export_reward_model(rm, folder: str | Path, rt) -> None:
    """Collective: gathers the full state of ``rm`` (sharded or not) to rank 0, which writes a Hugging Face folder
    (safetensors + tokenizer + image processor + zrcore_bins.yaml) loadable by ``RewardModel.from_pretrained`` and
    by the arch's transformers class."""
    full = full_state_dict(rm)
    if rt.main:
        prefix = "model."
        state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        replace_folder_atomic(folder, lambda tmp: rm.save_pretrained(tmp, state_dict=state))
    rt.barrier()
