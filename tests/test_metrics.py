import math

import numpy as np
import pytest
import scipy.stats
import torch

from zrcore import ScoreBins, metrics


def test_plcc_srcc_match_scipy(gen):
    x = torch.randn(101, generator=gen, dtype=torch.float64)
    y = x + 0.7 * torch.randn(101, generator=gen, dtype=torch.float64)
    assert abs(metrics.plcc(x, y) - scipy.stats.pearsonr(x.numpy(), y.numpy())[0]) < 1e-10
    # ties on both sides
    xt, yt = (x * 2).round() / 2, (y * 2).round() / 2
    assert abs(metrics.srcc(xt, yt) - scipy.stats.spearmanr(xt.numpy(), yt.numpy())[0]) < 1e-10
    assert abs(metrics.srcc(x, y) - scipy.stats.spearmanr(x.numpy(), y.numpy())[0]) < 1e-10
    torch.testing.assert_close(metrics.rankdata(xt), torch.from_numpy(scipy.stats.rankdata(xt.numpy())))


def test_plcc_degenerate():
    assert math.isnan(metrics.plcc([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="same length"):
        metrics.plcc([1.0, 2.0], [1.0])


def test_hpa_hand_made_ties_and_margin():
    # group a: s = (4, 3, 3, 1.5); predictions rank 4 > 3 correctly, one predicted tie
    pred = [4.2, 3.0, 3.0, 3.0, 2.0, 2.5]
    target = [4.0, 3.0, 3.0, 1.5, 2.0, 2.6]
    groups = ["a", "a", "a", "a", "b", "b"]
    # pairs with non-tied human scores in a: (0,1) ok, (0,2) ok, (0,3) ok, (1,3) predicted tie -> wrong,
    # (2,3) predicted tie -> wrong; (1,2) tied humans -> excluded. group b: (4,5) ok
    assert metrics.hpa_counts(pred, target, groups) == (4, 6)
    assert metrics.hpa(pred, target, groups) == pytest.approx(4 / 6)
    # margin 0.5 (strict): keeps |ds| > 0.5: (0,1) 1.0, (0,2) 1.0, (0,3) 2.5, (1,3) 1.5, (2,3) 1.5; b: 0.6
    assert metrics.hpa_counts(pred, target, groups, margin=0.5) == (4, 6)
    # margin 1.0: keeps (0,3), (1,3), (2,3) -> 1 correct of 3
    assert metrics.hpa_counts(pred, target, groups, margin=1.0) == (1, 3)
    assert math.isnan(metrics.hpa([1.0, 2.0], [3.0, 3.0], [0, 0]))
    # groups as an integer tensor
    assert metrics.hpa_counts(pred, target, torch.tensor([0, 0, 0, 0, 1, 1])) == (4, 6)


def test_gsb_and_aggregate_ratings():
    assert metrics.gsb(6, 3, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="bad"):
        metrics.gsb(1, 1, -1)
    agg = metrics.aggregate_ratings([[1, 5, 3, 4], [2, 4], [3, 3, 3], [5]])
    torch.testing.assert_close(agg, torch.tensor([3.5, 3.0, 3.0, 5.0], dtype=torch.float64))
    t = torch.tensor([[1.0, 5.0, 3.0, float("nan")], [2.0, 4.0, float("nan"), float("nan")]])
    torch.testing.assert_close(metrics.aggregate_ratings(t), torch.tensor([3.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="row 1"):
        metrics.aggregate_ratings([[1.0], []])


def test_calibration_nll_and_wasserstein(gen):
    bins = ScoreBins.half_points()
    lp = torch.log_softmax(torch.randn(5, 9, generator=gen, dtype=torch.float64), -1)
    scores = torch.tensor([1.0, 2.2, 3.5, 4.9, 5.0])
    idx = [0, 2, 5, 8, 8]
    assert metrics.bin_nll(lp, scores, bins) == pytest.approx(-sum(float(lp[i, j]) for i, j in enumerate(idx)) / 5)
    # W1 between point masses is the distance between the points; against itself 0
    a = torch.zeros(2, 9, dtype=torch.float64)
    a[0, 0], a[1, 4] = 1, 1
    b = torch.zeros(2, 9, dtype=torch.float64)
    b[0, 8], b[1, 5] = 1, 1
    torch.testing.assert_close(metrics.wasserstein1(a, b, bins), torch.tensor([4.0, 0.5], dtype=torch.float64))
    q = torch.softmax(torch.randn(3, 9, generator=gen, dtype=torch.float64), -1)
    assert metrics.wasserstein1(q, q, bins).abs().max() < 1e-12
    # agrees with scipy's 1-D Wasserstein distance on weighted samples
    v = bins.values.double().numpy()
    t = metrics.rater_distribution([[3.0, 3.5, 4.0, 4.0]], bins)
    assert float(metrics.wasserstein1(q[:1], t, bins)[0]) == pytest.approx(
        scipy.stats.wasserstein_distance(v, v, q[0].numpy(), t[0].numpy()), abs=1e-12)


def test_ceiling_is_the_true_score_scored_by_a_loop():
    """ceiling_metrics on a synthetic split equals a loop over its records: HPA over same-prompt pairs whose rater
    scores differ, a pair counted right when the true scores order it the same way and half when they tie."""
    import itertools

    from zrcore.data import SyntheticRubric
    from zrcore.training.evaluate import ceiling_metrics

    records = SyntheticRubric(seed=5, image_size=16).records(12, 4, ("realism", "plausibility"))
    ceiling = ceiling_metrics(records)
    for dim in ("realism", "plausibility"):
        rows = [r for r in records if r.dimension == dim]
        for margin, key in ((0.0, "hpa"), (0.5, "hpa_margin")):
            right = total = 0
            for a, b in itertools.combinations(rows, 2):
                if a.prompt_id != b.prompt_id or abs(a.score - b.score) <= margin:
                    continue
                total += 1
                agree = (a.meta["true"] - b.meta["true"]) * (a.score - b.score)
                right += 1.0 if agree > 0 else 0.5 if a.meta["true"] == b.meta["true"] else 0.0
            assert ceiling[dim][key] == pytest.approx(right / total, abs=1e-12)
        t = np.array([r.meta["true"] for r in rows])
        s = np.array([r.score for r in rows])
        assert ceiling[dim]["plcc"] == pytest.approx(float(np.corrcoef(t, s)[0, 1]), abs=1e-9)
    assert ceiling["realism"]["hpa"] < 1  # rater noise and true-score ties leave it short of 1
    assert ceiling["all"]["hpa"] == pytest.approx((ceiling["realism"]["hpa"] + ceiling["plausibility"]["hpa"]) / 2)
    assert ceiling_metrics([r.__class__(r.prompt, r.image, r.dimension, r.score, r.prompt_id) for r in records]) is None
