"""Splitting work over processes: contiguous shards, padded evaluation shards, the blocks FSDP2 shards one by one,
and the small collectives that rollouts and evaluation need. Used by models (sharded generation) and training alike.

Every rank holds a contiguous part of n items; sizes differ by at most one (``shard_bounds``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def comm_device() -> torch.device:
    """Where collective inputs live: the current CUDA device under nccl, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def max_over_ranks(n: int) -> int:
    """The largest ``n`` over all ranks."""
    t = torch.tensor([n], dtype=torch.long, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous part of n items; sizes differ by at most one (the first n % world ranks
    hold one more)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (rank < extra)


def shard(items: list, rank: int, world: int, what: str = "batch") -> list:
    """This rank's contiguous part of ``items`` (``shard_bounds``); every rank must hold at least one item."""
    if len(items) < world:
        raise ValueError(f"{what}: {len(items)} items cannot give each of {world} processes at least one; "
                         f"make it >= {world}")
    start, stop = shard_bounds(len(items), rank, world)
    return items[start:stop]


def padded_shard(n: int, rank: int, world: int) -> tuple[list[int], int]:
    """(indices, kept) for evaluation: this rank's part of range(n), padded by repeating its last index (or index 0
    when it has none) up to ceil(n / world) entries so that every rank makes the same number of forward calls; only
    the first ``kept`` results are real."""
    start, stop = shard_bounds(n, rank, world)
    idx = list(range(start, stop))
    width = -(-n // world)
    fill = idx[-1] if idx else 0
    return idx + [fill] * (width - len(idx)), len(idx)


def block_units(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a model, the units FSDP2 shards one by one: the members of its ModuleLists that hold
    parameters (decoder layers, vision blocks, transformer blocks), outermost lists only."""
    units: list[torch.nn.Module] = []
    inside: set[int] = set()
    for _, child in module.named_modules():
        if id(child) in inside or not isinstance(child, torch.nn.ModuleList):
            continue
        for block in child:
            if any(True for _ in block.parameters()):
                units.append(block)
                inside.update(id(m) for m in block.modules())
    return units


def reshards_after_forward(module) -> bool:
    """Whether an FSDP2 module frees its gathered parameters after each forward (its ``reshard_after_forward``
    as set by ``fully_shard`` or ``set_reshard_after_forward``), so that it can be set back after a change."""
    groups = module._get_fsdp_state()._fsdp_param_groups
    return any(group.post_forward_mesh_info is not None for group in groups)
