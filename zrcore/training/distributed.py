"""One process or several under torchrun: init (gloo on CPU, nccl on GPU), sharding, gradient all-reduce."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(mode: str = "auto") -> tuple[int, int]:
    """(rank, world_size). mode "auto" initialises torch.distributed when torchrun's variables are present."""
    if mode not in ("auto", "none", "ddp"):
        raise ValueError(f"distributed must be 'auto', 'none' or 'ddp', got {mode!r}")
    if mode == "none" or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(items: list, rank: int, world: int) -> list:
    """Contiguous equal shards; the batch must divide evenly (so the per-rank losses average to the global one)."""
    if len(items) % world:
        raise ValueError(f"a batch of {len(items)} does not split over {world} processes; make it a multiple")
    per = len(items) // world
    return items[rank * per:(rank + 1) * per]


def average_gradients(params, world: int) -> None:
    """What DDP does after backward: each gradient becomes the mean over processes."""
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def broadcast_parameters(module: torch.nn.Module) -> None:
    if dist.is_initialized():
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def mean_over_ranks(values: dict) -> dict:
    if not dist.is_initialized():
        return values
    keys = sorted(k for k, v in values.items() if isinstance(v, float))
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return values | {k: float(v) for k, v in zip(keys, t.tolist())}
