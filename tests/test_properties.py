"""Property-based checks (hypothesis) of invariants the equations imply."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import pairwise_gap_loops
from zrcore import ScoreBins
from zrcore.ops import pairwise_gap

BINS = ScoreBins.half_points()


@settings(max_examples=60, deadline=None)
@given(mean=st.floats(1.0, 5.0), std=st.floats(0.0, 3.0))
def test_soft_labels_are_distributions_with_the_given_mean(mean, std):
    q = BINS.soft_labels(torch.tensor([mean], dtype=torch.float64), torch.tensor([std], dtype=torch.float64))[0]
    assert (q >= 0).all()
    assert abs(float(q.sum()) - 1) < 1e-12
    assert abs(float((q * BINS.values.double()).sum()) - mean) < 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(2, 4), g=st.integers(1, 4), shift=st.floats(-2.0, 2.0))
def test_pairwise_gap_is_shift_invariant_and_matches_loops(seed, m, g, shift):
    """Adding the same constant to every prediction and every human score leaves all gaps D unchanged."""
    gen = torch.Generator().manual_seed(seed)
    mean = 1 + 4 * torch.rand(2, m, g, generator=gen, dtype=torch.float64)
    scores = 1 + 0.5 * torch.randint(0, 9, (2, m), generator=gen).double()
    base = pairwise_gap(mean, scores, score_range=4.0, impl="torch")
    moved = pairwise_gap(mean + shift, scores + shift, score_range=4.0, impl="torch")
    torch.testing.assert_close(moved.loss, base.loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(moved.reward, base.reward, rtol=1e-9, atol=1e-12)
    loss, reward, has = pairwise_gap_loops(mean, scores, 4.0)
    torch.testing.assert_close(base.loss, torch.as_tensor(loss, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert torch.equal(base.has_pair, has)
    assert (base.reward <= 1 + 1e-12).all()
