"""Run under torchrun (gloo): a GDSO trainer under fsdp whose ranks other than 0 build the model empty and receive
their shards from rank 0. Writes, from rank 0, JSON with each rank's count of parameters that were on the meta
device right after building, and whether the gathered policy and reference equal the seeded one-process build."""

import json
import sys

import torch
import torch.distributed as dist

from tests.training.runs import GDSO_TINY
from zrcore.models import build_tiny_reward_model, loading
from zrcore.training.config import GDSOTeacherConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer

out, workdir = sys.argv[1], sys.argv[2]
built_meta = []
real_load = loading.load_reward_model


def recording_load(*args, **kwargs):
    rm = real_load(*args, **kwargs)
    built_meta.append(sum(p.is_meta for p in rm.parameters()))
    return rm


loading.load_reward_model = recording_load
import zrcore.training.trainer as trainer_module  # noqa: E402

trainer_module.load_reward_model = recording_load
cfg = parse_config(GDSOTeacherConfig, GDSO_TINY + ["--distributed", "fsdp", "--beta", "0.1", "--output_dir", workdir])
trainer = GDSOTeacherTrainer(cfg)
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: E402

opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
policy = get_model_state_dict(trainer.rm, options=opts)
ref = get_model_state_dict(trainer.ref, options=opts)
counts = [None] * dist.get_world_size()
dist.all_gather_object(counts, built_meta)
if dist.get_rank() == 0:
    want = build_tiny_reward_model(cfg.arch, cfg.preset, seed=cfg.seed).state_dict()
    same = lambda got: got.keys() == want.keys() and all(torch.equal(got[k].float(), want[k].float()) for k in want)  # noqa: E731
    buffers = {n: b for n, b in trainer.rm.named_buffers()}
    json.dump({"meta_params_at_build": counts, "policy_equal": same(policy), "reference_equal": same(ref),
               "n_params": len(want), "buffers_finite": all(bool(torch.isfinite(b.float()).all()) for b in buffers.values())},
              open(out, "w"))
dist.barrier()
dist.destroy_process_group()
