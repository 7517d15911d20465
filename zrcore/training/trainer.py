"""The reward-model trainer every reward recipe subclasses: the model placed, wrapped (DDP / FSDP2) and optimised by
the shared loop, data split over ranks, evaluation split over ranks and gathered, the final model exported as a
Hugging Face folder. Recipes implement ``train_step`` and, for frozen models, ``frozen_models``."""

from __future__ import annotations

import json
import logging

import torch

from zrcore.data.records import batch_groups
from zrcore.models.loading import load_reward_model
from zrcore.seeding import seed_everything
from zrcore.training.evaluate import ceiling_metrics, format_table, predict, score_metrics
from zrcore.training.loop import TrainLoop
from zrcore.training.metrics_log import plot_curves
from zrcore.training.model_setup import configure_reward_model
from zrcore.training.pretrain import pretrained_model

log = logging.getLogger("zrcore")


def build_reward_model(cfg, path: str = "", device: torch.device | None = None, trainable: bool = True,
                       empty: bool = False):
    """The RewardModel of a reward config on the CPU: ``path`` (or cfg.init_from) when given ("pretrained": the
    cached pretrained tiny model, built on first use), else a tiny random-init one of cfg.arch / cfg.preset,
    configured (``configure_reward_model``: a trained model in ``master_dtype``, a frozen one as loaded, fp32).
    ``empty``: parameters on the meta device (``load_reward_model``), to be filled from rank 0 after sharding."""
    path = path or cfg.init_from
    if path == "pretrained":
        path = pretrained_model(cfg)
    rm = load_reward_model(path, cfg.seed, cfg.arch, cfg.preset, empty=empty)
    return configure_reward_model(rm, cfg, device or torch.device("cpu"), trainable)


class Trainer(TrainLoop):
    """``Trainer(cfg, model=None, data=None)``: ``model`` a RewardModel to train instead of the configured one,
    ``data`` (training groups, evaluation records) instead of ``build_data(cfg)``."""

    eval_mode = "student"  # or "teacher" (reasoning sampled at evaluation)
    copies_of_trained: tuple[str, ...] = ()  # frozen models that ``frozen_models`` copies from the trained one

    def __init__(self, cfg, model=None, data=None):
        super().__init__(cfg)
        self.name = type(self).__name__
        # under fsdp over several processes only rank 0 builds the weights (on the CPU); the others build empty and
        # receive their shards after sharding, so no rank holds the whole model on its device
        sharded_start = model is None and self.rt.mode == "fsdp" and self.rt.world > 1
        # a model passed in is configured like a built one (attention, master dtype, checkpointing)
        rm = configure_reward_model(model, cfg, self.rt.device) if model is not None else \
            build_reward_model(cfg, device=self.rt.device, empty=sharded_start and not self.main)
        start_state = rm.state_dict() if sharded_start and self.main else {}
        if cfg.sampling.max_reasoning_tokens == 0:
            from zrcore.data.captions import description_token_limit

            cfg.sampling.max_reasoning_tokens = description_token_limit(rm.tokenizer)
            self.config_resolved({"sampling.max_reasoning_tokens": 0})
        if self.eval_mode == "teacher":
            rm.sampling = {k: v for k, v in self.eval_kwargs().items() if k != "rollout_batch_size"}
        if data is None:
            from zrcore.training.datasets import build_data

            data = build_data(cfg)
        self.train_groups, self.eval_set = data
        self.traces: dict = {}  # evaluation name -> two sampled reasoning traces (teacher mode, main rank)
        if not self.train_groups:
            raise ValueError(f"no training groups with at least 2 candidates in data {cfg.data!r}")
        frozen = self.frozen_models(rm)  # before sharding: copies of the unsharded model
        rm.train()
        net = self.rt.prepare(rm, rm.shard_units(), methods=rm.fsdp_methods)
        self.rm = rm
        self.frozen = {name: self.rt.prepare(m, m.shard_units(), trainable=False, methods=m.fsdp_methods)
                       for name, m in frozen.items()}
        if sharded_start:
            self.rt.load_full_state(rm, start_state, offload=self.rt.cpu_offload)
            for name in self.copies_of_trained:  # frozen copies of the start (the GDSO reference)
                if name in self.frozen:
                    self.rt.load_full_state(self.frozen[name], start_state, offload=self.rt.frozen_offload)
            del start_state
        seed_everything(cfg.seed)
        self.setup_optimizer(rm, net)

    # ---- hooks for recipes ---------------------------------------------------------------------------------------
    def frozen_models(self, rm) -> dict:
        """name -> RewardModel kept frozen (reference policy, teacher), built before ``rm`` is sharded."""
        return {}

    def eval_kwargs(self) -> dict:
        return {}

    # ---- data --------------------------------------------------------------------------------------------------
    def batch_for(self, step: int) -> list:
        """The global batch of groups for a step: a pure function of (seed, step), so resume is exact."""
        cfg = self.cfg
        eligible = sum(len(g.records) >= cfg.candidates for g in self.train_groups)
        per_epoch = eligible // cfg.batch_size  # the number of batches batch_groups yields per epoch
        if per_epoch == 0:
            raise ValueError(f"{eligible} training groups have {cfg.candidates} candidates: not enough for "
                             f"batch_size {cfg.batch_size} (prompts per step)")
        epoch, pos = divmod(step, per_epoch)
        return list(batch_groups(self.train_groups, cfg.batch_size, cfg.candidates, cfg.seed, epoch))[pos]

    def local_batch(self, step: int) -> tuple[list, int]:
        """(this rank's groups, the global index of its first group)."""
        return self.rt.shard(self.batch_for(step))

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate_shard(self, records: list, indices: list[int]) -> dict:
        """q (probs [n, K]), output tokens [n] and the first sampled reasoning of each record (teacher mode)."""
        with self.rt.autocast():
            pred = predict(self.rm, records, mode=self.eval_mode, seed=self.eval_seed, indices=indices,
                           batch_size=self.cfg.eval_batch_size, **self.eval_kwargs())
        return {"probs": pred["probs"], "tokens": pred["tokens"], "traces": pred["traces"]}

    def eval_metrics(self, name: str, columns: dict) -> dict:
        """PLCC, SRCC, HPA, calibration and output tokens per dimension; the main rank keeps two sampled traces and
        writes eval_<name>.json (metrics and per-record predictions)."""
        records, probs, tokens = self.eval_set, columns["probs"], columns["tokens"]
        res = score_metrics(records, probs, tokens, self.rm.bins)
        if self.main:
            self.traces[name] = [{"prompt": r.prompt, "dimension": r.dimension, "score": r.score,
                                  "expected": float(p @ self.rm.bins.values.float()), "reasoning": t}
                                 for r, t, p in zip(records, columns["traces"], probs) if t][:2]
            rows = [{"prompt": r.prompt, "dimension": r.dimension, "score": r.score, "prompt_id": r.prompt_id,
                     "probs": p, "tokens": t} for r, p, t in zip(records, probs.tolist(), tokens.tolist())]
            (self.out / f"eval_{name}.json").write_text(json.dumps({"metrics": res, "predictions": rows}))
        return res

    @property
    def eval_seed(self) -> int:
        """The seed of the evaluation's reasoning samples: the fixed held-out set's, so that seeds vary training."""
        return getattr(self.cfg, "eval_seed", self.cfg.seed)

    def log_row(self, result: dict) -> dict:
        return {f"eval/{k}": v for k, v in result["all"].items()}

    def recipe_state(self) -> dict:
        """The sampled traces of the evaluations so far (the report shows the start's and the end's)."""
        return {"traces": self.traces}

    def load_recipe_state(self, state: dict) -> None:
        """The traces of a checkpoint's evaluations: a resumed run reports the start's traces too."""
        self.traces = state.get("traces", {})

    # ---- end of the run ----------------------------------------------------------------------------------------
    def report(self) -> None:
        ceiling = ceiling_metrics(self.eval_set)
        table = format_table({"start (zero-shot)": self.results.get("start"), "trained": self.results["final"],
                              "ceiling (true score)": ceiling})
        if ceiling is not None:
            self.results["ceiling"] = ceiling
            table += ("\n\nThe ceiling rows score the held-out images by their noiseless true score (ties broken at "
                      "random): what a model can reach against the simulated raters on this split.")
        for name, model in (("start", "zero-shot"), ("final", "trained")):
            traces = self.traces.get(name, [])
            if traces:
                table += (f"\n\nSampled reasoning of the {model} model (mean length: the output tokens column):\n"
                          + "\n".join(f"- {t['dimension']} of \"{t['prompt']}\" (human {t['score']:.2f}, expected "
                                      f"{t['expected']:.2f}): \"{t['reasoning'].strip()}\"" for t in traces))
        (self.out / "results.md").write_text(table + "\n")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
        try:
            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", title=self.name)
        except Exception as err:  # a plot must never lose a finished run
            log.warning(f"plotting failed: {err}")
        log.info(table)

