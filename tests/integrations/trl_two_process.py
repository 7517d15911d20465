"""Run by test_trl_gdso.py under torchrun: two GDSO steps on 2 processes; each rank writes the prompt ids it sampled."""

import json
import os
import sys

import torch.distributed
from datasets import Dataset

from zrcore.data import SyntheticRubric
from zrcore.integrations.trl import GDSOConfig, GDSOTrainer
from zrcore.models import build_tiny_reward_model

rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
recs = SyntheticRubric(seed=0, image_size=56).records(4, 2, ("realism",))
ds = Dataset.from_dict({"prompt": [r.prompt for r in recs], "image": [r.image for r in recs], "score": [r.score for r in recs],
                        "dimension": [r.dimension for r in recs], "prompt_id": [r.prompt_id for r in recs]})
args = GDSOConfig(output_dir=sys.argv[1], per_device_train_batch_size=4, num_generations=2, num_candidates=2,
                  max_completion_length=4, max_steps=2, learning_rate=1e-3, use_cpu=True, report_to=[], logging_steps=1,
                  loss_type="grpo", save_strategy="no", disable_tqdm=True, bf16=False)
tr = GDSOTrainer(rm, args=args, train_dataset=ds)
seen = []
orig = tr._generate_and_score_completions
def spy(inputs):
    seen.append([r["prompt_id"] for r in inputs])
    return orig(inputs)
tr._generate_and_score_completions = spy
tr.train()
out = {"seen": seen, "losses": [h.get("loss") for h in tr.state.log_history if "loss" in h]}
with open(f"{sys.argv[1]}/rank{tr.accelerator.process_index}.json", "w") as fh:  # one file per rank: no interleaving
    json.dump(out, fh)
# Leave without interpreter finalization. Torch's gloo worker threads can still hold the last collective's tensors when
# the script ends (DDP keeps the process group alive past destroy_process_group), and freeing them during finalization
# aborts the process ("terminate called without an active exception") after everything above has run and been written.
tr.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
