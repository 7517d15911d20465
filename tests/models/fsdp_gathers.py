"""Run under torchrun (gloo, CPU): the all-gathers FSDP2 starts during one ``judge`` call of a tiny teacher sharded
as the trainer shards it, for two trace lengths, with and without ``unshard_once``. Writes JSON to argv[1] on rank 0:
{"<unshard_once>/<tokens>": {"gathers": n, "unshard_calls": m, "traces": [...]}} and whether every unit is
sharded again afterwards with its reshard-after-forward setting restored."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard import _fsdp_param_group as group_module

from zrcore.models import RewardModel, build_tiny_reward_model
from zrcore.sharding import reshards_after_forward
from zrcore.training.distributed import Runtime


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rt = Runtime("fsdp", dist.get_rank(), dist.get_world_size(), torch.device("cpu"), torch.float32)
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
    rm.suppressed_ids = sorted(set(rm.suppressed_ids) | {rm.end_of_turn_id})  # every trace runs to the cap
    rm = rt.prepare(rm, rm.shard_units(), methods=RewardModel.fsdp_methods)
    counts = {"gathers": 0, "unshard_calls": 0}
    gather, unshard = group_module.foreach_all_gather, group_module.FSDPParamGroup.unshard

    def counted_gather(*args, **kwargs):
        counts["gathers"] += 1
        return gather(*args, **kwargs)

    def counted_unshard(self, *args, **kwargs):
        counts["unshard_calls"] += 1
        return unshard(self, *args, **kwargs)

    group_module.foreach_all_gather = counted_gather
    group_module.FSDPParamGroup.unshard = counted_unshard
    units = [m for m in rm.modules() if isinstance(m, FSDPModule)]
    from PIL import Image

    image = Image.new("RGB", (56, 56), (200, 30, 30))
    with torch.no_grad():  # FSDP2's lazy initialisation (the root keeps its parameters after it, as in training)
        rm.judge(["a red square"], [image], "realism", num_samples=1, max_reasoning_tokens=1, seeds=[0])
    before = [reshards_after_forward(m) for m in units]
    result: dict = {"units": len(units), "reshard_after_forward": before}
    for once in (True, False):
        for tokens in (4, 12):
            counts.update(gathers=0, unshard_calls=0)
            with torch.no_grad():
                j = rm.judge(["a red square"] * 2, [image] * 2, "realism", num_samples=2, max_reasoning_tokens=tokens,
                             seeds=range(4), unshard_once=once)
            result[f"{once}/{tokens}"] = dict(counts, traces=[r.tolist() for r in j.reasoning_ids])
    result["restored"] = [reshards_after_forward(m) for m in units] == before
    result["sharded_after"] = all(not m._get_fsdp_state()._fsdp_param_groups[0].is_unsharded
                                  for m in units if m is not rm)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
