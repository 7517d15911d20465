"""GDSO training of the reasoning teacher (Algorithm 1): rollouts with the current policy, K_gdso updates of
L_GDSO = L_GRPO + alpha_pt L_ce + alpha_pw L_pw per rollout batch, the reference policy reset every N_ref steps.

Over several processes each rank holds a contiguous share of the step's prompts (all M candidates of a prompt stay
on one rank) and scales each term by ``Runtime.share`` of its units, so the averaged gradient is that of the global
batch: sequences for the policy term (tokens for bnpo / dapo), samples for the CE term, prompts with a pair for the
pairwise term.
"""

from __future__ import annotations

import copy

import torch

from zrcore import losses
from zrcore._renamed import module_getattr
from zrcore.models.rollout import judge_groups, rollouts_of, sample_bins
from zrcore.seeding import step_seed
from zrcore.training.trainer import Trainer


class GDSOTeacherTrainer(Trainer):
    eval_mode = "teacher"

    def __init__(self, cfg, model=None, data=None):
        super().__init__(cfg, model, data)
        self.ref = self.frozen.get("ref")

    def frozen_models(self, rm) -> dict:
        return {"ref": copy.deepcopy(rm)} if self.cfg.beta > 0 else {}

    def frozen_state(self) -> dict:
        return self.frozen

    def eval_kwargs(self) -> dict:
        s = self.cfg.sampling
        return {"samples": self.cfg.eval_samples, "max_reasoning_tokens": s.max_reasoning_tokens,
                "temperature": s.temperature, "rollout_batch_size": s.rollout_batch_size}

    def train_step(self, step: int) -> dict:
        c, rt = self.cfg, self.rt
        local, first = self.local_batch(step)
        p, m, g = len(local), len(local[0].records), c.sampling.num_samples
        with torch.no_grad(), rt.autocast():
            batch = rollouts_of(judge_groups(self.rm, local, first, step, c.seed, c.sampling, with_logprobs=True))
        reward_mean = None
        if c.reward_from == "text":  # the score token sampled from q, appended, parsed and reinforced
            seeds = [step_seed(c.seed, step, 10**9 + first * m * g + r) for r in range(p * m * g)]
            picked = sample_bins(batch.distribution.probs, seeds)
            batch = batch.with_score_tokens(self.rm.score_tokens(picked), bins=picked)
            reward_mean = self.rm.bins.values[picked].view(p, m, g)
        with torch.no_grad(), rt.autocast():
            old_logps = batch.logprobs  # from the forward that read q at sampling time (same policy, same batch)
            if old_logps is None:
                old_logps = self.rm.policy_forward(batch, c.sampling.temperature, with_distribution=False).logps
            ref_logps = (self.ref.policy_forward(batch, c.sampling.temperature, with_distribution=False).logps
                         if self.ref is not None else None)
        device = old_logps.device
        scores = torch.stack([grp.scores for grp in local]).to(device)
        target = self.rm.bins.index(scores)
        if reward_mean is not None:
            reward_mean = reward_mean.to(device)
        metrics, balance = {}, {}
        for update in range(c.updates_per_rollout):
            with rt.autocast():
                out_policy = self.net(batch.sequences, batch.attention_mask, batch.image_inputs,
                                      batch.completion_mask, c.sampling.temperature, score_position=batch.score_position)
            dist = out_policy.distribution
            out = losses.gdso_loss(
                out_policy.logps.float(), old_logps.float(), batch.completion_mask, dist.mean.view(p, m, g),
                dist.log_probs.view(p, m, g, -1), scores, score_range=self.rm.bins.range, target=target,
                ref_logps=None if ref_logps is None else ref_logps.float(), reward_mean=reward_mean, beta=c.beta,
                eps_low=c.eps_low, eps_high=c.eps_high, loss_type=c.loss_type, lambda_pt=c.lambda_pt,
                lambda_pw=c.lambda_pw, alpha_pt=c.alpha_pt, alpha_pw=c.alpha_pw, adv_scale=c.adv_scale,
                include_ties=c.include_ties, max_completion_length=c.sampling.max_reasoning_tokens,
                share=rt.share)  # each term scaled by this rank's share of its units (uneven shards over ranks)
            metrics = {k: float(v) for k, v in out.metrics.items()} | {"loss/total": float(out.total.detach())}
            if update == 0 and c.grad_balance_every and step % c.grad_balance_every == 0 and rt.world == 1 \
                    and c.distributed == "none":  # (FSDP2's sharded parameters get their gradients in its hooks)
                balance = term_gradient_norms(out.terms, self.params)
            metrics |= self.optimizer_step(out.total)
        metrics |= balance
        if self.ref is not None and (step + 1) % c.ref_reset_every == 0:
            self.ref.load_state_dict(self.rm.state_dict())
        metrics["rollout/tokens"] = float(batch.lengths.mean())
        metrics["rollout/truncated"] = float(batch.truncated.float().mean())
        return metrics


def term_gradient_norms(terms: dict[str, torch.Tensor], params: list) -> dict[str, float]:
    """||d term / d theta||_2 of each loss term over the trained parameters (``grad_norm/<term>``): the balance of the
    policy term against the direct terms, measured on the same forward (the graph is kept for the real backward)."""
    out = {}
    for name, term in terms.items():
        if not term.requires_grad:
            out[f"grad_norm/{name}"] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        squares = [(gr.float() ** 2).sum() for gr in grads if gr is not None]
        out[f"grad_norm/{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return out


__getattr__ = module_getattr(__name__, {"GDSOTrainer": "GDSOTeacherTrainer"}, globals())  # renamed apart from TRL's
