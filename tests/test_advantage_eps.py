"""Eq. 3's epsilon: A = (r - mean(r)) / (std(r) + eps), std with Bessel's correction, checked against a float64 hand
computation on a group whose rewards barely differ (where eps matters)."""

import torch

from zrcore import losses


def _eq3(rewards: list[float], eps: float) -> list[float]:
    mean = sum(rewards) / len(rewards)
    std = (sum((x - mean) ** 2 for x in rewards) / (len(rewards) - 1)) ** 0.5
    return [(x - mean) / (std + eps) for x in rewards]


def test_a_larger_eps_shrinks_the_advantages_of_a_small_spread_group():
    group = [0.5, 0.5012, 0.4991, 0.5003]  # std about 9e-4: eps of that order halves the advantages
    r = torch.tensor([group], dtype=torch.float64)
    previous = None
    for eps in (0.0, 1e-4, 1e-3, 1e-2):
        a = losses.group_advantages(r, eps=eps)[0]
        torch.testing.assert_close(a, torch.tensor(_eq3(group, eps), dtype=torch.float64), rtol=1e-12, atol=1e-12)
        if previous is not None:
            assert (a.abs() < previous.abs()).all()
        previous = a
    std = torch.tensor(group, dtype=torch.float64).std()
    a4, a2 = losses.group_advantages(r, eps=1e-4)[0], losses.group_advantages(r, eps=1e-2)[0]
    torch.testing.assert_close(a2 / a4, torch.full_like(a2, float((std + 1e-4) / (std + 1e-2))))


def test_eps_zero_gives_a_group_of_equal_rewards_no_advantage():
    r = torch.tensor([[0.25, 0.25, 0.25], [0.1, 0.3, 0.2]], dtype=torch.float64)
    a = losses.group_advantages(r, eps=0.0)
    assert torch.equal(a[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(a[1], torch.tensor(_eq3([0.1, 0.3, 0.2], 0.0), dtype=torch.float64))
