"""Processes, devices and precision, on torch's own engine.

``Runtime.from_config(cfg)`` reads the config fields ``device``, ``dtype`` and ``distributed``:

- ``distributed="none"``: one process; ``"ddp"``: ``DistributedDataParallel``; ``"fsdp"``: FSDP2 ``fully_shard`` per
  decoder layer / vision block / transformer block, the model itself as the root. Both need torchrun's variables;
  the process group is gloo on CPU and nccl on CUDA.
- ``device="auto"``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
- ``dtype``: under fsdp a ``MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=fp32)``; otherwise fp32 master
  weights and ``torch.autocast`` to ``dtype`` around the forward passes.

The batch of a step is split over ranks in contiguous, possibly uneven shards (``shard``). Each rank scales its loss
by ``share`` = world * local units / global units, so that the gradient average DDP and FSDP take equals the
gradient of the global batch's loss, whatever the split.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from zrcore.sharding import block_units, comm_device, max_over_ranks, padded_shard, shard, shard_bounds

__all__ = ["DISTRIBUTED_MODES", "DTYPES", "Runtime", "block_units", "check_fields", "comm_device", "max_over_ranks",
           "padded_shard", "resolve_device", "shard", "shard_bounds"]

DISTRIBUTED_MODES = ("none", "ddp", "fsdp")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda:LOCAL_RANK when CUDA is available, else cpu; "cuda" -> cuda:LOCAL_RANK."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device: {device!r} is not a device ('auto', 'cpu', 'cuda' or 'cuda:N')") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asks for CUDA, but torch.cuda.is_available() is False")
        return torch.device("cuda", local if dev.index is None else dev.index)
    if dev.type != "cpu":
        raise ValueError(f"device: {device!r} is not supported (use 'auto', 'cpu' or 'cuda[:N]')")
    return dev


def frozen_dtype(cfg) -> torch.dtype | None:
    """The dtype of a run's frozen models (``ref_dtype``): None for "auto" (the compute dtype ``dtype``)."""
    choice = getattr(cfg, "ref_dtype", "auto")
    return None if choice == "auto" else DTYPES[choice]


def check_fields(distributed: str, dtype: str) -> None:
    if distributed not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {list(DISTRIBUTED_MODES)}, got {distributed!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "fp16" and distributed == "fsdp":
        raise ValueError("dtype='fp16' with distributed='fsdp' would need a sharded gradient scaler: use dtype='bf16' "
                         "(or fp16 with ddp / none, where a GradScaler scales the loss)")


@dataclass
class Runtime:
    mode: str
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    cpu_offload: bool = False
    frozen_dtype: torch.dtype | None = None  # frozen models' weights (None: the compute dtype)
    frozen_offload: bool = False  # fsdp: frozen models' shards on the CPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_config(cls, cfg) -> Runtime:
        check_fields(cfg.distributed, cfg.dtype)
        world_env = int(os.environ.get("WORLD_SIZE", "1"))
        if cfg.distributed == "none":
            if world_env > 1:
                raise ValueError(f"distributed='none' but torchrun started {world_env} processes: "
                                 "pass --distributed ddp or --distributed fsdp")
            return cls("none", 0, 1, resolve_device(cfg.device), DTYPES[cfg.dtype], False, frozen_dtype(cfg))
        missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ValueError(f"distributed={cfg.distributed!r} needs torchrun's environment (missing {missing}): "
                             f"launch with torchrun --nproc_per_node N, or use distributed='none'")
        device = resolve_device(cfg.device)
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(cfg.distributed, dist.get_rank(), dist.get_world_size(), device, DTYPES[cfg.dtype],
                   getattr(cfg, "fsdp_cpu_offload", False), frozen_dtype(cfg), getattr(cfg, "ref_offload", False))

    # ---- precision ----------------------------------------------------------------------------------------------
    def autocast(self):
        """Autocast to the compute dtype outside fsdp (fsdp casts parameters itself); a no-op for fp32."""
        if self.dtype == torch.float32 or self.mode == "fsdp":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- models -------------------------------------------------------------------------------------------------
    def prepare(self, module: torch.nn.Module, units: list[torch.nn.Module], trainable: bool = True,
                methods: tuple[str, ...] = ()):
        """Place ``module`` on the device and wrap it for the mode. Returns the callable whose forward carries
        gradients between ranks: DDP(module) under ddp, ``module`` itself otherwise (fully_shard works in place).
        ``units``: the sub-modules FSDP2 shards one by one; ``methods``: entry points other than forward that
        FSDP2 must gather parameters for. A frozen module (``trainable=False``) is cast to ``frozen_dtype`` (16-bit
        by default in a 16-bit run: it is only ever read in the compute dtype), put in eval mode without gradients
        and, under ddp, left unwrapped (a replica per rank, no gradient sync).

        Under fsdp the module is not moved to the device first: ``fully_shard`` moves each unit's parameters there
        as it shards them, so no rank ever holds more than one unsharded unit on the device."""
        if not trainable:
            module.requires_grad_(False)
            module.eval()
            module.to(self.frozen_dtype or self.dtype)
        if self.mode != "fsdp":
            module.to(self.device)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

            kw = {"mp_policy": MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)}
            if self.cpu_offload if trainable else self.frozen_offload:
                kw["offload_policy"] = CPUOffloadPolicy()
            for unit in units:
                fully_shard(unit, **kw)
            # the root keeps its parameters gathered after forward for the backward that follows; a frozen module
            # has no backward, so it reshards at once (otherwise every rank would keep the root's full parameters)
            fully_shard(module, **kw, **({} if trainable else {"reshard_after_forward": True}))
            for name in methods:
                register_fsdp_forward_method(module, name)
            return module
        if self.mode == "ddp" and trainable:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
        return module

    def load_full_state(self, module: torch.nn.Module, state: dict, offload: bool = False) -> None:
        """Fill a module that ``prepare`` sharded with rank 0's full ``state`` (a ``state_dict`` of the unsharded
        module on rank 0; empty elsewhere): ranks other than 0 built it empty (parameters on the meta device,
        ``load_reward_model(..., empty=True)``), so no rank but 0 ever holds the whole model, and rank 0 only on
        the CPU. torch's ``set_model_state_dict(full_state_dict=True, broadcast_from_rank0=True)`` sends each
        rank its shards. ``offload``: the module's shards live on the CPU (``CPUOffloadPolicy``)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if not self.main:
            buffers = {name: b.detach().clone() for name, b in module.named_buffers()}  # computed, not loaded
            module.to_empty(device=torch.device("cpu") if offload else self.device)
            with torch.no_grad():
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
        # (a copy: torch replaces the values of the dict it is given with the loaded shards)
        set_model_state_dict(module, dict(state), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))

    # ---- data ---------------------------------------------------------------------------------------------------
    def shard(self, items: list, what: str = "batch_size") -> tuple[list, int]:
        """(this rank's contiguous part of ``items``, the global index of its first item)."""
        return shard(items, self.rank, self.world, what), shard_bounds(len(items), self.rank, self.world)[0]

    def global_sum(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=comm_device())
        dist.all_reduce(t)
        return float(t.item())

    def share(self, local_units: float, term: str = "") -> float:
        """world * local / global: the factor that makes the mean over ranks of per-rank mean losses equal the
        global batch's mean loss when ranks hold different numbers of units (``term``: which loss term, unused)."""
        total = self.global_sum(local_units)
        return self.world * float(local_units) / total if total else 0.0

    def mean_over_ranks(self, values: dict) -> dict:
        if self.world == 1:
            return values
        keys = sorted(k for k, v in values.items() if isinstance(v, float))
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=comm_device())
        dist.all_reduce(t)
        t /= self.world
        return values | {k: float(v) for k, v in zip(keys, t.tolist())}

    def gather(self, obj):
        """Every rank's ``obj``, in rank order (objects, e.g. per-rank prediction lists)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def teardown(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
