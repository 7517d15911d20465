"""The one training loop every recipe runs (reward models and the generator alike).

``TrainLoop.fit``: resume from the newest complete checkpoint, evaluate at the start, then per step
``train_step`` -> learning-rate scheduler step -> metrics averaged over ranks (``lr``: the rate the step trained
with) -> evaluation every ``eval_every``
steps -> log / progress bar -> atomic DCP checkpoint every ``save_every`` steps -> the stop helper (simulated kills
in tests); at the end evaluate, export (a trained reward model as a Hugging Face folder) and report.

Evaluation is sharded here too: each rank runs ``evaluate_shard`` on its contiguous part of ``self.eval_set``
(padded to equal length, so that sharded models make the same calls on every rank), the parts are gathered in order
and every rank computes ``eval_metrics`` from the whole.

Subclasses build their modules in ``__init__`` (``self.rt.prepare``), set ``self.eval_set``, call
``setup_optimizer`` and implement ``train_step``, ``evaluate_shard``, ``eval_metrics`` and ``report``; a config value
they resolve while building goes through ``config_resolved``, and what they keep for the report beyond ``results``
through ``recipe_state`` / ``load_recipe_state`` (checkpointed with the run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from zrcore.seeding import seed_everything
from zrcore.sharding import padded_shard
from zrcore.training.checkpoint import load_checkpoint, save_checkpoint, stop_if_requested
from zrcore.training.config import save_config
from zrcore.training.distributed import Runtime
from zrcore.training.metrics_log import MetricsLog, Progress
from zrcore.training.optim import build_optimizer
from zrcore.training.run_dir import prepare_run_dir, record_resolved

log = logging.getLogger("zrcore")


def lr_lambda(cfg):
    warm = max(1, cfg.warmup_steps)
    if cfg.lr_schedule == "constant":
        return lambda s: min(1.0, (s + 1) / warm)
    return lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps))))


class TrainLoop:
    name = "train"

    def __init__(self, cfg):
        self.cfg = cfg
        self.rt = Runtime.from_config(cfg)
        self.main = self.rt.main
        seed_everything(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.run_action = prepare_run_dir(cfg, self.main)  # refuses a rerun with other settings, unless told
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.log = MetricsLog(self.out, enabled=self.main, report_to=cfg.report_to,
                              config=dataclasses.asdict(cfg))
        self.step = 0
        self.results: dict = {}
        self.extra_tensors: dict = {}

    # ---- set by subclasses -------------------------------------------------------------------------------------
    def setup_optimizer(self, module: torch.nn.Module, net) -> None:
        """``module``: the trained module (after sharding); ``net``: what its gradient-carrying calls go through."""
        self.module, self.net = module, net
        self.params = [p for p in module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        self.opt = build_optimizer(self.params, getattr(self.cfg, "optimizer", "adamw"),
                                   getattr(self.cfg, "master_dtype", "fp32"), lr=self.cfg.lr,
                                   weight_decay=self.cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.cfg))
        # fp16 autocast needs loss scaling (bf16 and fp32 do not; fsdp with fp16 is refused by the Runtime)
        fp16 = self.rt.dtype == torch.float16 and self.rt.mode != "fsdp"
        self.scaler = torch.amp.GradScaler(self.rt.device.type) if fp16 else None

    def recipe_state(self) -> dict:
        """JSON-able state of the recipe that a checkpoint keeps beside ``results`` (e.g. sampled traces for the
        report), so that a resumed run reports what an uninterrupted one does."""
        return {}

    def load_recipe_state(self, state: dict) -> None:
        """Restores what ``recipe_state`` returned (a checkpoint without it gives {})."""

    def config_resolved(self, given: dict) -> None:
        """After ``__init__`` has resolved config values (``given``: flat field -> the value as given, e.g.
        {"sampling.max_reasoning_tokens": 0}): config.yaml, the run-dir record and the metrics log's config show the
        resolved values; the record keeps the given ones, so that the same command still resumes."""
        if self.main:
            save_config(self.cfg, self.out / "config.yaml")
            record_resolved(self.cfg, given)
        self.log.config = dataclasses.asdict(self.cfg)

    def frozen_state(self) -> dict:
        """name -> frozen module whose parameters a checkpoint keeps (they can change, e.g. a reset reference)."""
        return {}

    def train_step(self, step: int) -> dict:
        """One optimisation step (``optimizer_step``); returns the step's metrics. The loop steps the scheduler."""
        raise NotImplementedError

    def evaluate_shard(self, items: list, indices: list[int]) -> dict:
        """Results for this rank's evaluation items (``indices``: their places in ``self.eval_set``), run without
        gradients with the trained module in eval mode: a dict of columns, each a CPU tensor or a list with one
        entry per item."""
        raise NotImplementedError

    def eval_metrics(self, name: str, columns: dict) -> dict:
        """The evaluation's results from the gathered columns of the whole ``eval_set`` (every rank)."""
        raise NotImplementedError

    def log_row(self, result: dict) -> dict:
        """An evaluation result flattened into the metrics log."""
        return {f"eval/{k}": v for k, v in result.items()}

    def export(self) -> None:
        """A trained reward model as a Hugging Face folder in output_dir/model (collective under FSDP2)."""
        from zrcore.models import RewardModel
        from zrcore.training.checkpoint import export_reward_model

        if isinstance(self.module, RewardModel):
            export_reward_model(self.module, self.out / "model", self.rt)

    def report(self) -> None:
        pass

    # ---- shared pieces -----------------------------------------------------------------------------------------
    def accumulating(self, last: bool):
        """Context of a micro-batch's backward: under ddp the gradient all-reduce waits for the last micro-batch
        (``no_sync``); FSDP2 reduce-scatters each micro-batch's gradient into the sharded gradient, which keeps
        no unsharded gradient alive between micro-batches."""
        if last or not hasattr(self.net, "no_sync"):
            return contextlib.nullcontext()
        return self.net.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of ``loss`` (DDP / FSDP average it over ranks); under fp16 autocast the loss is
        scaled (``torch.amp.GradScaler``)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimizer_step(self, loss: torch.Tensor | None = None) -> dict:
        """backward of ``loss`` (None: the gradients already accumulated by ``backward``), unscale under fp16,
        clip, optimizer step, then the gradients freed (``set_to_none``), so that none lives through the next
        rollout or reference forward."""
        if loss is not None:
            self.backward(loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm)}

    def save(self) -> None:
        meta = {"step": self.step, "scheduler": self.sched.state_dict(), "results": self.results,
                "grad_scaler": None if self.scaler is None else self.scaler.state_dict(),
                "recipe": self.recipe_state()}
        save_checkpoint(self.out, self.rt, self.module, self.opt, meta, self.frozen_state(), self.extra_tensors)

    def maybe_resume(self) -> bool:
        meta = load_checkpoint(self.out, self.rt, self.module, self.opt, self.frozen_state())
        if meta is None:
            return False
        self.sched.load_state_dict(meta["scheduler"])
        if self.cfg.resume:  # resumed with new settings on purpose: the new ones apply from here on
            self.sched.base_lrs = [self.cfg.lr for _ in self.sched.base_lrs]
            for group, fn in zip(self.opt.param_groups, self.sched.lr_lambdas):
                group["weight_decay"] = self.cfg.weight_decay
                group["lr"] = self.cfg.lr * fn(self.sched.last_epoch)  # the new schedule at the resumed step
        self.step = meta["step"]
        self.results = meta.get("results", {})
        self.load_recipe_state(meta.get("recipe") or {})
        self.extra_tensors = meta.get("extra_tensors", {})
        if self.scaler is not None and meta.get("grad_scaler"):
            self.scaler.load_state_dict(meta["grad_scaler"])
        self.log.truncate_after(self.step)
        if self.main:
            log.info(f"resumed from {meta['path']} at step {self.step} (saved by {meta['world_size']} processes, "
                  f"now {self.rt.world})")
        return True

    def current_lr(self) -> float:
        """The learning rate the optimizer's first parameter group steps with now."""
        return float(self.opt.param_groups[0]["lr"])

    def evaluate(self, name: str) -> dict:
        """``evaluate_shard`` on this rank's padded part of ``eval_set``, gathered; ``eval_metrics`` of the whole
        (collective: every rank calls it)."""
        items = self.eval_set
        idx, kept = padded_shard(len(items), self.rt.rank, self.rt.world)
        was = self.module.training
        self.module.eval()
        with torch.no_grad():
            local = self.evaluate_shard([items[i] for i in idx], idx)
        self.module.train(was)
        parts = self.rt.gather({k: v[:kept] for k, v in local.items()})
        columns = {k: torch.cat([p[k] for p in parts]) if isinstance(local[k], torch.Tensor)
                   else [x for p in parts for x in p[k]] for k in local}
        return self.eval_metrics(name, columns)

    def eval_due(self, step: int) -> bool:
        """Evaluate after ``step`` steps: every ``eval_every`` (0 = only at the start and the end)."""
        every = self.cfg.eval_every
        return bool(every) and step % every == 0 and step < self.cfg.steps

    def _evaluate_logged(self, name: str) -> None:
        if name not in self.results:
            self.results[name] = self.evaluate(name)
            self.log.write({"step": self.step, **self.log_row(self.results[name])})

    def fit(self) -> dict:
        cfg = self.cfg
        self.maybe_resume()
        if getattr(cfg, "eval_start", True):
            self._evaluate_logged("start")
        bar = Progress(cfg.steps, self.step, enabled=cfg.progress and self.main, desc=self.name)
        t0 = time.time()
        cuda = self.rt.device.type == "cuda"
        while self.step < cfg.steps:
            t_step = time.perf_counter()
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.rt.device)
            lr = self.current_lr()  # the rate this step trains with (the scheduler then sets the next one)
            metrics = self.train_step(self.step)
            self.sched.step()
            if cuda:
                torch.cuda.synchronize(self.rt.device)
                metrics["mem/peak_gib"] = torch.cuda.max_memory_allocated(self.rt.device) / 2**30
            metrics["time/step"] = time.perf_counter() - t_step
            self.step += 1
            metrics = self.rt.mean_over_ranks(metrics | {"lr": lr})
            if self.eval_due(self.step):
                metrics |= self.log_row(self.evaluate(f"step{self.step}"))
            if self.step % cfg.log_every == 0:
                self.log.write({"step": self.step, "time": time.time() - t0, **metrics})
            bar.update(metrics)
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
            stop_if_requested(self.step, cfg.steps, bar.close)
        bar.close()
        if "final" not in self.results:
            self._evaluate_logged("final")
            self.save()
        self.log.close()
        self.export()
        if self.main:
            self.report()
        self.rt.teardown()
        return self.results
