"""zrcore.bootstrap: the vectorised replicates equal the metrics recomputed on records repeated by multiplicity, the
intervals and verdicts behave, and unpaired or broken input is refused."""

import json
import math

import pytest
import torch

from zrcore import bootstrap, metrics
from zrcore.bins import ScoreBins

BINS = ScoreBins.half_points()


def predictions(gen, n_prompts=4, dims=("alignment", "realism"), images=3, skill=1.0, scores=None):
    """Held-out records (prompt_id, dimension, human score on a 1/3 grid, so that ties occur) and a model whose
    expected score follows the human one by ``skill`` plus noise."""
    rows, k = [], 0
    for p in range(n_prompts):
        for d in dims:
            for _ in range(images):
                y = scores[k] if scores is not None else round(float(torch.rand((), generator=gen)) * 12) / 3 + 1
                logits = torch.randn(len(BINS), generator=gen, dtype=torch.float64) \
                    - skill * (BINS._values64 - y).abs() * 3
                rows.append({"prompt": f"prompt {p}", "dimension": d, "score": y, "prompt_id": f"p{p}",
                             "probs": torch.softmax(logits, 0).tolist(), "tokens": 0.0})
                k += 1
    return rows


def seeds(gen, n_seeds=2, **kw):
    """Runs of one row: the same held-out records, predictions differing by seed."""
    first = predictions(gen, **kw)
    scores = [r["score"] for r in first]
    return [first] + [predictions(gen, scores=scores, **kw) for _ in range(n_seeds - 1)]


def slow_replicate(preds_per_seed, w, u, dims):
    """One replicate by the definition: each drawn seed's records repeated by the prompts' multiplicities (each copy
    its own group, so no pair crosses copies), metrics.hpa / plcc on that, mean over the drawn seeds."""
    out = {"hpa": [0.0] * (len(dims) + 1), "plcc": [0.0] * (len(dims) + 1)}
    pids = list(dict.fromkeys(r["prompt_id"] for r in preds_per_seed[0]))
    for s, preds in enumerate(preds_per_seed):
        for _ in range(int(u[s])):
            vals = {"hpa": [], "plcc": []}
            for d in dims:
                x, y, g = [], [], []
                for p, pid in enumerate(pids):
                    for copy in range(int(w[p])):
                        for r in preds:
                            if r["prompt_id"] == pid and r["dimension"] == d:
                                x.append(float(torch.tensor(r["probs"], dtype=torch.float64) @ BINS._values64))
                                y.append(r["score"])
                                g.append(f"{pid}#{copy}")
                vals["hpa"].append(metrics.hpa(x, y, g))
                vals["plcc"].append(metrics.plcc(x, y))
            for m in vals:
                v = vals[m] + [sum(vals[m]) / len(dims)]
                out[m] = [a + b / len(preds_per_seed) for a, b in zip(out[m], v)]
    return out


def test_vectorised_replicates_equal_the_metrics_on_repeated_records(gen):
    dims = ("alignment", "plausibility", "realism")
    rows = seeds(gen, n_seeds=2, n_prompts=4, dims=dims, images=3, skill=0.3)
    runs = [bootstrap.prompt_stats(r, name=f"s{i}") for i, r in enumerate(rows)]
    w, u = bootstrap.resample(4, 2, n_boot=12, seed=int(torch.randint(1000, (), generator=gen)))
    fast = bootstrap.replicates(runs, w, u)
    for b in range(w.shape[0]):
        slow = slow_replicate(rows, w[b], u[b], dims)
        for m in ("hpa", "plcc"):
            torch.testing.assert_close(fast[m][b], torch.tensor(slow[m], dtype=torch.float64), rtol=0, atol=1e-12,
                                       equal_nan=True)
    # the point estimate: the mean over seeds of the metrics on the whole held-out set
    point = bootstrap.estimate(runs)
    whole = slow_replicate(rows, torch.ones(4), torch.ones(2), dims)
    for m in ("hpa", "plcc"):
        torch.testing.assert_close(point[m], torch.tensor(whole[m], dtype=torch.float64), rtol=0, atol=1e-12)


def test_pair_counts_equal_hpa_counts_with_a_margin(gen):
    rows = predictions(gen, n_prompts=5, dims=("realism",), images=4, skill=0.5)
    stats = bootstrap.prompt_stats(rows, margin=0.5)
    x = bootstrap.expected_scores(rows)
    correct, total = metrics.hpa_counts(x, [r["score"] for r in rows], [r["prompt_id"] for r in rows], margin=0.5)
    assert stats.hpa[0].sum(0).tolist() == [correct, total]


def test_interval_covers_the_estimate_and_is_deterministic(gen):
    runs = [bootstrap.prompt_stats(r) for r in seeds(gen, n_seeds=3, n_prompts=12, images=4, skill=0.5)]
    res = bootstrap.paired_bootstrap(runs, n_boot=500)
    for m in ("hpa", "plcc"):
        for iv in res[m].values():
            assert iv.low <= iv.estimate <= iv.high and iv.low < iv.high
    assert bootstrap.paired_bootstrap(runs, n_boot=500) == res
    assert bootstrap.paired_bootstrap(runs, n_boot=500, seed=1) != res


def test_a_clear_difference_holds_and_its_reverse_is_reversed(gen):
    kw = dict(n_seeds=3, n_prompts=16, images=4)
    good = seeds(gen, skill=2.0, **kw)
    scores = [r["score"] for r in good[0]]
    bad = [predictions(gen, skill=0.0, scores=scores, n_prompts=16, images=4) for _ in range(3)]
    a = [bootstrap.prompt_stats(r, name=f"good{i}") for i, r in enumerate(good)]
    b = [bootstrap.prompt_stats(r, name=f"bad{i}") for i, r in enumerate(bad)]
    for m in ("hpa", "plcc"):
        assert bootstrap.paired_bootstrap(a, b, n_boot=500)[m]["all"].verdict == "holds"
        assert bootstrap.paired_bootstrap(b, a, n_boot=500)[m]["all"].verdict == "reversed"
    assert not bootstrap.closeness(a, b, bound=0.03, n_boot=500).holds


def test_identical_rows_differ_by_exactly_zero(gen):
    runs = [bootstrap.prompt_stats(r) for r in seeds(gen, n_seeds=2, n_prompts=6)]
    res = bootstrap.paired_bootstrap(runs, list(runs), n_boot=300)
    for m in ("hpa", "plcc"):
        for iv in res[m].values():
            assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
            assert iv.verdict == "not resolved"
    close = bootstrap.closeness(runs, runs, bound=0.03, n_boot=300)
    assert close.holds and close.to_dict()["interval"]["high"] == 0.0


def test_unpaired_runs_are_refused_naming_the_run(gen):
    rows = predictions(gen, n_prompts=4)
    ref = bootstrap.prompt_stats(rows, name="ref")
    changes = {"other-ids": lambda r: [dict(x, prompt_id=x["prompt_id"] + "x") for x in r],
               "other-order": lambda r: r[::-1],
               "other-scores": lambda r: [dict(x, score=x["score"] + 0.5) for x in r],
               "fewer-records": lambda r: r[:-1]}
    for name, change in changes.items():
        other = bootstrap.prompt_stats(change(rows), name=name)
        with pytest.raises(ValueError, match=f"run '{name}' is not paired with run 'ref'"):
            bootstrap.paired_bootstrap([ref], [other])
        with pytest.raises(ValueError, match=name):
            bootstrap.paired_bootstrap([ref, other])
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap.paired_bootstrap([ref, ref], [ref])


def test_broken_predictions_are_refused(gen, tmp_path):
    rows = predictions(gen, n_prompts=3)
    rows[4]["probs"][2] = math.nan
    with pytest.raises(ValueError, match="run 'x': record 4 .*non-finite"):
        bootstrap.prompt_stats(rows, name="x")
    with pytest.raises(ValueError, match="at least 2 held-out prompts"):
        bootstrap.prompt_stats(predictions(gen, n_prompts=1))
    with pytest.raises(ValueError, match="9 probabilities"):
        bootstrap.prompt_stats([dict(r, probs=r["probs"][:5]) for r in predictions(gen, n_prompts=2)])
    path = tmp_path / "eval_final.json"
    path.write_text(json.dumps({"metrics": {}, "predictions": rows}))  # NaN written as json.dumps writes it
    with pytest.raises(ValueError, match="eval_final.json': record 4"):
        bootstrap.read_eval(path)
    with pytest.raises(FileNotFoundError, match="eval_start.json"):
        bootstrap.read_eval(tmp_path / "eval_start.json")


def test_mean_bootstrap_over_seeds_and_prompts():
    iv = bootstrap.mean_bootstrap([0.1, 0.2, 0.3])
    assert iv.estimate == pytest.approx(0.2) and (iv.low, iv.high) == pytest.approx((0.1, 0.3))  # 1/27 > 2.5 %
    assert bootstrap.mean_bootstrap([-0.1, 0.2, 0.3]).verdict == "not resolved"
    per_prompt = torch.tensor([[0.1, 0.3, 0.2, 0.4], [0.2, 0.2, 0.3, 0.1]])
    iv = bootstrap.mean_bootstrap(per_prompt, n_boot=400)
    assert iv.estimate == pytest.approx(0.225) and 0 < iv.low < iv.estimate < iv.high
    with pytest.raises(ValueError, match="finite"):
        bootstrap.mean_bootstrap([0.1, math.nan])
