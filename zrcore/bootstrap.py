"""Paired bootstrap intervals for reward-model comparisons over held-out prompts and training seeds.

Data. A row (a method) has one run per training seed s = 1..S; every run scores the same held-out records
i = (prompt p, dimension d, image) in the same order, with expected score x_i = sum_k q_ik v_k (q_i the predicted
distribution over the bins v = 1, 1.5, ..., 5) and human score y_i. Rows compared share the seeds (run s of one
row and run s of another start from the same seed and see the data in the same order).

Sufficient statistics, per run, dimension d and prompt p, in float64:

    HPA:   c_dp = #{same-prompt pairs (a, b): |y_a - y_b| > margin, y_a != y_b, (x_a - x_b)(y_a - y_b) > 0}
           t_dp = #{same-prompt pairs (a, b): |y_a - y_b| > margin, y_a != y_b}
    PLCC:  m_dp = (n, sum x, sum y, sum x^2, sum y^2, sum xy) over the prompt's records of dimension d
           (x and y shifted by the run's mean per dimension first, which leaves the correlation unchanged and
           keeps the sums well conditioned).

Replicate b = 1..B draws, with one seeded ``torch.Generator``:

    w_b in N^P: multiplicities of the held-out prompts, P draws with replacement (sum_p w_bp = P); the same
                draw for every row and every seed (paired by prompt);
    u_b in N^S: multiplicities of the seeds, S draws with replacement; the same draw for the rows compared
                (paired by seed).

A prompt drawn twice counts its records and its pairs twice (no pair crosses the two copies), so a run's metric
on replicate b is

    HPA_d(b)  = sum_p w_bp c_dp / sum_p w_bp t_dp
    PLCC_d(b) = (N Sxy - Sx Sy) / sqrt((N Sxx - Sx^2)(N Syy - Sy^2)),  (N, Sx, ...) = sum_p w_bp m_dp,

exactly ``zrcore.metrics.hpa`` / ``plcc`` on the records repeated by multiplicity; the average over dimensions
("all") is mean_d of those. A row's replicate value is the mean over the drawn seeds,
theta(b) = (1/S) sum_s u_bs metric_s(b), and its point estimate the mean over the seeds on the full held-out set
(w = 1, u = 1): the mean the table quotes.

Intervals are percentile intervals: the (1 - level)/2 and (1 + level)/2 quantiles (linear interpolation) of
theta(b) over b (2.5 % and 97.5 % at level 0.95). An ordering A > B uses the replicate differences
theta_A(b) - theta_B(b) under the same draws: it *holds* when the interval's lower end is > 0, is *reversed* when
its upper end is < 0, else is *not resolved*. A closeness claim "B within delta of A" holds when the upper end of
the interval of A - B is <= delta: the gap is at most delta at the one-sided (1 + level)/2 confidence of that end.
Replicates where a metric is undefined (no pair with different human scores, or a constant prediction) are left
out of the quantiles and counted in ``Interval.undefined``. B = 2000 and the generator's seed fixed make every
interval deterministic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from zrcore.bins import ScoreBins

METRICS = ("hpa", "plcc")


@dataclass(frozen=True)
class PromptStats:
    """One run's sufficient statistics per (dimension, held-out prompt).

    ``hpa`` [D, P, 2]: (c_dp, t_dp), the right-ordered and all same-prompt pairs with different human scores;
    ``moments`` [D, P, 6]: (n, sum x, sum y, sum x^2, sum y^2, sum xy) of the shifted scores; ``records``: each
    record's (prompt_id, dimension, human score) in file order, which pairing checks against the other runs."""

    name: str
    dimensions: tuple[str, ...]
    prompt_ids: tuple[str, ...]
    hpa: torch.Tensor
    moments: torch.Tensor
    records: tuple[tuple[str, str, float], ...]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile interval [low, high] over the replicates (``undefined``: replicates
    where the metric had no value, left out)."""

    estimate: float
    low: float
    high: float
    undefined: int = 0

    @property
    def verdict(self) -> str:
        """For a difference A - B: "holds" (low > 0), "reversed" (high < 0) or "not resolved" (0 inside)."""
        return "holds" if self.low > 0 else "reversed" if self.high < 0 else "not resolved"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Closeness:
    """The interval of A - B and whether its upper end is <= ``bound`` (B within ``bound`` of A)."""

    interval: Interval
    bound: float

    @property
    def holds(self) -> bool:
        return self.interval.high <= self.bound

    def to_dict(self) -> dict:
        return {"interval": self.interval.to_dict(), "bound": self.bound, "holds": self.holds}


def expected_scores(predictions: Sequence[Mapping], bins: ScoreBins | None = None, name: str = "run") -> torch.Tensor:
    """x_i = sum_k q_ik v_k in float64, v the bin values (default ``ScoreBins.half_points()``: 1, 1.5, ..., 5).
    ValueError naming ``name`` and the record on a wrong number of probabilities or a non-finite one."""
    values = (bins or ScoreBins.half_points())._values64
    if not predictions:
        raise ValueError(f"run {name!r} has no predictions")
    try:
        q = torch.tensor([list(map(float, p["probs"])) for p in predictions], dtype=torch.float64)
    except (ValueError, TypeError) as err:  # ragged rows
        raise ValueError(f"run {name!r}: every prediction must hold {len(values)} probabilities ({err})") from None
    if q.dim() != 2 or q.shape[1] != len(values):
        raise ValueError(f"run {name!r}: every prediction must hold {len(values)} probabilities, got shape "
                         f"{tuple(q.shape)}")
    bad = (~torch.isfinite(q)).any(1).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"run {name!r}: record {i} (prompt_id {predictions[i].get('prompt_id')!r}) has a non-finite "
                         f"probability (NaN prediction); {bad.numel()} such records")
    return q @ values


def prompt_stats(predictions: Sequence[Mapping], name: str = "run", margin: float = 0.0,
                 bins: ScoreBins | None = None) -> PromptStats:
    """Per (dimension d, prompt p): HPA's pair counts (c_dp, t_dp) with ``margin`` (as ``metrics.hpa_counts``)
    and PLCC's sums m_dp = (n, sum x, sum y, sum x^2, sum y^2, sum xy), from one run's per-record predictions
    ({"prompt_id", "dimension", "score", "probs"}, as ``eval_<name>.json`` holds them). Dimensions are sorted,
    prompts kept in order of first appearance."""
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    x = expected_scores(predictions, bins, name)
    try:
        y = torch.tensor([float(p["score"]) for p in predictions], dtype=torch.float64)
        dims_of = [str(p["dimension"]) for p in predictions]
        pids_of = [str(p["prompt_id"]) for p in predictions]
    except KeyError as err:
        raise ValueError(f"run {name!r}: every prediction needs {err.args[0]!r}") from None
    if not torch.isfinite(y).all():
        raise ValueError(f"run {name!r}: record {int((~torch.isfinite(y)).nonzero()[0])} has a non-finite score")
    dimensions = tuple(sorted(set(dims_of)))
    prompt_ids = tuple(dict.fromkeys(pids_of))
    if len(prompt_ids) < 2:
        raise ValueError(f"run {name!r}: a bootstrap over prompts needs at least 2 held-out prompts, got "
                         f"{len(prompt_ids)}")
    dim_index = {d: k for k, d in enumerate(dimensions)}
    pid_index = {p: k for k, p in enumerate(prompt_ids)}
    d = torch.tensor([dim_index[v] for v in dims_of])
    g = torch.tensor([pid_index[v] for v in pids_of])
    D, P = len(dimensions), len(prompt_ids)
    cell = d * P + g  # the (dimension, prompt) of each record

    # PLCC: sums over each cell of the scores shifted by the run's mean per dimension
    n_dim = torch.zeros(D, dtype=torch.float64).index_add_(0, d, torch.ones_like(x))
    xs = x - (torch.zeros(D, dtype=torch.float64).index_add_(0, d, x) / n_dim)[d]
    ys = y - (torch.zeros(D, dtype=torch.float64).index_add_(0, d, y) / n_dim)[d]
    cols = torch.stack([torch.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], 1)
    moments = torch.zeros(D * P, 6, dtype=torch.float64).index_add_(0, cell, cols).view(D, P, 6)

    # HPA: every pair (a, b), a before b, of records in the same cell, listed without an [n, n] mask
    order = torch.argsort(cell, stable=True)
    sorted_cell = cell[order]
    sizes = torch.bincount(sorted_cell, minlength=D * P)
    ends = torch.cumsum(sizes, 0)[sorted_cell]  # one past each record's cell, in sorted positions
    partners = ends - torch.arange(len(order)) - 1
    first = torch.repeat_interleave(torch.arange(len(order)), partners)
    offset = torch.arange(len(first)) - torch.repeat_interleave(torch.cumsum(partners, 0) - partners, partners)
    a, b = order[first], order[first + 1 + offset]
    dy, dx = y[a] - y[b], x[a] - x[b]
    keep = (dy.abs() > margin) & (dy != 0)
    right = keep & (dx * dy > 0)
    counts = torch.zeros(D * P, 2, dtype=torch.float64)
    counts.index_add_(0, cell[a], torch.stack([right, keep], 1).to(torch.float64))
    records = tuple(zip(pids_of, dims_of, y.tolist()))
    return PromptStats(name, dimensions, prompt_ids, counts.view(D, P, 2), moments, records)


def read_eval(path: str | Path, margin: float = 0.0, bins: ScoreBins | None = None) -> PromptStats:
    """``prompt_stats`` of an ``eval_<name>.json`` file (a reward run's per-record predictions), named by its
    path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (a reward run writes eval_final.json, and eval_start.json "
                                f"when it evaluates its start)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "predictions" not in data:
        raise ValueError(f"{path} has no per-record predictions")
    return prompt_stats(data["predictions"], name=str(path), margin=margin, bins=bins)


def check_paired(runs: Sequence[PromptStats]) -> None:
    """ValueError naming the run unless every run holds the same records (prompt_id, dimension, human score) in
    the same order as the first."""
    if not runs:
        raise ValueError("no runs given")
    ref = runs[0]
    for run in runs[1:]:
        if run.records == ref.records:
            continue
        if len(run.records) != len(ref.records):
            why = f"{len(run.records)} held-out records against {len(ref.records)}"
        else:
            i = next(k for k, (u, v) in enumerate(zip(run.records, ref.records)) if u != v)
            why = f"record {i} is {run.records[i]} there and {ref.records[i]} in {ref.name!r}"
        raise ValueError(f"run {run.name!r} is not paired with run {ref.name!r}: {why} (runs compared must score "
                         f"the same held-out records, in the same order)")


def resample(n_prompts: int, n_seeds: int, n_boot: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiplicities (float64) of the prompts [B, P] and of the seeds [B, S]: each row counts P (S) draws with
    replacement, from ``torch.Generator().manual_seed(seed)`` (prompts first, then seeds)."""
    if n_prompts < 1 or n_seeds < 1 or n_boot < 1:
        raise ValueError(f"n_prompts, n_seeds and n_boot must be >= 1, got {n_prompts}, {n_seeds}, {n_boot}")
    gen = torch.Generator().manual_seed(seed)

    def counts(n: int) -> torch.Tensor:
        idx = torch.randint(n, (n_boot, n), generator=gen)
        return torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))

    return counts(n_prompts), counts(n_seeds)


def _metric_per_seed(run: PromptStats, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """HPA_d and PLCC_d [B, D] of one run under prompt multiplicities w [B, P] (NaN where undefined)."""
    c = torch.einsum("bp,dpk->bdk", w, run.hpa)
    hpa = c[..., 0] / c[..., 1]  # 0 / 0 -> NaN: no pair drawn
    n, sx, sy, sxx, syy, sxy = torch.einsum("bp,dpk->bdk", w, run.moments).unbind(-1)
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n  # sums of squares about the replicate's means
    cov = sxy - sx * sy / n
    tiny = 1e-13  # a constant column leaves rounding only: undefined, as metrics.plcc's zero denominator
    ok = (n >= 2) & (vx > tiny * sxx) & (vy > tiny * syy)
    plcc = torch.where(ok, cov / torch.sqrt(vx.clamp_min(0) * vy.clamp_min(0)), torch.full_like(cov, math.nan))
    return {"hpa": hpa, "plcc": plcc}


def replicates(runs: Sequence[PromptStats], prompt_counts: torch.Tensor, seed_counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """A row's value per replicate, metric -> [B, D + 1] (the dimensions, then their mean "all"):
    theta(b) = (1/S) sum_s u_bs metric(run_s; w_b), with w = ``prompt_counts`` [B, P] and u = ``seed_counts``
    [B, S] (``resample``). Seeds with u_bs = 0 do not enter, even where their metric is undefined."""
    runs = list(runs)
    check_paired(runs)
    P, S = len(runs[0].prompt_ids), len(runs)
    if prompt_counts.dim() != 2 or prompt_counts.shape[1] != P:
        raise ValueError(f"prompt_counts must be [B, {P}], got {tuple(prompt_counts.shape)}")
    if seed_counts.shape != (prompt_counts.shape[0], S):
        raise ValueError(f"seed_counts must be [{prompt_counts.shape[0]}, {S}], got {tuple(seed_counts.shape)}")
    w, u = prompt_counts.to(torch.float64), seed_counts.to(torch.float64)
    total = {m: torch.zeros(w.shape[0], len(runs[0].dimensions) + 1, dtype=torch.float64) for m in METRICS}
    for s, run in enumerate(runs):
        drawn = u[:, s:s + 1] > 0
        for m, v in _metric_per_seed(run, w).items():
            v = torch.cat([v, v.mean(1, keepdim=True)], 1)
            total[m] += torch.where(drawn, u[:, s:s + 1] * v, torch.zeros_like(v))
    return {m: t / S for m, t in total.items()}


def estimate(runs: Sequence[PromptStats]) -> dict[str, torch.Tensor]:
    """The point estimate, metric -> [D + 1]: the mean over the seeds of each run's metric on the full held-out
    set (every multiplicity 1)."""
    P = len(runs[0].prompt_ids) if runs else 0
    return {m: v[0] for m, v in replicates(runs, torch.ones(1, P, dtype=torch.float64),
                                           torch.ones(1, len(runs), dtype=torch.float64)).items()}


def _interval(point: float, values: torch.Tensor, level: float) -> Interval:
    ok = values[~torch.isnan(values)]
    if not ok.numel():
        return Interval(point, math.nan, math.nan, values.numel())
    q = torch.quantile(ok, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(point, float(q[0]), float(q[1]), values.numel() - ok.numel())


def paired_bootstrap(runs_a: Sequence[PromptStats], runs_b: Sequence[PromptStats] | None = None, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Interval]]:
    """Percentile intervals, metric ("hpa", "plcc") -> dimension (and "all") -> ``Interval``: of row A alone, or,
    with ``runs_b``, of the difference A - B, replicate by replicate under the same draws (runs_a[s] and
    runs_b[s] share seed s). Deterministic for a given (n_boot, seed); a row's draws do not depend on the row
    it is compared with, only on the numbers of prompts and seeds."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    runs_a = list(runs_a)
    rows = [runs_a] if runs_b is None else [runs_a, list(runs_b)]
    if runs_b is not None and len(rows[1]) != len(runs_a):
        raise ValueError(f"rows compared must have the same seeds, paired by position: got {len(runs_a)} runs and "
                         f"{len(rows[1])}")
    check_paired([r for row in rows for r in row])
    w, u = resample(len(runs_a[0].prompt_ids), len(runs_a), n_boot, seed)
    reps = [replicates(row, w, u) for row in rows]
    points = [estimate(row) for row in rows]
    if runs_b is not None:
        reps = [{m: reps[0][m] - reps[1][m] for m in METRICS}]
        points = [{m: points[0][m] - points[1][m] for m in METRICS}]
    names = [*runs_a[0].dimensions, "all"]
    return {m: {d: _interval(float(points[0][m][k]), reps[0][m][:, k], level) for k, d in enumerate(names)}
            for m in METRICS}


def closeness(runs_a: Sequence[PromptStats], runs_b: Sequence[PromptStats], bound: float = 0.03,
              metric: str = "hpa", dimension: str = "all", **kw) -> Closeness:
    """Whether row B is within ``bound`` of row A on ``metric``: the interval of A - B (``paired_bootstrap``,
    ``kw`` passed on) and holds when its upper end is <= bound, i.e. A exceeds B by at most ``bound`` at the
    one-sided (1 + level)/2 confidence. Not holding does not show a larger gap, only that one is not ruled out."""
    return Closeness(paired_bootstrap(runs_a, runs_b, **kw)[metric][dimension], bound)


def mean_bootstrap(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile interval of a mean over seeds (and prompts): ``values`` [S] (one number per seed) or [S, P]
    (per seed and prompt, the prompts paired across seeds); replicate b is
    (1/S) sum_s u_bs (sum_p w_bp v_sp / P), with the draws of ``resample``. The estimate is the plain mean."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() == 1:
        v = v[:, None]
    if v.dim() != 2 or v.numel() == 0:
        raise ValueError(f"values must be [S] or [S, P] and non-empty, got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("values must be finite")
    S, P = v.shape
    w, u = resample(P, S, n_boot, seed)
    per_seed = w @ v.T / P  # [B, S]
    return _interval(float(v.mean()), (u * per_seed).sum(1) / S, level)
