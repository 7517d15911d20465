"""Evaluation of a reward model on records: PLCC, SRCC, HPA, margin HPA, calibration (bin NLL, Wasserstein-1 to
the raters' distribution) and mean output tokens, per dimension and averaged."""

from __future__ import annotations

import math

import torch

from zrcore import metrics
from zrcore.data.records import Record
from zrcore.seeding import eval_seed

METRIC_KEYS = ("plcc", "srcc", "hpa", "hpa_margin", "nll", "w1", "tokens")


@torch.no_grad()
def predict(rm, records: list[Record], mode: str = "student", samples: int = 2,
            max_reasoning_tokens: int | None = None,
            temperature: float = 1.0, batch_size: int = 16, seed: int = 0, indices: list[int] | None = None,
            rollout_batch_size: int = 0) -> dict:
    """Per-record q (probs [N, K]), mean [N], output tokens [N] and (teacher mode) the first sampled reasoning text,
    ``batch_size`` records per call (dimensions mixed). Teacher mode averages q over ``samples`` sampled reasoning
    traces (a Monte-Carlo estimate of the reasoning-marginal distribution), seeded per (record, sample);
    ``indices`` are the records' global indices (default 0..N-1), so a record's traces do not depend on the batch
    or the process that scores it. ``max_reasoning_tokens`` (teacher mode): default the checkpoint's own cap
    (``rm.sampling``), else the longest description of ``zrcore.data.captions``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_reasoning_tokens is None and mode != "student":  # as the checkpoint was trained, else no description cut
        from zrcore.data.captions import description_token_limit

        max_reasoning_tokens = rm.sampling.get("max_reasoning_tokens") or description_token_limit(rm.tokenizer)
    indices = list(range(len(records))) if indices is None else list(indices)
    probs = torch.zeros(len(records), len(rm.bins))
    tokens = torch.zeros(len(records))
    traces = [""] * len(records)  # teacher mode: each record's first sampled reasoning
    for s in range(0, len(records), batch_size):
        part = list(range(s, min(s + batch_size, len(records))))
        prompts = [records[i].prompt for i in part]
        images = [records[i].image for i in part]
        dims = [records[i].dimension for i in part]
        if mode == "student":
            q = rm.score(prompts, images, dims).probs.float().cpu()
        else:
            seeds = [eval_seed(seed, indices[i], g) for i in part for g in range(samples)]
            j = rm.judge(prompts, images, dims, num_samples=samples, max_reasoning_tokens=max_reasoning_tokens,
                         temperature=temperature, seeds=seeds, rollout_batch_size=rollout_batch_size)
            q = j.distribution.probs.float().mean(1).cpu()
            lens = torch.tensor([len(t) for t in j.reasoning_ids], dtype=torch.float32)
            tokens[part] = lens.view(len(part), samples).mean(1)
            for k, i in enumerate(part):
                traces[i] = j.texts[k * samples]
        probs[part] = q
    mean = probs @ rm.bins.values.float()
    return {"probs": probs, "mean": mean, "tokens": tokens, "traces": traces}


def score_metrics(records: list[Record], probs: torch.Tensor, tokens: torch.Tensor, bins) -> dict:
    """Metrics per dimension (and "all": the average over dimensions) from predictions."""
    mean = probs.double() @ bins.values.double()
    out = {}
    for dim in sorted({r.dimension for r in records}):
        idx = [i for i, r in enumerate(records) if r.dimension == dim]
        target = torch.tensor([records[i].score for i in idx], dtype=torch.float64)
        groups = [records[i].prompt_id for i in idx]
        q = probs[idx].double().clamp_min(1e-12)
        q = q / q.sum(-1, keepdim=True)
        raters = []
        for i in idx:
            r = records[i]
            if r.ratings:
                raters.append(metrics.rater_distribution([r.ratings], bins)[0])
            else:
                raters.append(bins.soft_labels(torch.tensor([r.score], dtype=torch.float64),
                                               torch.tensor([r.std or 0.0], dtype=torch.float64))[0])
        out[dim] = {
            "plcc": metrics.plcc(mean[idx], target),
            "srcc": metrics.srcc(mean[idx], target),
            "hpa": metrics.hpa(mean[idx], target, groups),
            "hpa_margin": metrics.hpa(mean[idx], target, groups, margin=0.5),
            "nll": metrics.bin_nll(q.log(), target, bins),
            "w1": float(metrics.wasserstein1(q, torch.stack(raters), bins).mean()),
            "tokens": float(tokens[idx].mean()),
            "n": len(idx),
        }
    dims = list(out)
    out["all"] = {k: float(sum(out[d][k] for d in dims) / len(dims)) if dims else float("nan") for k in METRIC_KEYS}
    out["all"]["n"] = len(records)
    return out


CEILING_KEYS = ("plcc", "srcc", "hpa", "hpa_margin")


def ceiling_metrics(records: list[Record]) -> dict | None:
    """The metrics of a model that knows each record's true score (``meta["true"]``, the synthetic set's noiseless
    rubric score) and predicts it, breaking its ties at random: what the raters' noise leaves reachable on this split.

    HPA and margin HPA count a pair right when the true scores order it as the raters' scores do, and half right
    when the true scores tie (the expectation of a random tie-break: a model never predicts exact ties, while the
    strict ``metrics.hpa`` counts a predicted tie as wrong). Per dimension and "all" (the mean over dimensions);
    None when some record has no true score (real data)."""
    if not records or any("true" not in (r.meta or {}) for r in records):
        return None
    truth = torch.tensor([float(r.meta["true"]) for r in records], dtype=torch.float64)
    out = {}
    for dim in sorted({r.dimension for r in records}):
        idx = [i for i, r in enumerate(records) if r.dimension == dim]
        target = torch.tensor([records[i].score for i in idx], dtype=torch.float64)
        groups = [records[i].prompt_id for i in idx]
        # ties counted wrong (strict), then right (truth nudged the raters' way): the random tie-break is the mean
        nudged = truth[idx] + 1e-9 * target
        hpa = [(metrics.hpa(truth[idx], target, groups, margin=margin)
                + metrics.hpa(nudged, target, groups, margin=margin)) / 2 for margin in (0.0, 0.5)]
        out[dim] = {"plcc": metrics.plcc(truth[idx], target), "srcc": metrics.srcc(truth[idx], target),
                    "hpa": hpa[0], "hpa_margin": hpa[1], "n": len(idx)}
    dims = list(out)
    out["all"] = {k: float(sum(out[d][k] for d in dims) / len(dims)) for k in CEILING_KEYS} | {"n": len(records)}
    return out


def evaluate_model(rm, records, mode="student", **kw) -> dict:
    pred = predict(rm, records, mode=mode, **kw)
    return score_metrics(records, pred["probs"], pred["tokens"], rm.bins) | {"_pred": pred}


def format_table(results: dict[str, dict | None], dims: list[str] | None = None) -> str:
    """Markdown table: one row per (model, dimension); a None result is left out, a missing metric is "-" (the
    ceiling rows of ``ceiling_metrics`` have no calibration or length)."""
    lines = ["| model | dimension | PLCC | SRCC | HPA | margin HPA | bin NLL | W1 | output tokens |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    def f(v, digits: int = 3) -> str:
        if v is None:
            return "-"
        return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.{digits}f}"

    for name, res in results.items():
        if res is None:
            continue
        for dim in dims or [d for d in res if not d.startswith("_")]:
            m = res[dim]
            lines.append(f"| {name} | {dim} | {f(m['plcc'])} | {f(m['srcc'])} | {f(m['hpa'])} | {f(m['hpa_margin'])} "
                         f"| {f(m.get('nll'))} | {f(m.get('w1'))} | {f(m.get('tokens'), 1)} |")
    return "\n".join(lines)
