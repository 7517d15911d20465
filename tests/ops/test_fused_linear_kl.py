import pytest
import torch

from tests.ops.conftest import device
from tests.reference import kl_materialised
from zrcore.ops import FusedLinearKLLoss, fused_linear_kl

D = torch.float64


def _inputs(gen, n, h, ht, v):
    return (
        torch.randn(n, h, generator=gen, dtype=D),
        torch.randn(v, h, generator=gen, dtype=D) / h**0.5 * 2,
        torch.randn(n, ht, generator=gen, dtype=D),
        torch.randn(v, ht, generator=gen, dtype=D) / ht**0.5 * 2,
        0.1 * torch.randn(v, generator=gen, dtype=D),
        0.1 * torch.randn(v, generator=gen, dtype=D),
    )


def _rel(a, b):
    return float((a.double().cpu() - b).norm() / b.norm().clamp_min(1e-30))


CASES = [
    # n, h, ht, v, direction, temperature, use_ids, teacher_as_logprobs, reduction, chunk
    (1, 8, 8, 50, "forward", 1.0, False, False, "batchmean", None),
    (37, 33, 20, 101, "forward", 0.8, False, False, "batchmean", 8),
    (37, 33, 20, 101, "reverse", 1.0, False, False, "sum", 5),
    (16, 24, 24, 300, "reverse", 1.7, False, True, "batchmean", None),
    (19, 16, 12, 64, "forward", 1.0, True, False, "none", 4),
    (19, 16, 12, 64, "reverse", 1.0, True, True, "batchmean", 3),
]


@pytest.mark.parametrize("n,h,ht,v,direction,temperature,use_ids,as_lp,reduction,chunk", CASES)
def test_matches_materialised_reference(gen, impl, n, h, ht, v, direction, temperature, use_ids, as_lp, reduction,
                                        chunk):
    dev = device()
    hs, ws, htd, wt, bs, bt = _inputs(gen, n, h, ht, v)
    ids = torch.randperm(v, generator=gen)[:9] if use_ids else None
    if as_lp:
        zt = htd @ wt.t() + bt
        teacher = torch.log_softmax(zt if ids is None else zt[:, ids], -1)
        wt_ = bt_ = None
    else:
        teacher, wt_, bt_ = htd, wt, bt
    hs.requires_grad_(), ws.requires_grad_(), bs.requires_grad_()
    ref = kl_materialised(hs, ws, teacher, wt_, bs, bt_, direction, temperature, ids, reduction)
    x = [t.detach().float().to(dev).requires_grad_() for t in (hs, ws, bs)]
    f = lambda t: None if t is None else t.float().to(dev)
    out = fused_linear_kl(x[0], x[1], f(teacher), teacher_weight=f(wt_), student_bias=x[2], teacher_bias=f(bt_),
                          direction=direction, temperature=temperature,
                          token_ids=None if ids is None else ids.to(dev), reduction=reduction, impl=impl,
                          chunk_size=chunk)
    assert _rel(out, ref.detach()) < 1e-5
    go = torch.randn(ref.shape, generator=gen, dtype=D)
    g_ref = torch.autograd.grad(ref, (hs, ws, bs), go)
    g_out = torch.autograd.grad(out, x, go.float().to(dev))
    for a, b in zip(g_out, g_ref):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gradcheck_float64(gen, direction):
    hs, ws, htd, wt, bs, bt = _inputs(gen, 5, 6, 4, 11)
    args = (hs.requires_grad_(), ws.requires_grad_(), bs.requires_grad_())
    f = lambda a, b, c: fused_linear_kl(a, b, htd, teacher_weight=wt, student_bias=c, teacher_bias=bt,
                                        direction=direction, temperature=0.9, impl="torch", chunk_size=2)
    assert torch.autograd.gradcheck(f, args)
    g = lambda a, b, c: fused_linear_kl(a, b, htd, teacher_weight=wt, student_bias=c, teacher_bias=bt,
                                        direction=direction, reduction="none", impl="torch", chunk_size=2)
    assert torch.autograd.gradcheck(g, args)


def test_bf16_inputs(gen, impl):
    dev = device()
    hs, ws, htd, wt, _, _ = _inputs(gen, 37, 32, 16, 200)
    b = [t.to(dev, torch.bfloat16) for t in (hs, ws, htd, wt)]
    b[0].requires_grad_(), b[1].requires_grad_()
    out = fused_linear_kl(b[0], b[1], b[2], teacher_weight=b[3], impl=impl)
    ref = kl_materialised(*[t.detach().double().cpu() for t in b])
    assert abs(float(out) - float(ref)) <= 1e-2 * abs(float(ref))
    out.backward()
    assert b[0].grad.dtype == torch.bfloat16 and b[1].grad.dtype == torch.bfloat16


@pytest.mark.parametrize("beta,direction", [(0.0, "forward"), (1.0, "reverse")])
def test_agrees_with_liger_fused_linear_jsd(gen, impl, beta, direction):
    """liger's LigerFusedLinearJSD with beta=0 is KL(teacher || student), with beta=1 KL(student || teacher)."""
    liger_jsd = pytest.importorskip("liger_kernel.transformers").LigerFusedLinearJSD
    dev = device()
    hs, ws, htd, wt, _, _ = _inputs(gen, 16, 32, 32, 128)
    f = lambda t: t.float().to(dev)
    ours = fused_linear_kl(f(hs), f(ws), f(htd), teacher_weight=f(wt), direction=direction, impl=impl)
    if dev == "cpu":
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("liger's Triton kernels need CUDA or TRITON_INTERPRET=1")
    theirs = liger_jsd(jsd_beta=beta, temperature=1.0)(f(hs), f(ws), f(htd), f(wt), None)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


def test_module_and_zero_rows(impl):
    dev = device()
    loss = FusedLinearKLLoss(direction="reverse", impl=impl)
    out = loss(torch.zeros(0, 8, device=dev), torch.randn(20, 8, device=dev), torch.zeros(0, 8, device=dev),
               torch.randn(20, 8, device=dev))
    assert float(out) == 0.0


def test_bad_inputs():
    h, w = torch.zeros(3, 8), torch.zeros(20, 8)
    with pytest.raises(ValueError, match="teacher log-probs must have 20 columns"):
        fused_linear_kl(h, w, torch.zeros(3, 8))
    with pytest.raises(ValueError, match="teacher_weight must have 20 rows"):
        fused_linear_kl(h, w, torch.zeros(3, 8), teacher_weight=torch.zeros(19, 8))
    with pytest.raises(ValueError, match="teacher must have 3 rows"):
        fused_linear_kl(h, w, torch.zeros(4, 20))
    with pytest.raises(ValueError, match="direction"):
        fused_linear_kl(h, w, torch.zeros(3, 20), direction="both")
    with pytest.raises(ValueError, match="reduction"):
        fused_linear_kl(h, w, torch.zeros(3, 20), reduction="mean")
    with pytest.raises(ValueError, match="token_ids"):
        fused_linear_kl(h, w, torch.zeros(3, 9), token_ids=torch.arange(9) + 15)
    with pytest.raises(ValueError, match="K = len"):
        fused_linear_kl(h, w, torch.zeros(3, 20), token_ids=torch.arange(9))
    with pytest.raises(ValueError, match="student_weight"):
        fused_linear_kl(h, torch.zeros(20, 7), torch.zeros(3, 20))
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_kl(h, w, torch.zeros(3, 20), chunk_size=0)


def test_backward_twice_is_refused_on_triton(gen):
    if "triton" not in __import__("tests.ops.conftest", fromlist=["impls"]).impls():
        pytest.skip("needs the Triton path")
    dev = device()
    hs, ws, htd, wt, _, _ = _inputs(gen, 6, 8, 8, 20)
    x = hs.float().to(dev).requires_grad_()
    loss = fused_linear_kl(x, ws.float().to(dev), htd.float().to(dev), teacher_weight=wt.float().to(dev), impl="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per forward"):
        loss.backward()
