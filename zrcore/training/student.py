"""Student recipes: SFT (cross-entropy on the annotated bin, no reasoning), RISD (KL to the teacher's
reasoning-marginal distribution, eq. 15) and the OPD baseline (on-policy distillation, eq. 18-19).

Each rank takes a contiguous share of the step's prompts and scales its loss by its share of the loss's units
(records, or completion tokens for OPD), so the averaged gradient is that of the global batch.

RISD and OPD sample as the teacher was trained: the sampling fields the run leaves at 0 (``DistillSamplingConfig``:
``max_reasoning_tokens``, ``temperature``) take the teacher checkpoint's recorded values (its zrcore_sampling.yaml),
before the run's settings are recorded, so its config.yaml shows what was used. OPD's teacher log-probs
log pi_T(y_t) are taken at the teacher's own temperature.
"""

from __future__ import annotations

import logging

import torch

from zrcore import losses
from zrcore.models import recorded_sampling
from zrcore.models.rollout import append_sampled_scores, judge_groups, rollouts_of
from zrcore.seeding import score_token_seed
from zrcore.training.trainer import Trainer, build_reward_model

log = logging.getLogger("zrcore")


def _records(groups: list) -> list:
    return [r for g in groups for r in g.records]


class _StudentTrainer(Trainer):
    def student_distributions(self, records: list):
        """q for each record from one forward through ``self.net`` (the gradient-carrying entry), records' order."""
        rm = self.rm
        inputs = rm.score_inputs([r.prompt for r in records], [r.image for r in records],
                                 [r.dimension for r in records])
        with self.rt.autocast():
            return self.net(*inputs).distribution

    def update(self, loss: torch.Tensor, units: float) -> dict:
        scaled = self.rt.share(units) * loss
        return {"loss": float(scaled.detach())} | self.optimizer_step(scaled)


class SFTTrainer(_StudentTrainer):
    def train_step(self, step: int) -> dict:
        records = _records(self.local_batch(step)[0])
        q = self.student_distributions(records)
        scores = torch.tensor([r.score for r in records], dtype=torch.float64)
        if self.cfg.soft_targets:
            std = torch.tensor([r.std or 0.0 for r in records], dtype=torch.float64)
            target = self.rm.bins.soft_labels(scores, std).to(q.log_probs.dtype)
        else:
            target = self.rm.bins.index(scores)
        return self.update(losses.pointwise_ce(q.log_probs, target.to(q.log_probs.device)), len(records))


def check_teacher_path(path: str) -> str:
    if not path:
        raise ValueError("teacher is required: a teacher checkpoint folder (output_dir/model of train_gdso.py)")
    return path


def take_teacher_sampling(cfg) -> tuple[dict, dict]:
    """Fills the fields of ``cfg.sampling`` left to the teacher (0) with the teacher checkpoint's recorded values:
    ``max_reasoning_tokens`` (left 0 when the teacher has none: the Trainer puts the longest description) and
    ``temperature`` (1 when the teacher has none). Fields set in the run are kept. Returns (the teacher's record,
    the filled fields as given: flat field -> 0, for ``TrainLoop.config_resolved``)."""
    own = recorded_sampling(check_teacher_path(cfg.teacher))
    s, given = cfg.sampling, {}
    if s.max_reasoning_tokens == 0 and own.get("max_reasoning_tokens"):
        s.max_reasoning_tokens = int(own["max_reasoning_tokens"])
        given["sampling.max_reasoning_tokens"] = 0
    if s.temperature == 0:
        s.temperature = float(own.get("temperature") or 1.0)
        given["sampling.temperature"] = 0.0
    return own, given


class _DistilledTrainer(_StudentTrainer):
    """A student trained against a frozen teacher checkpoint (``cfg.teacher``), sampling as the teacher was trained
    where the run leaves it (``take_teacher_sampling``, before the run records its settings)."""

    def __init__(self, cfg, model=None, data=None):
        self.teacher_sampling, given = take_teacher_sampling(cfg)
        super().__init__(cfg, model, data)
        if given:  # the record keeps the 0s as given, so that the same command (or a sweep's) still matches it
            self.config_resolved(given)
        if self.main:
            s = cfg.sampling
            log.info(f"{self.name}: sampling with max_reasoning_tokens={s.max_reasoning_tokens}, temperature="
                     f"{s.temperature} (the teacher's record: {self.teacher_sampling or 'none'})")


class RISDTrainer(_DistilledTrainer):
    def frozen_models(self, rm) -> dict:
        teacher = build_reward_model(self.cfg, path=check_teacher_path(self.cfg.teacher), device=self.rt.device,
                                     trainable=False)
        if teacher.bins != rm.bins:
            raise ValueError("teacher and student must share the score bins")
        return {"teacher": teacher}

    @torch.no_grad()
    def teacher_probs(self, groups: list, first: int, step: int) -> torch.Tensor:
        """q_T averaged over sampling.num_samples sampled reasonings (Monte-Carlo reasoning-marginal), [records, K]."""
        c = self.cfg
        with self.rt.autocast():
            j = judge_groups(self.frozen["teacher"], groups, first, step, c.seed, c.sampling)
        return j.distribution.probs.float().mean(1)

    def train_step(self, step: int) -> dict:
        groups, first = self.local_batch(step)
        q_t = self.teacher_probs(groups, first, step)
        q_s = self.student_distributions(_records(groups))
        return self.update(losses.risd_loss(q_s.log_probs, q_t.to(q_s.log_probs)), q_s.log_probs.shape[0])


class OPDTrainer(_DistilledTrainer):
    """The student samples reasoning and a score token; per-token advantage log pi_T - log pi_S_old (eq. 18), pi_T
    at the teacher's own temperature (its record; the student's when it has none), pi_S at the student's."""

    eval_mode = "teacher"  # the OPD student reasons before it scores

    @property
    def teacher_temperature(self) -> float:
        return float(self.teacher_sampling.get("temperature") or self.cfg.sampling.temperature)

    def frozen_models(self, rm) -> dict:
        return {"teacher": build_reward_model(self.cfg, path=check_teacher_path(self.cfg.teacher),
                                              device=self.rt.device, trainable=False)}

    def eval_kwargs(self) -> dict:
        s = self.cfg.sampling
        return {"samples": s.num_samples, "max_reasoning_tokens": s.max_reasoning_tokens,
                "temperature": s.temperature, "rollout_batch_size": s.rollout_batch_size}

    @torch.no_grad()
    def sample(self, groups: list, first: int, step: int):
        c = self.cfg
        with self.rt.autocast():
            batch = rollouts_of(judge_groups(self.rm, groups, first, step, c.seed, c.sampling))
        # append the score token drawn from the student's q at its temperature: the last completion token it emits
        rows = batch.sequences.shape[0]
        seeds = [score_token_seed(c.seed, step, first * rows // len(groups) + r) for r in range(rows)]
        return append_sampled_scores(batch, self.rm, seeds, c.sampling.temperature)[0]

    def train_step(self, step: int) -> dict:
        c = self.cfg
        groups, first = self.local_batch(step)
        batch = self.sample(groups, first, step)
        with torch.no_grad(), self.rt.autocast():
            t_lp = self.frozen["teacher"].policy_forward(batch, self.teacher_temperature, with_distribution=False).logps
            old_lp = self.rm.policy_forward(batch, c.sampling.temperature, with_distribution=False).logps
        adv = losses.opd_advantages(t_lp.float(), old_lp.float())
        with self.rt.autocast():
            logps = self.net(batch.sequences, batch.attention_mask, batch.image_inputs, batch.completion_mask,
                             c.sampling.temperature, with_distribution=False).logps
        mask = batch.completion_mask.clone()
        mask[:, 0] = False
        # a rank's share: its trajectories with a valid token (eq. 19), or its valid tokens (token mean)
        units = float((mask.sum(-1) > 0).sum()) if c.normalize == "trajectory" else float(mask.sum())
        metrics = self.update(losses.opd_loss(logps.float(), adv, mask, normalize=c.normalize), units)
        metrics["advantage/mean"] = float((adv * mask).sum() / mask.sum().clamp_min(1))
        return metrics
