"""Selected-token log-probs: the chunked torch path against a float64 full-vocabulary reference (values and
gradients), and autograd keeps no [chunk, V] tensor (each chunk is recomputed in the backward)."""

import pytest
import torch

from zrcore.ops.token_logprobs import token_logprobs


def _reference(h, w, b, t, temperature):
    logits = h.double() @ w.double().t() + (0 if b is None else b.double())
    return torch.log_softmax(logits / temperature, -1).gather(-1, t[:, None]).squeeze(-1)


@pytest.mark.parametrize("n,chunk,with_bias", [(1, 4, False), (37, 8, True), (16, 16, False)])
def test_matches_float64_reference(gen, n, chunk, with_bias):
    v, hdim = 97, 24
    h = torch.randn(n, hdim, generator=gen, requires_grad=True)
    w = (torch.randn(v, hdim, generator=gen) / 5).requires_grad_()
    b = torch.randn(v, generator=gen, requires_grad=True) if with_bias else None
    t = torch.randint(0, v, (n,), generator=gen)
    out = token_logprobs(h, w, t, temperature=0.7, bias=b, chunk=chunk, impl="torch")
    ref = _reference(h, w, b, t, 0.7)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    params = [h, w] + ([b] if with_bias else [])
    got = torch.autograd.grad((out.double() * g).sum(), params)
    want = torch.autograd.grad((ref * g).sum(), params)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e.double(), atol=1e-5, rtol=1e-4)


def test_no_vocabulary_sized_tensor_is_saved_for_backward(gen):
    v, hdim, n = 512, 16, 64
    h = torch.randn(n, hdim, generator=gen, requires_grad=True)
    w = torch.randn(v, hdim, generator=gen, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=gen)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(tuple(x.shape)) or x, lambda x: x):
        out = token_logprobs(h, w, t, chunk=16, impl="torch")
    assert saved and not any(v in shape and shape != (v, hdim) for shape in saved), saved
    out.sum().backward()
    assert h.grad is not None and w.grad is not None


def test_bad_arguments():
    h, w, t = torch.zeros(2, 4), torch.zeros(8, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="token_logprobs: impl must be one of"):
        token_logprobs(h, w, t, impl="liger")
    with pytest.raises(RuntimeError, match="token_logprobs: impl='triton' \\(triton is liger-kernel's\\) runs on cuda"):
        token_logprobs(h, w, t, impl="triton")
    with pytest.raises(ValueError, match="token_logprobs: impl='ext' is not a backend of this op"):
        token_logprobs(h, w, t, impl="ext")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        token_logprobs(h, w, t, chunk=0)


def _liger_devices() -> list:
    import os

    devices = ["cuda"] if torch.cuda.is_available() else []
    if os.environ.get("TRITON_INTERPRET") == "1":
        devices.append("cpu")
    return devices or [pytest.param("cpu", marks=pytest.mark.skip(reason="needs CUDA or TRITON_INTERPRET=1"))]


@pytest.mark.parametrize("device", _liger_devices())
def test_liger_gradient_under_a_non_uniform_upstream_gradient(gen, device):
    """liger-kernel's fused linear cross-entropy (the CUDA path of token_logprobs) with reduction 'none': each
    token's gradient scaled by its own upstream gradient, hidden and weight, against float64 (releases before 0.8.5
    scaled every token by grad_output[0]; pyproject's floor). On CPU tensors liger's kernels run under the Triton
    interpreter, called directly since zrcore's resolver keeps impl='triton' to CUDA."""
    pytest.importorskip("liger_kernel")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    n, hdim, v = 7, 16, 50
    h = torch.randn(n, hdim, generator=gen).to(device).requires_grad_()
    w = (torch.randn(v, hdim, generator=gen) / 3).to(device).requires_grad_()
    t = torch.randint(0, v, (n,), generator=gen).to(device)
    g = (torch.rand(n, generator=gen, dtype=torch.float64) * 4 - 2).to(device)  # signs and sizes differ per token
    if device == "cuda":
        out = token_logprobs(h, w, t, impl="triton")
    else:
        out = -LigerFusedLinearCrossEntropyLoss(reduction="none")(w, h, t)
    got = torch.autograd.grad((out.double() * g).sum(), [h, w])
    ref = _reference(h, w, None, t, 1.0)
    want = torch.autograd.grad((ref * g).sum(), [h, w])
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.double(), e.double(), atol=1e-5, rtol=1e-4)
