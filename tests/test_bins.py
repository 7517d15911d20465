import pytest
import torch

from zrcore import ScoreBins


def test_half_points_default():
    b = ScoreBins.half_points()
    assert len(b) == 9
    assert b.labels == ["1", "1.5", "2", "2.5", "3", "3.5", "4", "4.5", "5"]
    assert b.values.dtype == torch.float32
    assert torch.equal(b.values, torch.arange(1.0, 5.01, 0.5))
    assert (b.min, b.max, b.range) == (1.0, 5.0, 4.0)


def test_index_nearest_and_range_check():
    b = ScoreBins.half_points()
    assert b.index(torch.tensor([1.0, 1.2, 1.3, 4.76, 5.0])).tolist() == [0, 0, 1, 8, 8]
    with pytest.raises(ValueError, match="scores"):
        b.index(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="scores"):
        b.index(torch.tensor([5.6]))


def test_custom_bins_and_bad_bins():
    b = ScoreBins(values=[0, 1, 2], labels=["A", "B", "C"])
    assert b.labels == ["A", "B", "C"] and b.range == 2.0
    with pytest.raises(ValueError, match="values"):
        ScoreBins(values=[])
    with pytest.raises(ValueError, match="increasing"):
        ScoreBins(values=[1, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        ScoreBins(values=[1, 2], labels=["a"])
    with pytest.raises(ValueError, match="labels"):
        ScoreBins(values=[1, 2], labels=["a", "a"])


def test_soft_labels_exact_mean_and_shape(gen):
    b = ScoreBins.half_points()
    mean = 1 + 4 * torch.rand(200, generator=gen, dtype=torch.float64)
    std = 0.05 + 2 * torch.rand(200, generator=gen, dtype=torch.float64)
    q = b.soft_labels(mean, std)
    assert q.shape == (200, 9) and q.dtype == torch.float64
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(200, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((q * b.values.double()).sum(-1), mean, atol=1e-10, rtol=0)


def test_soft_labels_is_gaussian_shaped_in_the_middle():
    b = ScoreBins.half_points()
    q = b.soft_labels(torch.tensor([3.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))[0]
    # symmetric around the centre, peaked at 3.0, ratio of neighbours is exp(-0.5^2 / (2 * 0.5^2))
    torch.testing.assert_close(q, q.flip(0))
    assert int(q.argmax()) == 4
    torch.testing.assert_close(q[3] / q[4], torch.tensor(torch.e**-0.5, dtype=torch.float64), rtol=1e-9, atol=0)


def test_soft_labels_tiny_std_two_neighbours():
    b = ScoreBins.half_points()
    q = b.soft_labels(torch.tensor([2.2, 4.0, 1.0, 5.0]), torch.tensor([0.0, 0.0, 0.3, 0.3]))
    assert q.dtype == torch.float32
    expected = torch.zeros(4, 9)
    expected[0, 2], expected[0, 3] = 0.6, 0.4
    expected[1, 6] = 1.0
    expected[2, 0] = 1.0  # an end of the scale can only be reached by a point mass
    expected[3, 8] = 1.0
    torch.testing.assert_close(q, expected, atol=1e-6, rtol=0)


def test_soft_labels_bad_input():
    b = ScoreBins.half_points()
    with pytest.raises(ValueError, match="std"):
        b.soft_labels(torch.tensor([3.0]), torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="mean"):
        b.soft_labels(torch.tensor([6.0]), torch.tensor([0.1]))
