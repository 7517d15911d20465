"""The loop every recipe shares: setup, resume, steps with progress / logging / atomic checkpoints, evaluation
at the start and the end (table, JSON, plots). Recipes subclass it and implement ``train_step``."""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import torch

from zrcore.data.records import batch_groups
from zrcore.training import distributed as D
from zrcore.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, save_model_atomic, set_rng_state, stop_if_requested
from zrcore.training.config import save_config
from zrcore.training.data import build_data
from zrcore.training.evaluate import evaluate_model, format_table
from zrcore.training.logging import MetricsLog, Progress, plot_curves


def build_reward_model(cfg):
    from zrcore.models import RewardModel, build_tiny_reward_model

    if cfg.init_from:
        return RewardModel.from_pretrained(cfg.init_from)
    return build_tiny_reward_model(cfg.arch, cfg.preset, seed=cfg.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, item: int) -> int:
    """A seed per (run, step, global item), so that sampling does not depend on how items are spread over processes."""
    return (seed * 1_000_003 + step * 10_007 + item) % (2**62)


class Trainer:
    eval_mode = "student"  # or "teacher" (reasoning sampled at evaluation)

    def __init__(self, cfg):
        self.cfg = cfg
        self.rank, self.world = D.setup(cfg.distributed)
        self.main = self.rank == 0
        seed_everything(cfg.seed)
        self.out = Path(cfg.output_dir)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.rm = build_reward_model(cfg)
        self.rm.model.train()
        D.broadcast_parameters(self.rm.model)
        self.train_groups, self.eval_records = build_data(cfg)
        if not self.train_groups:
            raise ValueError(f"no training groups with at least 2 candidates in data {cfg.data!r}")
        self.params = [p for p in self.rm.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, cfg.warmup_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps)))))
        self.log = MetricsLog(self.out, enabled=self.main)
        self.step = 0
        self.results: dict = {}
        self.extra_state: dict = {}

    # ---- hooks for recipes ---------------------------------------------------------------------------------------
    def train_step(self, groups: list, step: int) -> dict:
        raise NotImplementedError

    def state_dict_extra(self) -> dict:
        return {}

    def load_state_extra(self, state: dict) -> None:
        pass

    def eval_kwargs(self) -> dict:
        return {}

    # ---- data --------------------------------------------------------------------------------------------------
    def batch_for(self, step: int) -> list:
        """The global batch of groups for a step: a pure function of (seed, step), so resume is exact."""
        cfg = self.cfg
        eligible = sum(len(g.records) >= cfg.candidates for g in self.train_groups)
        per_epoch = eligible // cfg.prompts_per_step  # the number of batches batch_groups yields per epoch
        if per_epoch == 0:
            raise ValueError(f"{eligible} training groups have {cfg.candidates} candidates: not enough for "
                             f"{cfg.prompts_per_step} prompts per step")
        epoch, pos = divmod(step, per_epoch)
        return list(batch_groups(self.train_groups, cfg.prompts_per_step, cfg.candidates, cfg.seed, epoch))[pos]

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def save(self) -> None:
        if not self.main:
            return
        state = {"step": self.step, "model": self.rm.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "rng": rng_state(), "results": self.results,
                 "extra": self.state_dict_extra()}
        save_checkpoint(self.out, state)

    def maybe_resume(self) -> bool:
        state = load_checkpoint(self.out)
        if state is None:
            return False
        self.rm.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.results = state.get("results", {})
        self.load_state_extra(state.get("extra", {}))
        self.log.truncate_after(self.step)
        if self.main:
            print(f"resumed from {self.out / 'checkpoint.pt'} at step {self.step}", flush=True)
        return True

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, name: str) -> dict:
        was = self.rm.model.training
        self.rm.model.eval()
        res = evaluate_model(self.rm, self.eval_records, mode=self.eval_mode, seed=self.cfg.seed, **self.eval_kwargs())
        self.rm.model.train(was)
        pred = res.pop("_pred")
        if self.main:
            rows = [{"prompt": r.prompt, "dimension": r.dimension, "score": r.score, "prompt_id": r.prompt_id,
                     "probs": p, "tokens": t}
                    for r, p, t in zip(self.eval_records, pred["probs"].tolist(), pred["tokens"].tolist())]
            (self.out / f"eval_{name}.json").write_text(json.dumps({"metrics": res, "predictions": rows}))
        return res

    # ---- loop --------------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        self.maybe_resume()
        if "start" not in self.results:
            self.results["start"] = self.evaluate("start")
            self.log.write({"step": 0, **{f"eval/{k}": v for k, v in self.results["start"]["all"].items()}})
        bar = Progress(cfg.steps, self.step, enabled=cfg.progress and self.main, desc=type(self).__name__)
        t0 = time.time()
        while self.step < cfg.steps:
            groups = self.batch_for(self.step)
            metrics = self.train_step(groups, self.step)
            self.step += 1
            metrics = D.mean_over_ranks(metrics | {"lr": self.sched.get_last_lr()[0]})
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                ev = self.evaluate(f"step{self.step}")
                metrics |= {f"eval/{k}": v for k, v in ev["all"].items()}
            if self.step % cfg.log_every == 0:
                self.log.write({"step": self.step, "time": time.time() - t0, **metrics})
            bar.update(metrics)
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
            stop_if_requested(self.step, cfg.steps, bar.close)
        bar.close()
        if "final" not in self.results:
            self.results["final"] = self.evaluate("final")
            self.log.write({"step": self.step, **{f"eval/{k}": v for k, v in self.results["final"]["all"].items()}})
            self.save()
        if self.main:
            save_model_atomic(self.rm, self.out / "model")
            self.report()
        D.teardown()
        return self.results

    def report(self) -> None:
        table = format_table({"start (zero-shot)": self.results["start"], "trained": self.results["final"]})
        (self.out / "results.md").write_text(table + "\n")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
        try:
            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", title=type(self).__name__)
        except Exception as err:  # a plot must never lose a finished run
            print(f"plotting failed: {err}")
        print(table, flush=True)


def clone_frozen(module: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(module)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()
