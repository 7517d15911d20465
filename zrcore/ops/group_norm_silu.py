"""y = silu(group_norm(x; groups, gamma, beta, eps)): GroupNorm followed by SiLU in one pass.

With mu_g, rstd_g the mean and 1 / sqrt(var + eps) of each (sample, group) and x_hat = (x - mu_g) rstd_g:

    y = a sigmoid(a),  a = gamma_c x_hat + beta_c
    dy/da = sigmoid(a) (1 + a (1 - sigmoid(a)))

The compiled kernels (``zrcore._C``, csrc/) keep only x and the per-group statistics for the backward: x_hat is
recomputed from them instead of being stored (one activation less per VAE decoder layer). The op is defined in
C++ (csrc/bindings.cpp); its fake kernels and autograd are registered here. ``impl="torch"`` is torch's group_norm
and silu.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zrcore.ops._dispatch import register_extension_op, resolve_impl


def _fake(x, gamma, beta, groups, eps):
    stats = x.new_empty(x.shape[0], groups, dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


def _backward_fake(grad, x, gamma, beta, mean, rstd, groups):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            gamma.new_empty(gamma.shape, dtype=torch.float32), beta.new_empty(beta.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x, gamma, beta, groups, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, gamma, beta, mean, rstd)
    ctx.groups = groups
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dy, *_):
    x, gamma, beta, mean, rstd = ctx.saved_tensors
    dx, dgamma, dbeta = torch.ops.zrcore.group_norm_silu_backward(dy.contiguous(), x, gamma, beta, mean, rstd,
                                                                   ctx.groups)
    return dx, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None


register_extension_op("group_norm_silu", _fake, setup_context=_setup_context, backward=_backward,
                      backward_name="group_norm_silu_backward", backward_fake=_backward_fake)


def group_norm_silu(x: torch.Tensor, groups: int, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-6,
                    impl: str = "auto") -> torch.Tensor:
    """silu(group_norm(x, groups, gamma, beta, eps)); impl "auto" uses the compiled op ``torch.ops.zrcore.
    group_norm_silu`` for float32 CPU input and for float32 / bfloat16 / float16 CUDA input (when the extension
    was built with CUDA), torch's group_norm and silu otherwise."""
    if resolve_impl("group_norm_silu", impl, x.dtype, x) == "ext":
        return torch.ops.zrcore.group_norm_silu(x, gamma, beta, int(groups), float(eps))[0]
    return F.silu(F.group_norm(x, groups, gamma, beta, eps))
