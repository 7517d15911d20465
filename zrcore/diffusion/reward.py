"""Aggregation of a distributional reward over rubric dimensions (paper section 5)."""

from __future__ import annotations

import torch

from zrcore.bins import ScoreDistribution

AGGREGATIONS = ("mean", "weighted", "min", "pessimistic")


def aggregate_reward(dists: dict[str, ScoreDistribution], mode: str = "mean", weights: dict[str, float] | None = None,
                     kappa: float = 0.0) -> torch.Tensor:
    """R = A({mu_d}) per image [B]:
    "mean": mean_d mu_d; "weighted": sum_d w_d mu_d / sum_d w_d; "min": min_d mu_d;
    "pessimistic": mean_d (mu_d - kappa sqrt(var_d)), which penalises spread (uncertain scores) against hacking."""
    if not dists:
        raise ValueError("dists must hold at least one dimension")
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {list(AGGREGATIONS)}, got {mode!r}")
    if kappa < 0:
        raise ValueError(f"kappa must be non-negative, got {kappa}")
    if kappa != 0 and mode != "pessimistic":
        raise ValueError(f"kappa={kappa} applies to mode='pessimistic' only, got mode={mode!r}: ask for it by name")
    means = torch.stack([d.mean for d in dists.values()])  # [D, B]
    if mode == "mean":
        return means.mean(0)
    if mode == "min":
        return means.min(0).values
    if mode == "weighted":
        if not weights:
            raise ValueError("mode='weighted' needs weights {dimension: w}")
        unknown = set(weights) - set(dists)
        if unknown:
            raise ValueError(f"weights name dimensions that were not scored: {sorted(unknown)}")
        w = torch.tensor([float(weights.get(k, 0.0)) for k in dists], dtype=means.dtype, device=means.device)
        if float(w.sum()) <= 0:
            raise ValueError("weights must sum to a positive number")
        return (w[:, None] * means).sum(0) / w.sum()
    stds = torch.stack([d.var.clamp_min(1e-12).sqrt() for d in dists.values()])
    return (means - kappa * stds).mean(0)
