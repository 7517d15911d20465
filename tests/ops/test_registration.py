"""Every op is one torch.library op with a fake kernel and one autograd registration (torch.library.opcheck:
schema, fake tensors, autograd registration, AOT dispatch), the eager fast paths are built from the same forward
and backward, and one resolver serves every op with errors that name the op and the rule."""

import importlib
import sys
import warnings

import pytest
import torch

from tests.ops.conftest import device, impls
from zrcore.ops import _dispatch

# the modules (zrcore.ops exports functions of the same names)
score_distribution = importlib.import_module("zrcore.ops.score_distribution")
pairwise_gap = importlib.import_module("zrcore.ops.pairwise_gap")
fused_linear_kl = importlib.import_module("zrcore.ops.fused_linear_kl")
token_logprobs = importlib.import_module("zrcore.ops.token_logprobs")
group_norm_silu = importlib.import_module("zrcore.ops.group_norm_silu")

# torch.library.opcheck's own tests, without the slow dynamic-shape AOT check on the interpreter
CHECKS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _on(*tensors):
    """The tensors on the test device (CUDA when there is one), leaves keeping requires_grad."""
    dev = device()
    return [t.detach().to(dev).requires_grad_(t.requires_grad) if t.is_floating_point() else t.to(dev)
            for t in tensors]


def _backends():
    return [b for b in ("torch", "triton") if b in impls()]


@pytest.mark.skipif("triton" not in impls(), reason="the Triton op needs CUDA or TRITON_INTERPRET=1")
def test_opcheck_score_distribution():
    g = _gen()
    hidden = torch.randn(6, 32, generator=g, requires_grad=True)
    weight = (torch.randn(40, 32, generator=g) / 4).requires_grad_()
    bias = torch.randn(40, generator=g, requires_grad=True)
    ids, values = torch.arange(3, 12), torch.linspace(1, 5, 9)
    hidden, weight, bias, ids, values = _on(hidden, weight, bias, ids, values)
    torch.library.opcheck(torch.ops.zrcore.score_distribution, (hidden, weight, ids, values, bias, 0.8),
                          test_utils=CHECKS)
    logq, mean, _ = torch.ops.zrcore.score_distribution(hidden.detach(), weight.detach(), ids, values, None, 0.8)
    gl, gm = _on(torch.randn(6, 9, generator=g), torch.randn(6, generator=g))
    torch.library.opcheck(torch.ops.zrcore.score_distribution_backward,
                          (gl, gm, None, hidden.detach(), weight.detach(), ids, values, logq, mean, 0.8, True, True,
                           False, torch.float32), test_utils=CHECKS)


@pytest.mark.parametrize("backend", _backends())
def test_opcheck_pairwise_gap(backend):
    g = _gen()
    mean = (1 + 4 * torch.rand(3, 3, 4, generator=g)).requires_grad_()
    scores = torch.tensor([[1.0, 2.5, 4.0], [3.0, 3.0, 1.5], [2.0, 5.0, 1.0]])
    mask = torch.rand(3, 3, 4, generator=g) > 0.2
    mean, scores, mask = _on(mean, scores, mask)
    torch.library.opcheck(torch.ops.zrcore.pairwise_gap, (mean, scores, mask, 4.0, False, backend),
                          test_utils=CHECKS)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("reduced", [True, False])
def test_opcheck_fused_linear_kl(backend, reduced):
    g = _gen()
    h = torch.randn(5, 8, generator=g, requires_grad=True)
    w = torch.randn(20, 8, generator=g, requires_grad=True)
    b = torch.randn(20, generator=g, requires_grad=True)
    t, wt = torch.randn(5, 6, generator=g), torch.randn(20, 6, generator=g)
    h, w, b, t, wt = _on(h, w, b, t, wt)
    needs = (True, True, True) if reduced else (False, False, False)
    args = (h, w, t, wt, b, None, None, None, True, 0.9, 0.2, 2, *needs, backend)
    torch.library.opcheck(torch.ops.zrcore.fused_linear_kl, args, test_utils=CHECKS)


def test_opcheck_token_logprobs():
    g = _gen()
    h = torch.randn(7, 8, generator=g, requires_grad=True)
    w = torch.randn(30, 8, generator=g, requires_grad=True)
    b = torch.randn(30, generator=g, requires_grad=True)
    y = torch.randint(0, 30, (7,), generator=g)
    h, w, b, y = _on(h, w, b, y)
    torch.library.opcheck(torch.ops.zrcore.token_logprobs, (h, w, b, y, 0.7, 3), test_utils=CHECKS)
    _, lse = torch.ops.zrcore.token_logprobs(h.detach(), w.detach(), b.detach(), y, 0.7, 3)
    torch.library.opcheck(torch.ops.zrcore.token_logprobs_backward,
                          (*_on(torch.randn(7, generator=g)), h.detach(), w.detach(), b.detach(), y, lse, 0.7, 3, True,
                           True, True), test_utils=CHECKS)


@pytest.mark.skipif(_dispatch.extension() is None, reason="zrcore._C not built")
def test_opcheck_extension_ops():
    g = _gen()
    x = torch.randn(2, 8, 3, 3, generator=g, requires_grad=True)
    gamma = torch.randn(8, generator=g, requires_grad=True)
    beta = torch.randn(8, generator=g, requires_grad=True)
    on_cuda = device() == "cuda" and _dispatch.extension().with_cuda
    move = _on if on_cuda else (lambda *ts: list(ts))
    x, gamma, beta = move(x, gamma, beta)
    torch.library.opcheck(torch.ops.zrcore.group_norm_silu, (x, gamma, beta, 4, 1e-5), test_utils=CHECKS)
    _, mean, rstd = torch.ops.zrcore.group_norm_silu(x.detach(), gamma.detach(), beta.detach(), 4, 1e-5)
    torch.library.opcheck(torch.ops.zrcore.group_norm_silu_backward,
                          (*move(torch.randn(2, 8, 3, 3, generator=g)), x.detach(), gamma.detach(), beta.detach(), mean,
                           rstd, 4), test_utils=CHECKS)
    lat = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    vc = torch.randn(2, 4, 3, generator=g, dtype=torch.float32, requires_grad=True)
    vu = torch.randn(2, 4, 3, generator=g, dtype=torch.float32, requires_grad=True)
    lat, vc, vu = move(lat, vc, vu)
    torch.library.opcheck(torch.ops.zrcore.cfg_euler_step, (lat, vc, vu, 1.5, -0.1), test_utils=CHECKS)
    torch.library.opcheck(torch.ops.zrcore.cfg_euler_step_backward,
                          (*move(torch.randn(2, 4, 3, generator=g)), 1.5, -0.1, torch.bfloat16), test_utils=CHECKS)


def test_eager_fast_paths_share_the_registered_backward():
    """The eager twins run the op's own forward, setup_context and backward (one backward per op)."""
    for defined, forward, setup, backward in (
        (score_distribution._score, score_distribution.score_forward_launch,
         score_distribution._score_setup_context, score_distribution._score_backward),
        (pairwise_gap._pairwise, pairwise_gap.pairwise_forward, pairwise_gap._pairwise_setup_context,
         pairwise_gap._pairwise_backward),
        (fused_linear_kl._kl, fused_linear_kl.kl_forward, fused_linear_kl._kl_setup_context,
         fused_linear_kl._kl_backward),
        (token_logprobs._token, token_logprobs.token_logprobs_forward, token_logprobs._token_setup_context,
         token_logprobs._token_backward),
    ):
        twin = defined.eager
        assert twin.op_forward is forward and twin.op_setup_context is setup and twin.backward is backward


@pytest.mark.parametrize("op", sorted(_dispatch.OPS))
def test_resolver_rules(op):
    x64 = torch.zeros(2, dtype=torch.float64)
    x32 = torch.zeros(2)
    assert _dispatch.resolve_impl(op, "auto", torch.float64, x64) == "torch"  # the float64 rule
    assert _dispatch.resolve_impl(op, "torch", torch.float32, x32) == "torch"
    with pytest.raises(ValueError, match=f"{op}: impl must be one of"):
        _dispatch.resolve_impl(op, "cuda", torch.float32, x32)
    spec = _dispatch.OPS[op]
    for backend in ("triton", "ext"):
        if backend not in spec.backends:
            with pytest.raises(ValueError, match=f"{op}: impl='{backend}' is not a backend of this op"):
                _dispatch.resolve_impl(op, backend, torch.float32, x32)
        elif spec.dtypes(backend, "cpu") and backend == "ext" and _dispatch.extension() is not None:
            with pytest.raises(TypeError, match=f"{op}: impl='ext'.* takes .* float64 and other dtypes run impl='torch'"):
                _dispatch.resolve_impl(op, backend, torch.float64, x64)
            assert _dispatch.resolve_impl(op, "auto", torch.float32, x32) == "ext"
        elif spec.dtypes(backend, "cpu") and backend == "triton" and _dispatch.interpret_mode():
            with pytest.raises(TypeError, match=f"{op}: impl='triton'.* takes .* float64 and other dtypes"):
                _dispatch.resolve_impl(op, backend, torch.float64, x64)
            assert _dispatch.resolve_impl(op, "auto", torch.float32, x32) == "torch"  # never the interpreter


@pytest.mark.parametrize("interpreter", ["0", "1"])
def test_public_functions_name_the_op_in_dtype_errors(monkeypatch, interpreter):
    """The dtype rule is the op's, checked before whether this machine can run the backend: the same TypeError with
    the interpreter off (as on a GPU machine, or a CPU machine without it) and on."""
    if not _dispatch.triton_available():
        pytest.skip("the triton package does not import")
    monkeypatch.setenv("TRITON_INTERPRET", interpreter)
    with pytest.raises(TypeError, match="score_distribution: impl='triton'.*float64"):
        score_distribution.score_distribution(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(9, 4,
                                              dtype=torch.float64), None, torch.linspace(1, 5, 9), impl="triton")


def test_other_impl_errors_name_the_op():
    with pytest.raises(ValueError, match="group_norm_silu: impl must be one of"):
        group_norm_silu.group_norm_silu(torch.zeros(1, 4, 2), 2, torch.ones(4), torch.zeros(4), impl="liger")
    with pytest.raises(ValueError, match="token_logprobs: impl='ext' is not a backend"):
        token_logprobs.token_logprobs(torch.zeros(2, 4), torch.zeros(8, 4), torch.zeros(2, dtype=torch.long),
                                      impl="ext")


def test_auto_falls_back_when_a_backend_package_does_not_import(monkeypatch):
    """token_logprobs' triton backend is liger-kernel's: on CUDA ``auto`` picks it only where liger-kernel imports,
    else the torch path, saying so once."""
    if not _dispatch.triton_available():
        pytest.skip("the triton package does not import")
    spec = _dispatch.OPS["token_logprobs"]
    monkeypatch.setattr(_dispatch, "_FELL_BACK", set())
    _dispatch._import_error.cache_clear()
    try:
        if _dispatch._import_error("liger_kernel.transformers") is None:  # liger-kernel installed: auto picks it
            assert _dispatch._auto(spec, torch.bfloat16, "cuda", None) == "triton"
        _dispatch._import_error.cache_clear()
        monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)  # an import of it now fails
        with pytest.warns(RuntimeWarning, match="token_logprobs: impl='auto' runs the torch path on cuda.*liger-kernel"):
            assert _dispatch._auto(spec, torch.bfloat16, "cuda", None) == "torch"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            assert _dispatch._auto(spec, torch.float32, "cuda", None) == "torch"
        with pytest.raises(RuntimeError, match="token_logprobs: impl='triton'.*cannot run on cuda tensors here: "
                                               "liger-kernel does not import"):
            _dispatch.resolve_impl("token_logprobs", "triton", torch.float32, _CudaLike())
    finally:
        monkeypatch.undo()
        _dispatch._import_error.cache_clear()


class _CudaLike:
    """Stands for a CUDA tensor in the resolver, which reads only ``is_cuda``."""

    is_cuda = True
