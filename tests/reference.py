"""Independent float64 references written from the equations (loops over the paper's indices); the tests and the
benchmarks use them as ground truth and as the naive paths."""

from __future__ import annotations

import torch

from zrcore.ops.pairwise_gap import PairwiseGap, pair_structure


def score_distribution_naive(hidden, weight, token_ids, values, bias=None, temperature=1.0):
    """Full logits h W^T (+ b), gather the K score columns, softmax: the [N, V] path the op replaces."""
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    z = logits[..., token_ids] / temperature
    q = torch.softmax(z, dim=-1)
    mean = (q * values).sum(-1)
    var = (q * (values - mean[..., None]) ** 2).sum(-1)
    return torch.log_softmax(z, dim=-1), mean, var


def pairwise_gap_loops(mean, scores, score_range, mask=None, include_ties=False):
    """Eq. 10-11 generalised, with explicit loops. Returns (loss, reward [P,M,G], has_pair [P,M])."""
    p_, m_, g_ = mean.shape
    valid = torch.ones(p_, m_, g_, dtype=torch.bool) if mask is None else mask.cpu()
    reward = torch.zeros(p_, m_, g_, dtype=torch.float64)
    has_pair = torch.zeros(p_, m_, dtype=torch.bool)
    prompt_losses = []
    for p in range(p_):
        counts = [int(valid[p, m].sum()) for m in range(m_)]
        pair_terms = []
        for m in range(m_):
            partners = [
                m2
                for m2 in range(m_)
                if m2 != m and counts[m] > 0 and counts[m2] > 0 and (include_ties or float(scores[p, m]) != float(scores[p, m2]))
            ]
            if partners:
                has_pair[p, m] = True
            for m2 in partners:
                term = 0.0
                for i in range(g_):
                    for k in range(g_):
                        if valid[p, m, i] and valid[p, m2, k]:
                            d = (mean[p, m, i] - mean[p, m2, k]) - (scores[p, m] - scores[p, m2])
                            term = term + d.abs()
                pair_terms.append(term / (counts[m] * counts[m2] * score_range))
            for i in range(g_):
                if not partners or not valid[p, m, i]:
                    continue
                acc = 0.0
                for m2 in partners:
                    s = 0.0
                    for k in range(g_):
                        if valid[p, m2, k]:
                            s += float(abs((mean[p, m, i] - mean[p, m2, k]) - (scores[p, m] - scores[p, m2])))
                    acc += s / (counts[m2] * score_range)
                reward[p, m, i] = 1.0 - acc / len(partners)
        if pair_terms:
            prompt_losses.append(sum(pair_terms) / len(pair_terms))
    loss = sum(prompt_losses) / len(prompt_losses) if prompt_losses else mean.sum() * 0
    return loss, reward, has_pair


def kl_materialised(h_s, w_s, teacher, w_t=None, b_s=None, b_t=None, direction="forward", temperature=1.0,
                    token_ids=None, reduction="batchmean"):
    """Full [N, V] logits and log-softmax on both sides, then the KL (the naive path fused_linear_kl replaces)."""
    zs = h_s @ w_s.t()
    if b_s is not None:
        zs = zs + b_s
    if w_t is not None:
        zt = teacher @ w_t.t()
        if b_t is not None:
            zt = zt + b_t
    else:
        zt = teacher
    if token_ids is not None:
        zs = zs[:, token_ids]
        if w_t is not None:
            zt = zt[:, token_ids]
    ls = torch.log_softmax(zs / temperature, -1)
    lt = torch.log_softmax(zt / temperature, -1)
    if direction == "forward":
        kl = (lt.exp() * (lt - ls)).sum(-1)
    else:
        kl = (ls.exp() * (ls - lt)).sum(-1)
    if reduction == "none":
        return kl
    return kl.sum() / kl.shape[0] if reduction == "batchmean" else kl.sum()


def pairwise_gap_materialised(mean, scores, score_range, mask=None, include_ties=False) -> PairwiseGap:
    """The naive path: materialises the [P, M, G, M, G] gap tensor (vectorised; ``pairwise_gap_loops`` is the
    float64 ground truth)."""
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
