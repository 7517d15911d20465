import pytest
import torch

from tests.ops.conftest import device, impls
from tests.reference import score_distribution_naive
from zrcore import ScoreBins
from zrcore.ops import ScoreHead, score_distribution, score_distribution_from_logits

D = torch.float64
VALUES = ScoreBins.half_points().values


def _inputs(gen, n, h, v, k=9, dtype=torch.float32, bias=True):
    hidden = torch.randn(n, h, generator=gen, dtype=D)
    weight = torch.randn(v, h, generator=gen, dtype=D) / h**0.5
    ids = torch.randperm(v, generator=gen)[:k]
    b = torch.randn(v, generator=gen, dtype=D) if bias else None
    values = torch.linspace(1, 5, k, dtype=D) if k != 9 else VALUES.double()
    return hidden, weight, ids, b, values


def _to(x, dtype, dev):
    return None if x is None else x.to(dev, dtype).requires_grad_()


@pytest.mark.parametrize("n,h,v,k", [(1, 8, 50, 9), (37, 33, 101, 9), (16, 64, 300, 5), (5, 20, 64, 32)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_float64_reference_forward_and_backward(gen, impl, n, h, v, k, temperature):
    dev = device()
    hidden, weight, ids, b, values = _inputs(gen, n, h, v, k)
    ref = score_distribution_naive(hidden.requires_grad_(), weight.requires_grad_(), ids, values,
                                   b.requires_grad_(), temperature)
    hs, ws, bs = _to(hidden.detach(), torch.float32, dev), _to(weight.detach(), torch.float32, dev), _to(b.detach(), torch.float32, dev)
    out = score_distribution(hs, ws, ids.to(dev), values.float().to(dev), bias=bs, temperature=temperature, impl=impl)
    assert out.log_probs.dtype == torch.float32 and out.log_probs.shape == (n, k)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-5, atol=1e-5)
    go = [torch.randn(x.shape, generator=gen, dtype=D) for x in ref]
    grads_ref = torch.autograd.grad(ref, (hidden, weight, b), go)
    grads = torch.autograd.grad(tuple(out), (hs, ws, bs), [g.float().to(dev) for g in go])
    for got, want in zip(grads, grads_ref):
        err = (got.double().cpu() - want).norm() / want.norm().clamp_min(1e-30)
        assert err < 1e-5, err
    # the weight gradient touches only the K score rows
    other = torch.ones(v, dtype=torch.bool)
    other[ids] = False
    assert grads[1].cpu()[other].abs().max() == 0


@pytest.mark.parametrize("split", [1, 2, 3, 5, "auto"])
def test_hidden_split_across_programs(gen, monkeypatch, split):
    """Programs sharing a row block's hidden dimension: partial logits summed by the last program of the block
    (forward), hidden-gradient slices written by each (backward). Odd H and N, every slice count; the ticket
    counters are left at zero and a second call gives the same bits."""
    if "triton" not in impls():
        pytest.skip("needs the Triton path (CUDA or TRITON_INTERPRET=1)")
    from zrcore.ops._dispatch import ticket_counters
    from zrcore.ops.score_distribution import LAUNCH

    monkeypatch.setitem(LAUNCH, "block_h", 16)
    monkeypatch.setitem(LAUNCH, "split_h", split)
    dev = device()
    n, h, v = 37, 70, 101
    hidden, weight, ids, b, values = _inputs(gen, n, h, v)
    ref = score_distribution_naive(hidden.requires_grad_(), weight, ids, values, b)
    hs = _to(hidden.detach(), torch.float32, dev)
    args = (weight.float().to(dev), ids.to(dev), values.float().to(dev))
    out = score_distribution(hs, *args, bias=b.float().to(dev), impl="triton")
    for got, want in zip(out, ref):
        torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-5, atol=1e-5)
    go = [torch.randn(x.shape, generator=gen, dtype=D) for x in ref]
    (want,) = torch.autograd.grad(ref, (hidden,), go)
    (got,) = torch.autograd.grad(tuple(out), (hs,), [x.float().to(dev) for x in go])
    assert float((got.double().cpu() - want).norm() / want.norm()) < 1e-5
    again = score_distribution(hs.detach(), *args, bias=b.float().to(dev), impl="triton")
    for x, y in zip(out, again):
        assert torch.equal(x.detach(), y)
    assert int(ticket_counters(hs.device, 1).abs().sum()) == 0


@pytest.mark.cuda
def test_split_reduction_is_exact_on_every_call():
    """The forward's cross-program sum of partial logits at the benchmark's N and H, many times, against the
    torch path: a partial read before another program's store would show as a wrong mean."""
    g = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(1000, 5120, device="cuda", generator=g).to(torch.bfloat16) / 5120**0.5
    ids = torch.randperm(1000, device="cuda", generator=g)[:9]
    values = VALUES.to("cuda")
    for _ in range(100):
        hidden = torch.randn(512, 5120, device="cuda", generator=g).to(torch.bfloat16)
        got = score_distribution(hidden, weight, ids, values, impl="triton")
        want = score_distribution(hidden, weight, ids, values, impl="torch")
        torch.testing.assert_close(got.mean, want.mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.log_probs, want.log_probs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("used", ["mean", "log_probs", "var+mean"])
def test_unused_expanded_and_strided_output_gradients(gen, impl, used):
    """Autograd hands the backward None for unused outputs, stride-0 gradients for sums and, here, a transposed
    gradient for log_probs: the kernels read them in place and must match the float64 reference."""
    dev = device()
    n, h, v = 13, 24, 60
    hidden, weight, ids, b, values = _inputs(gen, n, h, v)
    ref = score_distribution_naive(hidden.requires_grad_(), weight.requires_grad_(), ids, values, b)
    hs, ws = _to(hidden.detach(), torch.float32, dev), _to(weight.detach(), torch.float32, dev)
    out = score_distribution(hs, ws, ids.to(dev), values.float().to(dev), bias=b.float().to(dev), impl=impl)
    if used == "mean":
        loss, loss_ref = out.mean.sum(), ref[1].sum()
    elif used == "var+mean":
        loss, loss_ref = out.var.sum() - 2 * out.mean.sum(), ref[2].sum() - 2 * ref[1].sum()
    else:
        go = torch.randn(9, n, generator=gen, dtype=D).t()  # non-contiguous [n, 9]
        loss, loss_ref = (out.log_probs * go.float().to(dev)).sum(), (ref[0] * go).sum()
    got = torch.autograd.grad(loss, (hs, ws))
    want = torch.autograd.grad(loss_ref, (hidden, weight))
    for a, w in zip(got, want):
        assert float((a.double().cpu() - w).norm() / w.norm()) < 1e-5


def test_bf16_inputs(gen, impl):
    dev = device()
    hidden, weight, ids, b, values = _inputs(gen, 37, 48, 200)
    hb, wb = hidden.to(dev, torch.bfloat16).requires_grad_(), weight.to(dev, torch.bfloat16).requires_grad_()
    ref = score_distribution_naive(hb.detach().double().cpu().requires_grad_(), wb.detach().double().cpu().requires_grad_(), ids, values)
    out = score_distribution(hb, wb, ids.to(dev), values.float().to(dev), impl=impl)
    assert out.mean.dtype == torch.float32
    for got, want in zip(out, ref):
        err = (got.double().cpu() - want.detach()).norm() / want.norm()
        assert err < 1e-2
    out.mean.sum().backward()
    assert hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16


def test_k_rows_only_and_gradcheck(gen):
    hidden, weight, ids, b, values = _inputs(gen, 6, 7, 30, k=4)
    w_k = weight[ids].clone().requires_grad_()
    hidden.requires_grad_()
    b_k = b[ids].clone().requires_grad_()

    def f(h, w, bb):
        out = score_distribution(h, w, None, values, bias=bb, temperature=0.9, impl="torch")
        return out.log_probs, out.mean, out.var

    assert torch.autograd.gradcheck(f, (hidden, w_k, b_k))


def test_leading_dims_and_noncontiguous(gen, impl):
    dev = device()
    hidden, weight, ids, _, values = _inputs(gen, 24, 16, 40, bias=False)
    h3 = hidden.float().to(dev).reshape(4, 6, 16).transpose(0, 1)  # [6, 4, 16], non-contiguous
    out = score_distribution(h3, weight.float().to(dev), ids.to(dev), values.float().to(dev), impl=impl)
    ref = score_distribution_naive(h3.double().cpu(), weight, ids, values)
    assert out.mean.shape == (6, 4)
    torch.testing.assert_close(out.mean.double().cpu(), ref[1], rtol=1e-5, atol=1e-5)


def test_from_logits_equals_hidden_path(gen):
    hidden, weight, ids, b, values = _inputs(gen, 9, 12, 50)
    logits = hidden @ weight.t() + b
    a = score_distribution_from_logits(logits, ids, values, temperature=1.3)
    c = score_distribution(hidden, weight, ids, values, bias=b, temperature=1.3, impl="torch")
    for x, y in zip(a, c):
        torch.testing.assert_close(x, y)


def test_empty_batch(impl):
    dev = device()
    out = score_distribution(torch.zeros(0, 8, device=dev), torch.randn(20, 8, device=dev),
                             torch.arange(9, device=dev), VALUES.to(dev), impl=impl)
    assert out.log_probs.shape == (0, 9) and out.mean.shape == (0,)


def test_score_head_module(gen):
    lm = torch.nn.Linear(16, 40, bias=False)
    ids = torch.tensor([3, 5, 7, 9, 11, 13, 15, 17, 19])
    head = ScoreHead.from_lm_head(lm, ids, ScoreBins.half_points())
    x = torch.randn(5, 16, generator=gen)
    out = head(x)
    ref = score_distribution(x, lm.weight, ids, VALUES, impl="torch")
    torch.testing.assert_close(out.mean, ref.mean)
    out.mean.sum().backward()
    assert head.weight.grad.shape == (9, 16)


def test_bad_inputs():
    h, w = torch.zeros(3, 8), torch.zeros(20, 8)
    ids = torch.arange(9)
    with pytest.raises(ValueError, match="token_ids has 9 entries but values has K=5"):
        score_distribution(h, w, ids, torch.arange(5.0))
    with pytest.raises(ValueError, match="hidden's last dimension"):
        score_distribution(torch.zeros(3, 7), w, ids, VALUES)
    with pytest.raises(TypeError, match="token_ids"):
        score_distribution(h, w, ids.float(), VALUES)
    with pytest.raises(ValueError, match="token_ids must lie"):
        score_distribution(h, w, ids + 15, VALUES)
    with pytest.raises(ValueError, match="weight must hold exactly the K=9"):
        score_distribution(h, w, None, VALUES)
    with pytest.raises(ValueError, match="temperature"):
        score_distribution(h, w, ids, VALUES, temperature=0.0)
    with pytest.raises(ValueError, match="bias"):
        score_distribution(h, w, ids, VALUES, bias=torch.zeros(7))
    with pytest.raises(ValueError, match="values"):
        score_distribution(h, w, ids[:0], torch.zeros(0))
    with pytest.raises(TypeError, match="hidden"):
        score_distribution(h.long(), w, ids, VALUES)
    with pytest.raises(ValueError, match="impl"):
        score_distribution(h, w, ids, VALUES, impl="cuda")
