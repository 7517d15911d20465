"""Pairwise gap (GDSO eq. 10-11, generalised to M >= 2 candidates of one prompt with G samples each).

    D[p,m,i,m',k] = (mu[p,m,i] - mu[p,m',k]) - (s[p,m] - s[p,m'])
    pairs of prompt p: ordered (m, m'), m != m', both with >= 1 valid sample, s[m] != s[m'] (unless include_ties)
    r_pw[p,m,i]  = 1 - mean_{m' partner of m} (1 / (G_m' R)) sum_k |D[p,m,i,m',k]|          (eq. 10)
    L_p          = mean_{(m,m') pairs} (1 / (G_m G_m' R)) sum_{i,k} |D[p,m,i,m',k]|            (eq. 11)
    loss         = mean of L_p over prompts with at least one pair (0 when there is none)

G_m counts the valid samples of candidate m under ``mask``. ``reward`` is 0 where a sample is invalid or its
candidate has no partner (``has_pair`` False). d loss / d mu[p,m,i] = sum over pairs of sign(D) weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from zrcore import _checks
from zrcore.ops._dispatch import resolve_impl


class PairwiseGap(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable w.r.t. mean
    reward: torch.Tensor  # [P, M, G], no grad
    has_pair: torch.Tensor  # [P, M] bool


def validate_pairwise_inputs(mean, scores, score_range, mask):
    _checks.tensor("mean", mean, ndim=3, floating=True)
    _checks.tensor("scores", scores, ndim=2)
    if tuple(scores.shape) != tuple(mean.shape[:2]):
        raise ValueError(f"scores must have shape [P, M] = {tuple(mean.shape[:2])}, got {tuple(scores.shape)}")
    _checks.positive("score_range", score_range)
    _checks.bool_mask("mask", mask, mean.shape)
    _checks.same_device(mean=mean, scores=scores, mask=mask)
    if scores.numel() and not torch.isfinite(scores.to(torch.float64)).all():
        raise ValueError("scores must be finite")


def pair_structure(scores: torch.Tensor, valid: torch.Tensor, include_ties: bool):
    """counts [P,M] of valid samples, pair indicator [P,M,M] (ordered, m != m')."""
    counts = valid.sum(-1)
    m = scores.shape[1]
    alive = counts > 0
    pair = alive.unsqueeze(2) & alive.unsqueeze(1)
    pair &= ~torch.eye(m, dtype=torch.bool, device=scores.device)
    if not include_ties:
        pair &= scores.unsqueeze(2) != scores.unsqueeze(1)
    return counts, pair


def pairwise_gap_torch(mean, scores, score_range, mask=None, include_ties=False) -> PairwiseGap:
    """Reference path: materialises the [P, M, G, M, G] gap tensor."""
    compute = torch.float64 if mean.dtype == torch.float64 else torch.float32
    mu = mean.to(compute)
    s = scores.to(compute)
    valid = torch.ones_like(mean, dtype=torch.bool) if mask is None else mask
    counts, pair = pair_structure(s, valid, include_ties)
    vf = valid.to(compute)
    gap = (mu[:, :, :, None, None] - mu[:, None, None, :, :]) - (s[:, :, None, None, None] - s[:, None, None, :, None])
    absd = gap.abs() * vf[:, :, :, None, None] * vf[:, None, None, :, :]  # [P,M,G,M,G]
    row = absd.sum(-1)  # [P,M,G,M']  sum over partner samples k
    cnt = counts.to(compute).clamp_min(1)
    pf = pair.to(compute)
    n_partners = pf.sum(-1)  # [P,M]
    has_pair = n_partners > 0
    per_partner = row / (cnt[:, None, None, :] * score_range)  # [P,M,G,M']
    mean_gap = (per_partner * pf[:, :, None, :]).sum(-1) / n_partners.clamp_min(1)[:, :, None]
    reward = torch.where(has_pair[:, :, None] & valid, 1.0 - mean_gap, torch.zeros_like(mean_gap))
    pair_term = row.sum(2) / (cnt[:, :, None] * cnt[:, None, :] * score_range)  # [P,M,M']
    n_pairs = pf.sum((1, 2))
    per_prompt = (pair_term * pf).sum((1, 2)) / n_pairs.clamp_min(1)
    has_prompt = n_pairs > 0
    n_prompts = has_prompt.sum()
    loss = (per_prompt * has_prompt.to(compute)).sum() / n_prompts.clamp_min(1).to(compute)
    return PairwiseGap(loss, reward.detach().to(torch.float64 if compute == torch.float64 else torch.float32), has_pair)


def pairwise_gap(
    mean: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_range: float,
    mask: torch.Tensor | None = None,
    include_ties: bool = False,
    impl: str = "auto",
) -> PairwiseGap:
    """GDSO pairwise loss and rewards for P prompts x M candidates x G samples (see module docstring).

    mean [P, M, G] (expected scores, differentiable), scores [P, M] human scores, mask [P, M, G] bool (True =
    valid sample). Returns PairwiseGap(loss scalar, reward [P, M, G] fp32 no grad, has_pair [P, M] bool).
    """
    validate_pairwise_inputs(mean, scores, score_range, mask)
    which = resolve_impl(impl, mean)
    if which == "torch":
        return pairwise_gap_torch(mean, scores, float(score_range), mask, include_ties)
    from zrcore.ops import _pairwise_gap_triton as tk

    return tk.pairwise_gap_triton(mean, scores, float(score_range), mask, include_ties)
