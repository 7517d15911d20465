"""zrcore/ops/README.md's recipe, followed for a toy op: a new op in a few lines passes torch.library.opcheck and
a fullgraph torch.compile, forward and backward, against a float64 reference."""

from __future__ import annotations

import pytest
import torch

from zrcore.ops._dispatch import DefinedOp, define_op


# 1. the forward (type-annotated: the op's schema is read from it)
def toy_forward(x: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * x * x


# 2. the fake kernel: outputs of the right shape and dtype, nothing computed
def toy_fake(x, scale):
    return torch.empty_like(x)


# 3. setup_context and the backward
def toy_setup_context(ctx, inputs, output):
    x, scale = inputs
    ctx.save_for_backward(x)
    ctx.scale = scale


def toy_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return 2.0 * ctx.scale * x * grad, None


# 4. one definition
_toy = define_op("toy_scaled_square", toy_forward, toy_fake, setup_context=toy_setup_context, backward=toy_backward)


# 5. the public function (argument checks would go here)
def scaled_square(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """y = scale x^2, dy/dx = 2 scale x."""
    return _toy(x, float(scale))


def test_the_toy_op_passes_opcheck():
    x = torch.randn(5, 3, requires_grad=True)
    torch.library.opcheck(_toy.op, (x, 0.5))
    assert isinstance(_toy, DefinedOp) and torch.ops.zrcore.toy_scaled_square is not None


@pytest.mark.parametrize("compiled", [False, True])
def test_the_toy_op_forward_and_backward_match_float64(compiled):
    fn = torch.compile(scaled_square, fullgraph=True, backend="aot_eager") if compiled else scaled_square
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = fn(x, 1.5)
    y.sum().backward()
    x64 = x.detach().double()
    torch.testing.assert_close(y.detach().double(), 1.5 * x64 * x64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), 3.0 * x64, rtol=1e-6, atol=1e-6)


def test_eager_calls_take_the_twin_and_traced_calls_the_op(monkeypatch):
    """Eagerly the autograd.Function twin runs (no dispatcher); under torch.compile the registered op is traced."""
    calls = []
    monkeypatch.setattr(_toy, "_apply", lambda *a: calls.append("eager") or _toy.eager.apply(*a))
    scaled_square(torch.ones(2), 2.0)
    assert calls == ["eager"]
    graph_ops = []

    def backend(gm, example_inputs):
        graph_ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    torch.compile(scaled_square, fullgraph=True, backend=backend)(torch.ones(3), 2.0)
    assert calls == ["eager"] and any("toy_scaled_square" in t for t in graph_ops)


def test_a_forward_only_op_and_the_pairing_rule():
    def double_forward(x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    double = define_op("toy_double", double_forward, lambda x: torch.empty_like(x))
    torch.testing.assert_close(double(torch.ones(2)), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="setup_context and backward go together"):
        define_op("toy_unpaired", double_forward, lambda x: torch.empty_like(x), backward=toy_backward)
