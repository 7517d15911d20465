"""Student recipes: SFT (cross-entropy on the annotated bin, no reasoning), RISD (KL to the teacher's
reasoning-marginal distribution, eq. 15) and the OPD baseline (on-policy distillation, eq. 18-19).

Each rank takes a contiguous share of the step's prompts and scales its loss by its share of the loss's units
(records, or completion tokens for OPD), so the averaged gradient is that of the global batch.
"""

from __future__ import annotations

import torch

from zrcore import losses
from zrcore.models.rollout import judge_groups, rollouts_of, sample_bins
from zrcore.seeding import step_seed
from zrcore.training.trainer import Trainer, build_reward_model


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


class RISDTrainer(_StudentTrainer):
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


class OPDTrainer(_StudentTrainer):
    """The student samples reasoning and a score token; per-token advantage log pi_T - log pi_S_old (eq. 18)."""

    eval_mode = "teacher"  # the OPD student reasons before it scores

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
        # append the sampled score token: the last completion token the student emits
        rows = batch.sequences.shape[0]
        seeds = [step_seed(c.seed, step, 10**9 + first * rows // len(groups) + r) for r in range(rows)]
        return batch.with_score_tokens(self.rm.score_tokens(sample_bins(batch.distribution.probs, seeds)))

    def train_step(self, step: int) -> dict:
        c = self.cfg
        groups, first = self.local_batch(step)
        batch = self.sample(groups, first, step)
        with torch.no_grad(), self.rt.autocast():
            t_lp = self.frozen["teacher"].policy_forward(batch, c.sampling.temperature, with_distribution=False).logps
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
