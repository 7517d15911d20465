"""Student recipes: SFT (cross-entropy on the annotated bin, no reasoning), RISD (KL to the teacher's
reasoning-marginal distribution, eq. 15) and the OPD baseline (on-policy distillation, eq. 18-19)."""

from __future__ import annotations

from collections import defaultdict

import torch

from zrcore import losses
from zrcore.bins import ScoreDistribution
from zrcore.models import RewardModel
from zrcore.training import distributed as D
from zrcore.training.rollout import Rollouts, merge_judgements, policy_forward
from zrcore.training.trainer import Trainer, step_seed


def student_distributions(rm, records: list) -> ScoreDistribution:
    """q for each record (one batched forward per dimension), in the records' order, with gradients."""
    by_dim = defaultdict(list)
    for i, r in enumerate(records):
        by_dim[r.dimension].append(i)
    k = len(rm.bins)
    log_probs = [None] * len(records)
    for dim, idx in by_dim.items():
        q = rm.score([records[i].prompt for i in idx], [records[i].image for i in idx], dim)
        for row, i in enumerate(idx):
            log_probs[i] = q.log_probs[row]
    lp = torch.stack(log_probs) if records else torch.zeros(0, k)
    probs = lp.exp()
    mean = probs @ rm.bins.values.to(lp.device, lp.dtype)
    var = (probs * (rm.bins.values.to(lp.device, lp.dtype) - mean[:, None]) ** 2).sum(-1)
    return ScoreDistribution(lp, mean, var)


class _StudentTrainer(Trainer):
    def _update(self, loss: torch.Tensor) -> dict:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        D.average_gradients(self.params, self.world)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        return {"loss": float(loss.detach()), "grad_norm": float(norm)}


class SFTTrainer(_StudentTrainer):
    def train_step(self, groups: list, step: int) -> dict:
        records = [r for g in D.shard(groups, self.rank, self.world) for r in g.records]
        q = student_distributions(self.rm, records)
        scores = torch.tensor([r.score for r in records], dtype=torch.float64)
        if self.cfg.soft_targets:
            std = torch.tensor([r.std or 0.0 for r in records], dtype=torch.float64)
            target = self.rm.bins.soft_labels(scores, std).to(q.log_probs.dtype)
        else:
            target = self.rm.bins.index(scores)
        return self._update(losses.pointwise_ce(q.log_probs, target))


def load_teacher(path: str) -> RewardModel:
    if not path:
        raise ValueError("--teacher is required: a teacher checkpoint folder (output_dir/model of train_gdso.py)")
    teacher = RewardModel.from_pretrained(path)
    teacher.model.eval()
    for p in teacher.model.parameters():
        p.requires_grad_(False)
    return teacher


class RISDTrainer(_StudentTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.teacher = load_teacher(cfg.teacher)
        if self.teacher.bins != self.rm.bins:
            raise ValueError("teacher and student must share the score bins")

    @torch.no_grad()
    def teacher_probs(self, records: list, step: int) -> torch.Tensor:
        """q_T averaged over teacher_samples sampled reasonings (Monte-Carlo reasoning-marginal)."""
        c = self.cfg
        out = torch.zeros(len(records), len(self.rm.bins))
        by_dim = defaultdict(list)
        for i, r in enumerate(records):
            by_dim[r.dimension].append(i)
        for d_i, (dim, idx) in enumerate(sorted(by_dim.items())):
            torch.manual_seed(step_seed(c.seed, step, 1000 * self.rank + d_i))
            j = self.teacher.judge([records[i].prompt for i in idx], [records[i].image for i in idx], dim,
                                   num_samples=c.teacher_samples, max_reasoning_tokens=c.max_reasoning_tokens,
                                   temperature=c.temperature)
            out[idx] = j.distribution.probs.float().mean(1).cpu()
        return out

    def train_step(self, groups: list, step: int) -> dict:
        records = [r for g in D.shard(groups, self.rank, self.world) for r in g.records]
        q_t = self.teacher_probs(records, step)
        q_s = student_distributions(self.rm, records)
        return self._update(losses.risd_loss(q_s.log_probs, q_t.to(q_s.log_probs.dtype)))


class OPDTrainer(_StudentTrainer):
    """The student samples reasoning and a score token; per-token advantage log pi_T - log pi_S_old (eq. 18)."""

    eval_mode = "teacher"  # the OPD student reasons before it scores

    def __init__(self, cfg):
        super().__init__(cfg)
        self.teacher = load_teacher(cfg.teacher)

    def eval_kwargs(self) -> dict:
        c = self.cfg
        return {"samples": c.num_samples, "max_reasoning_tokens": c.max_reasoning_tokens, "temperature": c.temperature}

    @torch.no_grad()
    def sample(self, groups: list, step: int) -> Rollouts:
        c = self.cfg
        judgements = []
        for i, g in enumerate(groups):
            torch.manual_seed(step_seed(c.seed, step, self.rank * len(groups) + i))
            judgements.append(self.rm.judge([g.prompt] * len(g.records), g.images, g.dimension, num_samples=c.num_samples,
                                            max_reasoning_tokens=c.max_reasoning_tokens, temperature=c.temperature))
        batch = merge_judgements(judgements, self.rm.tokenizer.pad_token_id)
        # append the sampled score token: the last completion token the student emits
        gen = torch.Generator().manual_seed(step_seed(c.seed, step, 10**6 + self.rank))
        idx = torch.multinomial(batch.distribution.probs.float().cpu(), 1, generator=gen).squeeze(-1)
        score_tok = self.rm.decoder.token_ids[idx].to(batch.sequences.device)
        seqs = torch.cat([batch.sequences, score_tok[:, None]], 1)
        att = torch.cat([batch.attention_mask, torch.ones_like(score_tok[:, None])], 1)
        comp = torch.cat([batch.completion_mask, torch.ones_like(score_tok[:, None], dtype=torch.bool)], 1)
        return batch._replace(sequences=seqs, attention_mask=att, completion_mask=comp)

    def train_step(self, groups: list, step: int) -> dict:
        c = self.cfg
        batch = self.sample(D.shard(groups, self.rank, self.world), step)
        with torch.no_grad():
            t_lp, _ = policy_forward(self.teacher, self.teacher.model, batch, c.temperature, with_distribution=False)
            old_lp, _ = policy_forward(self.rm, self.rm.model, batch, c.temperature, with_distribution=False)
        adv = losses.opd_advantages(t_lp, old_lp)
        logps, _ = policy_forward(self.rm, self.rm.model, batch, c.temperature, with_distribution=False)
        mask = batch.completion_mask.clone()
        mask[:, 0] = False
        metrics = self._update(losses.opd_loss(logps, adv, mask))
        metrics["advantage/mean"] = float((adv * mask).sum() / mask.sum().clamp_min(1))
        return metrics
