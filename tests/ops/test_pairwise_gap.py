import pytest
import torch

from tests.ops.conftest import device, impls
from tests.reference import pairwise_gap_loops
from zrcore.ops import pairwise_gap

D = torch.float64


@pytest.fixture(params=[*impls(), "auto"])
def impl(request):
    """The reference ("torch"), the Triton kernel where it runs, and "auto" (on CPU the sorted kernel)."""
    return request.param


def _inputs(gen, p, m, g, masked=True, tie_prob=0.3):
    mean = 1 + 4 * torch.rand(p, m, g, generator=gen, dtype=D)
    scores = 1 + 0.5 * torch.randint(0, 9, (p, m), generator=gen).to(D)
    ties = torch.rand(p, m, generator=gen) < tie_prob
    scores = torch.where(ties, scores[:, :1].expand(p, m), scores)
    mask = (torch.rand(p, m, g, generator=gen) > 0.25) if masked else None
    if masked and p > 1 and m > 1:
        mask[0, 1] = False  # a candidate with every sample masked
    return mean, scores, mask


@pytest.mark.parametrize("p,m,g", [(1, 2, 1), (3, 2, 5), (4, 3, 5), (2, 5, 3), (1, 4, 16), (1, 5, 17)])
@pytest.mark.parametrize("include_ties", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_loop_reference(gen, impl, p, m, g, include_ties, masked):
    dev = device()
    mean, scores, mask = _inputs(gen, p, m, g, masked)
    mean.requires_grad_()
    loss_ref, reward_ref, has_ref = pairwise_gap_loops(mean, scores, 4.0, mask, include_ties)
    x = mean.detach().float().to(dev).requires_grad_()
    out = pairwise_gap(x, scores.float().to(dev), score_range=4.0, mask=None if mask is None else mask.to(dev),
                       include_ties=include_ties, impl=impl)
    assert out.reward.dtype == torch.float32 and not out.reward.requires_grad
    torch.testing.assert_close(out.loss.double().cpu(), torch.as_tensor(loss_ref, dtype=D), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.reward.double().cpu(), reward_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.has_pair.cpu(), has_ref)
    if torch.is_tensor(loss_ref) and loss_ref.requires_grad:  # a loss gradient other than 1 scales the result
        (g_ref,) = torch.autograd.grad(2.5 * loss_ref, mean)
        (g_out,) = torch.autograd.grad(2.5 * out.loss, x)
        torch.testing.assert_close(g_out.double().cpu(), g_ref, rtol=1e-5, atol=1e-6)
    if impl == "triton":  # the last program left the shared ticket counter at zero
        from zrcore.ops._dispatch import ticket_counters

        assert int(ticket_counters(x.device, 1).abs().sum()) == 0


def test_gradcheck_float64(gen):
    mean, scores, mask = _inputs(gen, 3, 3, 4)
    mean = mean + 1e-3 * torch.arange(36, dtype=D).reshape(3, 3, 4)  # keep |D| away from 0 for finite differences
    mean.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: pairwise_gap(x, scores, score_range=4.0, mask=mask, impl="torch").loss,
                                    (mean,))


def test_no_pairs_anywhere(impl):
    dev = device()
    mean = torch.rand(2, 3, 4, device=dev, requires_grad=True)
    out = pairwise_gap(mean, torch.full((2, 3), 3.0, device=dev), score_range=4.0, impl=impl)
    assert float(out.loss) == 0.0 and not out.has_pair.any() and float(out.reward.abs().sum()) == 0.0
    out.loss.backward()
    assert float(mean.grad.abs().sum()) == 0.0


def test_bf16_mean(gen, impl):
    dev = device()
    mean, scores, mask = _inputs(gen, 4, 3, 5)
    x = mean.to(dev, torch.bfloat16).requires_grad_()
    out = pairwise_gap(x, scores.to(dev), score_range=4.0, mask=mask.to(dev), impl=impl)
    ref, reward_ref, _ = pairwise_gap_loops(x.detach().double().cpu(), scores, 4.0, mask)
    assert abs(float(out.loss) - float(ref)) <= 1e-2 * abs(float(ref)) + 1e-6
    out.loss.backward()
    assert x.grad.dtype == torch.bfloat16


def test_bad_inputs():
    mean = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="scores must have shape"):
        pairwise_gap(mean, torch.rand(2, 2), score_range=4.0)
    with pytest.raises(ValueError, match="score_range"):
        pairwise_gap(mean, torch.rand(2, 3), score_range=0)
    with pytest.raises(TypeError, match="mask"):
        pairwise_gap(mean, torch.rand(2, 3), score_range=4.0, mask=torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="mask"):
        pairwise_gap(mean, torch.rand(2, 3), score_range=4.0, mask=torch.ones(2, 3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mean"):
        pairwise_gap(torch.rand(6, 4), torch.rand(2, 3), score_range=4.0)


@pytest.mark.cuda
def test_last_program_reduction_is_exact_on_every_call():
    """The forward's cross-program reduction (the program finishing last sums the per-prompt losses) against the
    torch path, many times at the benchmark shape: a missed store of another program would show as a wrong loss."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(200):
        mean = 1 + 4 * torch.rand(1024, 4, 16, device="cuda", generator=g)
        scores = 1 + 0.5 * torch.randint(0, 9, (1024, 4), device="cuda", generator=g).float()
        mask = torch.rand(1024, 4, 16, device="cuda", generator=g) > 0.1
        got = pairwise_gap(mean, scores, score_range=4.0, mask=mask, impl="triton").loss
        want = pairwise_gap(mean, scores, score_range=4.0, mask=mask, impl="torch").loss
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_ties", [False, True])
def test_sorted_kernel_float64_and_exact_zero_gaps(gen, include_ties):
    """The sorted kernel in float64 against the loops, with every gap of tied candidates exactly zero (equal means
    and equal scores): sign(0) = 0 there, as in the reference."""
    mean, scores, mask = _inputs(gen, 4, 3, 6, masked=True, tie_prob=0.5)
    mean[1] = 3.0  # prompt 1: all means equal, so tied candidates give D = 0 exactly
    mean.requires_grad_()
    loss_ref, reward_ref, has_ref = pairwise_gap_loops(mean, scores, 4.0, mask, include_ties)
    x = mean.detach().clone().requires_grad_()
    out = pairwise_gap(x, scores, score_range=4.0, mask=mask, include_ties=include_ties)
    torch.testing.assert_close(out.loss, torch.as_tensor(loss_ref, dtype=D), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.reward.double(), reward_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.has_pair, has_ref)
    if torch.is_tensor(loss_ref) and loss_ref.requires_grad:
        (g_ref,) = torch.autograd.grad(loss_ref, mean)
        (g_out,) = torch.autograd.grad(out.loss, x)
        torch.testing.assert_close(g_out, g_ref, rtol=1e-12, atol=1e-12)
