"""Independent float64 references written from the equations (loops over the paper's indices); the tests and the
benchmarks use them as ground truth and as the naive paths."""

from __future__ import annotations

import torch


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
