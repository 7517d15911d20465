"""TrainLoop owns the loop: a subclass writes train_step, evaluate_shard and eval_metrics; the loop steps the
scheduler, evaluates every eval_every steps on the gathered shards, checkpoints and exports."""

from __future__ import annotations

import json

import torch

from zrcore.training.config import RunConfig
from zrcore.training.loop import TrainLoop, lr_lambda


class ToyLoop(TrainLoop):
    name = "toy"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.eval_set = [float(i) for i in range(5)]
        self.shards: list = []
        model = torch.nn.Linear(2, 1)
        self.setup_optimizer(model, model)

    def train_step(self, step: int) -> dict:
        loss = self.net(torch.ones(1, 2)).pow(2).sum()
        return {"loss": float(loss.detach())} | self.optimizer_step(loss)

    def evaluate_shard(self, items: list, indices: list[int]) -> dict:
        assert not self.module.training and not torch.is_grad_enabled()
        self.shards.append(indices)
        return {"x": torch.tensor(items), "names": [f"item{i}" for i in indices]}

    def eval_metrics(self, name: str, columns: dict) -> dict:
        return {"sum": float(columns["x"].sum()), "n": len(columns["names"])}


def test_the_loop_steps_the_scheduler_and_evaluates_every_eval_every(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path), steps=6, eval_every=2, warmup_steps=2, progress=False, save_every=3)
    loop = ToyLoop(cfg)
    results = loop.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    schedule = lr_lambda(cfg)
    assert lrs == [cfg.lr * schedule(s) for s in range(6)]  # each step's own rate, one scheduler step per step
    evals = [r["step"] for r in rows if "eval/sum" in r]
    assert evals == [0, 2, 4, 6]  # start, every 2 steps, the end (step 6 is the final evaluation)
    assert results["final"] == {"sum": 10.0, "n": 5}
    assert loop.shards[0] == [0, 1, 2, 3, 4]  # one process: the whole set, in order
    assert (tmp_path / "checkpoint").exists() and not (tmp_path / "model").exists()  # no reward model to export
