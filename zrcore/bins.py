"""The rubric scale (score bins) and the score distribution a reward model outputs over it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class ScoreDistribution(NamedTuple):
    """A distribution q over K score bins, per leading index.

    ``log_probs`` [..., K] (fp32), ``mean`` = sum_k s_k q_k [...], ``var`` = sum_k (s_k - mean)^2 q_k [...].
    """

    log_probs: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    @property
    def std(self) -> torch.Tensor:
        return self.var.clamp_min(0).sqrt()

    def __repr__(self) -> str:
        return f"ScoreDistribution(shape={list(self.mean.shape)}, K={self.log_probs.shape[-1]}, {_summary(self.mean)})"


def _summary(mean: torch.Tensor, shown: int = 4) -> str:
    """The first ``shown`` means, and how many more: a one-line view of a tensor of expected scores."""
    flat = mean.detach().float().reshape(-1)
    head = ", ".join(f"{v:.3g}" for v in flat[:shown].tolist())
    more = f", ... {flat.numel() - shown} more" if flat.numel() > shown else ""
    return f"mean=[{head}{more}]"


def _format_label(v: float) -> str:
    return f"{v:g}"


class ScoreBins:
    """The rubric scale S = (s_1 < ... < s_K) with one text label per bin (the score tokens)."""

    def __init__(self, values: Sequence[float], labels: Sequence[str] | None = None):
        vals = [float(v) for v in values]
        if len(vals) == 0:
            raise ValueError("values must hold at least one bin, got an empty sequence")
        if any(b <= a for a, b in zip(vals[:-1], vals[1:])):
            raise ValueError(f"values must be strictly increasing, got {vals}")
        if any(v != v or v in (float("inf"), float("-inf")) for v in vals):
            raise ValueError(f"values must be finite, got {vals}")
        if labels is None:
            labels = [_format_label(v) for v in vals]
        labels = [str(lab) for lab in labels]
        if len(labels) != len(vals):
            raise ValueError(f"labels has {len(labels)} entries but values has {len(vals)}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        if any(lab == "" for lab in labels):
            raise ValueError("labels must be non-empty strings")
        self._values = torch.tensor(vals, dtype=torch.float32)
        self._values64 = torch.tensor(vals, dtype=torch.float64)
        self.labels: list[str] = labels

    @classmethod
    def half_points(cls, low: float = 1.0, high: float = 5.0) -> ScoreBins:
        """Bins low, low+0.5, ..., high (default 1.0..5.0: K = 9, labels "1", "1.5", ..., "5")."""
        steps = (high - low) / 0.5
        if steps < 0 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"high - low must be a non-negative multiple of 0.5, got low={low}, high={high}")
        return cls([low + 0.5 * i for i in range(int(round(steps)) + 1)])

    @property
    def values(self) -> torch.Tensor:
        return self._values

    @property
    def min(self) -> float:
        return float(self._values64[0])

    @property
    def max(self) -> float:
        return float(self._values64[-1])

    @property
    def range(self) -> float:
        """R = s_max - s_min (1.0 for a single bin, so that divisions by R stay defined)."""
        r = self.max - self.min
        return r if r > 0 else 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ScoreBins(values={[float(v) for v in self._values64]}, labels={self.labels})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoreBins) and self.labels == other.labels and torch.equal(
            self._values64, other._values64
        )

    def __hash__(self) -> int:
        return hash(tuple(self.labels))

    def _check_in_range(self, name: str, scores: torch.Tensor, tol: float = 1e-6) -> None:
        if scores.numel() == 0:
            return
        if torch.isnan(scores).any():
            raise ValueError(f"{name} contains NaN")
        lo, hi = float(scores.min()), float(scores.max())
        if lo < self.min - tol or hi > self.max + tol:
            raise ValueError(f"{name} must lie in the bins' range [{self.min:g}, {self.max:g}], got [{lo:g}, {hi:g}]")

    def index(self, scores) -> torch.Tensor:
        """Index of the nearest bin for each score (ties go to the lower bin). Scores outside the range raise."""
        s = torch.as_tensor(scores, dtype=torch.float64)
        self._check_in_range("scores", s)
        vals = self._values64.to(s.device)
        return (s.unsqueeze(-1) - vals).abs().argmin(dim=-1)

    def soft_labels(self, mean, std) -> torch.Tensor:
        """A discretised Gaussian over the bins: t_k ~ exp(-(s_k - c)^2 / (2 std^2)), sums to 1, sum_k s_k t_k = mean.

        The centre c is found by bisection so the expectation matches ``mean`` (the truncation at the ends of the
        scale would otherwise pull it inwards); a final mixing with an end bin removes the last rounding error.
        Where ``std`` is below 1e-3 of the bin spacing the two neighbouring bins share the mass linearly. Returns
        float64 for float64 input, else float32; shape mean.shape + (K,).
        """
        m = torch.as_tensor(mean, dtype=torch.float64)
        sd = torch.as_tensor(std, dtype=torch.float64)
        m, sd = torch.broadcast_tensors(m, sd)
        out_dtype = torch.float64 if torch.as_tensor(mean).dtype == torch.float64 else torch.float32
        self._check_in_range("mean", m)
        if sd.numel() and (torch.isnan(sd).any() or (sd < 0).any()):
            raise ValueError("std must be non-negative (and not NaN)")
        m = m.clamp(self.min, self.max)
        vals = self._values64.to(m.device)
        k = len(vals)
        if k == 1:
            return torch.ones(*m.shape, 1, dtype=out_dtype, device=m.device)
        two_point = self._two_point(m, vals)
        spacing = float((vals[1:] - vals[:-1]).min())
        sd_safe = sd.clamp_min(1e-3 * spacing)
        # bisection over the centre c: the tilted Gaussian's mean is increasing in c
        span = 1e3 * (self.range + float(sd_safe.max()) if sd_safe.numel() else 1.0)
        lo = torch.full_like(m, self.min - span)
        hi = torch.full_like(m, self.max + span)
        for _ in range(200):
            c = 0.5 * (lo + hi)
            q = torch.softmax(-((vals - c.unsqueeze(-1)) ** 2) / (2 * sd_safe.unsqueeze(-1) ** 2), dim=-1)
            too_low = (q * vals).sum(-1) < m
            lo = torch.where(too_low, c, lo)
            hi = torch.where(too_low, hi, c)
        c = 0.5 * (lo + hi)
        q = torch.softmax(-((vals - c.unsqueeze(-1)) ** 2) / (2 * sd_safe.unsqueeze(-1) ** 2), dim=-1)
        # remove the residual error by mixing in a little of the end bin on the far side
        residual = m - (q * vals).sum(-1)
        end = torch.where(residual > 0, torch.full_like(m, self.max), torch.full_like(m, self.min))
        denom = end - (q * vals).sum(-1)
        t = torch.where(denom.abs() > 0, residual / torch.where(denom.abs() > 0, denom, torch.ones_like(denom)), 0.0)
        t = t.clamp(0.0, 1.0)
        end_onehot = torch.zeros_like(q)
        end_onehot[..., -1] = (residual > 0).to(q.dtype)
        end_onehot[..., 0] = (residual <= 0).to(q.dtype)
        q = (1 - t).unsqueeze(-1) * q + t.unsqueeze(-1) * end_onehot
        at_edge = (m <= self.min) | (m >= self.max)
        use_two_point = (sd < 1e-3 * spacing) | at_edge
        q = torch.where(use_two_point.unsqueeze(-1), two_point, q)
        return q.to(out_dtype)

    @staticmethod
    def _two_point(m: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Mass split linearly between the two bins around m (exact expectation m)."""
        k = len(vals)
        upper = torch.searchsorted(vals, m.contiguous(), right=False).clamp(1, k - 1)
        lower = upper - 1
        s_lo, s_hi = vals[lower], vals[upper]
        w_hi = ((m - s_lo) / (s_hi - s_lo)).clamp(0, 1)
        q = torch.zeros(*m.shape, k, dtype=torch.float64, device=m.device)
        q.scatter_(-1, lower.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
        q.scatter_add_(-1, upper.unsqueeze(-1), w_hi.unsqueeze(-1))
        return q
