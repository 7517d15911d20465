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
from zrcore.bins import ScoreDistribution
from zrcore.models.reward_model import PolicyOutput
from zrcore.models.rollout import append_sampled_scores, judge_groups, rollouts_of
from zrcore.seeding import score_token_seed
from zrcore.training.trainer import Trainer


class GDSOTeacherTrainer(Trainer):
    eval_mode = "teacher"
    copies_of_trained = ("ref",)

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

    def gdso_loss(self, out_policy, old_logps, ref_logps, completion_mask, scores, target, reward_mean, share):
        """Eq. 14 for a batch (or a micro-batch of whole prompts) of rollouts, each term scaled by ``share``; the
        advantages are eq. 3 with the config's eps, A = (r - mean(r)) / (std(r) + adv_eps) per (prompt, candidate)."""
        c = self.cfg
        dist = out_policy.distribution
        p, m, g = scores.shape[0], scores.shape[1], c.sampling.num_samples
        return losses.gdso_loss(
            _wide(out_policy.logps), _wide(old_logps), completion_mask, dist.mean.view(p, m, g),
            dist.log_probs.view(p, m, g, -1), scores, score_range=self.rm.bins.range, target=target,
            ref_logps=None if ref_logps is None else _wide(ref_logps), reward_mean=reward_mean, beta=c.beta,
            eps_low=c.eps_low, eps_high=c.eps_high, loss_type=c.loss_type, lambda_pt=c.lambda_pt,
            lambda_pw=c.lambda_pw, alpha_pt=c.alpha_pt, alpha_pw=c.alpha_pw, adv_eps=c.adv_eps, adv_scale=c.adv_scale,
            include_ties=c.include_ties, max_completion_length=c.sampling.max_reasoning_tokens, share=share)

    def micro_batch_share(self, batch, scores, target, parts, m: int, g: int):
        """``share(units, term)`` for micro-batches: world x units / (the term's units over every micro-batch of
        every rank), so that the accumulated gradient is the whole batch's. Each part's units are read off the loss
        itself, evaluated once on zeros of the part's shapes (no forward of the model)."""
        k = len(self.rm.bins)
        totals: dict = {}

        def count(units: float, term: str) -> float:
            totals[term] = totals.get(term, 0.0) + units
            return 1.0

        with torch.no_grad():
            for a, b in parts:
                rows = slice(a * m * g, b * m * g)
                mask = batch.completion_mask[rows].cpu()
                zeros = torch.zeros(mask.shape)
                pm = torch.zeros(b - a, m, g)
                self.gdso_loss(PolicyOutput(zeros, ScoreDistribution(pm[..., None].expand(-1, -1, -1, k).reshape(-1, k),
                                                                     pm.reshape(-1), pm.reshape(-1))),
                               zeros, zeros, mask, scores[a:b].cpu(), target[a:b].cpu(), None, count)
        world, rt = self.rt.world, self.rt
        totals = {term: rt.global_sum(totals.get(term, 0.0)) for term in ("policy", "ce", "pairwise")}
        return lambda units, term: world * units / totals[term] if totals[term] else 0.0

    def train_step(self, step: int) -> dict:
        c, rt = self.cfg, self.rt
        local, first = self.local_batch(step)
        p, m, g = len(local), len(local[0].records), c.sampling.num_samples
        with torch.no_grad(), rt.autocast():
            batch = rollouts_of(judge_groups(self.rm, local, first, step, c.seed, c.sampling, with_logprobs=True))
        reward_mean = None
        if c.reward_from == "text":  # the score token sampled from q_T, appended, parsed and reinforced
            seeds = [score_token_seed(c.seed, step, first * m * g + r) for r in range(p * m * g)]
            batch, picked = append_sampled_scores(batch, self.rm, seeds, c.sampling.temperature)
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
        parts = micro_batches(p, m * g, batch.sequences.shape[1], c.micro_batch_tokens)
        share = rt.share if len(parts) == 1 else self.micro_batch_share(batch, scores, target, parts, m, g)
        metrics, balance = {}, {}
        for update in range(c.updates_per_rollout):
            sums: dict = {}
            for j, (a, b) in enumerate(parts):  # prompts a..b-1: rows a*m*g .. b*m*g-1
                rows = slice(a * m * g, b * m * g)
                part = batch if len(parts) == 1 else batch.rows(rows.start, rows.stop)
                with rt.autocast():
                    out_policy = self.net(part.sequences, part.attention_mask, part.image_inputs, part.completion_mask,
                                          c.sampling.temperature, score_position=part.score_position)
                out = self.gdso_loss(out_policy, old_logps[rows], None if ref_logps is None else ref_logps[rows],
                                     part.completion_mask, scores[a:b], target[a:b],
                                     None if reward_mean is None else reward_mean[a:b], share)
                if update == 0 and len(parts) == 1 and c.grad_balance_every and step % c.grad_balance_every == 0 \
                        and rt.world == 1 and c.distributed == "none":  # (FSDP2 shards get gradients in its hooks)
                    balance = term_gradient_norms(out.terms, self.params)
                with self.accumulating(last=j == len(parts) - 1):
                    self.backward(out.total)
                for k, v in out.metrics.items():  # the parts' metrics weighed by their share of the prompts
                    sums[k] = sums.get(k, 0.0) + float(v) * (b - a) / p
                sums["loss/total"] = sums.get("loss/total", 0.0) + float(out.total.detach())
            metrics = sums | self.optimizer_step()
        metrics |= balance
        if self.ref is not None and (step + 1) % c.ref_reset_every == 0:
            self.ref.load_state_dict(self.rm.state_dict())
        metrics["rollout/tokens"] = float(batch.lengths.mean())
        metrics["rollout/truncated"] = float(batch.truncated.float().mean())
        return metrics


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Log-probs in fp32 at least (16-bit compute upcast; float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def micro_batches(prompts: int, rows_per_prompt: int, width: int, budget: int) -> list[tuple[int, int]]:
    """Prompt ranges [a, b) of the micro-batches of one update: whole prompts (the CE and pairwise terms need all
    M x G rows of a prompt in one loss), as many as fit ``budget`` padded tokens (rows x width), at least one.
    ``budget`` 0: one pass over all prompts."""
    per = prompts if budget <= 0 else max(1, budget // max(1, rows_per_prompt * width))
    return [(a, min(prompts, a + per)) for a in range(0, prompts, per)]


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
