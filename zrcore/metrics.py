"""Evaluation metrics: correlation (PLCC, SRCC), human preference accuracy (HPA), GSB, rating aggregation,
and calibration of score distributions (bin NLL, Wasserstein-1 to the raters' distribution)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zrcore import _checks
from zrcore.bins import ScoreBins


def _vector(name: str, x) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).detach().cpu() if not isinstance(x, torch.Tensor) else x
    t = t.detach().to("cpu", torch.float64)
    if t.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.numel() and not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _vector("pred", pred), _vector("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred ({p.numel()}) and target ({t.numel()}) must have the same length")
    return p, t


def plcc(pred, target) -> float:
    """Pearson linear correlation: cov(x, y) / (std(x) std(y)); NaN when either is constant or n < 2."""
    x, y = _pair(pred, target)
    if x.numel() < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum()) / denom if denom > 0 else float("nan")


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's 'average')."""
    x = _vector("x", x)
    n = x.numel()
    if n == 0:
        return x.clone()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = avg[inverse]
    return ranks


def srcc(pred, target) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks."""
    x, y = _pair(pred, target)
    return plcc(rankdata(x), rankdata(y))


def _group_ids(groups, n: int) -> torch.Tensor:
    if isinstance(groups, torch.Tensor) and not groups.is_floating_point():
        g = groups.detach().cpu().long()
    else:
        lookup: dict = {}
        g = torch.tensor([lookup.setdefault(k, len(lookup)) for k in list(groups)], dtype=torch.long)
    if g.dim() != 1 or g.numel() != n:
        raise ValueError(f"groups must hold one id per prediction ({n}), got {g.numel()}")
    return g


def hpa_counts(pred, target, groups, margin: float = 0.0) -> tuple[int, int]:
    """(correct, total) over same-group pairs with |s_a - s_b| > margin (strict; tied human scores excluded).
    A pair is correct when (mu_a - mu_b)(s_a - s_b) > 0: a predicted tie counts as wrong."""
    x, y = _pair(pred, target)
    g = _group_ids(groups, x.numel())
    _checks.non_negative("margin", margin)
    correct = total = 0
    for gid in torch.unique(g):
        idx = (g == gid).nonzero().flatten()
        if idx.numel() < 2:
            continue
        xs, ys = x[idx], y[idx]
        a, b = torch.triu_indices(idx.numel(), idx.numel(), offset=1)
        ds = ys[a] - ys[b]
        keep = (ds.abs() > margin) & (ds != 0)
        dm = xs[a] - xs[b]
        total += int(keep.sum())
        correct += int(((dm * ds > 0) & keep).sum())
    return correct, total


def hpa(pred, target, groups, margin: float = 0.0) -> float:
    """Human preference accuracy over same-prompt pairs (see hpa_counts); NaN when there is no pair.
    margin=0.5 gives the margin HPA."""
    correct, total = hpa_counts(pred, target, groups, margin)
    return correct / total if total else float("nan")


def gsb(good: int, same: int, bad: int) -> float:
    """Good-Same-Bad score: (G - B) / (G + S + B)."""
    for name, v in (("good", good), ("same", same), ("bad", bad)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative count, got {v!r}")
    n = good + same + bad
    if n == 0:
        raise ValueError("good + same + bad must be positive")
    return (good - bad) / n


def aggregate_ratings(ratings) -> torch.Tensor:
    """Ground truth from several ratings per item: drop the single highest and single lowest rating when at
    least 3 exist, then average. ``ratings`` is a 2-D tensor [N, R] (NaN = missing) or a list of sequences."""
    if isinstance(ratings, torch.Tensor):
        if ratings.dim() != 2:
            raise ValueError(f"ratings must be 2-D [N, R], got shape {tuple(ratings.shape)}")
        rows = [r[~torch.isnan(r)].tolist() for r in ratings.detach().to(torch.float64).cpu()]
    else:
        rows = [list(map(float, r)) for r in ratings]
    out = []
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise ValueError(f"ratings row {i} is empty")
        if any(not math.isfinite(v) for v in r):
            raise ValueError(f"ratings row {i} has a non-finite rating")
        r = sorted(r)
        if len(r) >= 3:
            r = r[1:-1]
        out.append(sum(r) / len(r))
    return torch.tensor(out, dtype=torch.float64)


def bin_nll(log_probs: torch.Tensor, scores, bins: ScoreBins) -> float:
    """Calibration: mean negative log-likelihood of the human score's nearest bin under q."""
    _checks.tensor("log_probs", log_probs, ndim=2, floating=True)
    if log_probs.shape[1] != len(bins):
        raise ValueError(f"log_probs must have K={len(bins)} columns, got {log_probs.shape[1]}")
    idx = bins.index(torch.as_tensor(scores, dtype=torch.float64).reshape(-1)).to(log_probs.device)
    if idx.numel() != log_probs.shape[0]:
        raise ValueError(f"scores must hold one score per row of log_probs ({log_probs.shape[0]}), got {idx.numel()}")
    return float(-log_probs.double().gather(1, idx[:, None]).mean())


def rater_distribution(ratings: Sequence[Sequence[float]], bins: ScoreBins) -> torch.Tensor:
    """Empirical distribution [N, K] of each item's raters over the nearest bins."""
    out = torch.zeros(len(ratings), len(bins), dtype=torch.float64)
    for i, r in enumerate(ratings):
        if len(r) == 0:
            raise ValueError(f"ratings row {i} is empty")
        idx = bins.index(torch.as_tensor(list(r), dtype=torch.float64))
        out[i].index_add_(0, idx, torch.full((len(r),), 1.0 / len(r), dtype=torch.float64))
    return out


def wasserstein1(probs: torch.Tensor, target_probs: torch.Tensor, bins: ScoreBins) -> torch.Tensor:
    """Wasserstein-1 distance per row between two distributions over the bins:
    W1 = sum_{k<K} |F_q(k) - F_t(k)| (s_{k+1} - s_k), with F the cumulative distributions."""
    _checks.tensor("probs", probs, ndim=2, floating=True)
    _checks.tensor("target_probs", target_probs, ndim=2, floating=True)
    if probs.shape != target_probs.shape or probs.shape[1] != len(bins):
        raise ValueError(f"probs {tuple(probs.shape)} and target_probs {tuple(target_probs.shape)} must both be "
                         f"[N, K={len(bins)}]")
    v = bins._values64.to(probs.device)
    gaps = v[1:] - v[:-1]
    cdf_gap = (probs.double().cumsum(1) - target_probs.double().to(probs.device).cumsum(1))[:, :-1].abs()
    return (cdf_gap * gaps).sum(1)
