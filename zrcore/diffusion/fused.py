"""Kernels of the compiled extension zrcore._C used by the diffusion path, with pure-torch fallbacks.

The C++ / CUDA kernels are registered in C++ as ``torch.ops.zrcore.*`` (csrc/bindings.cpp); their fake kernels
and autograd are registered here, so torch.compile traces them as ops of their own.

- group_norm_silu: y = silu(group_norm(x)); the compiled backward recomputes the normalised activation from the
  input and the per-group statistics instead of storing it (one activation less per VAE decoder layer).
- cfg_euler_step: x + dt (v_c + s (v_c - v_u)) in one pass over fp32 master latents, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zrcore.ops._dispatch import extension, resolve_impl


def _group_norm_silu_fake(x, gamma, beta, groups, eps):
    stats = x.new_empty(x.shape[0], groups, dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


def _group_norm_silu_backward_fake(grad, x, gamma, beta, mean, rstd, groups):
    return torch.empty_like(x, memory_format=torch.contiguous_format), gamma.new_empty(gamma.shape, dtype=torch.float32), \
        beta.new_empty(beta.shape, dtype=torch.float32)


def _group_norm_silu_setup(ctx, inputs, output):
    x, gamma, beta, groups, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, gamma, beta, mean, rstd)
    ctx.groups = groups
    ctx.mark_non_differentiable(mean, rstd)


def _group_norm_silu_backward(ctx, dy, *_):
    x, gamma, beta, mean, rstd = ctx.saved_tensors
    dx, dgamma, dbeta = torch.ops.zrcore.group_norm_silu_backward(dy.contiguous(), x, gamma, beta, mean, rstd,
                                                                   ctx.groups)
    return dx, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None


def _cfg_euler_fake(x, v_cond, v_uncond, scale, dt):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _cfg_euler_backward_fake(grad, scale, dt, velocity_dtype):
    dv = grad.new_empty(grad.shape, dtype=velocity_dtype)
    return dv, torch.empty_like(dv)


def _cfg_euler_setup(ctx, inputs, output):
    ctx.meta = (inputs[3], inputs[4], inputs[1].dtype)  # v_cond and v_uncond share one dtype (checked)


def _cfg_euler_backward(ctx, g):
    scale, dt, v_dtype = ctx.meta
    dvc, dvu = torch.ops.zrcore.cfg_euler_step_backward(g, scale, dt, v_dtype)
    return g, dvc, dvu, None, None


if extension() is not None:  # importing zrcore._C registered the ops
    torch.library.register_fake("zrcore::group_norm_silu", _group_norm_silu_fake)
    torch.library.register_fake("zrcore::group_norm_silu_backward", _group_norm_silu_backward_fake)
    torch.library.register_autograd("zrcore::group_norm_silu", _group_norm_silu_backward,
                                    setup_context=_group_norm_silu_setup)
    torch.library.register_fake("zrcore::cfg_euler_step", _cfg_euler_fake)
    torch.library.register_fake("zrcore::cfg_euler_step_backward", _cfg_euler_backward_fake)
    torch.library.register_autograd("zrcore::cfg_euler_step", _cfg_euler_backward, setup_context=_cfg_euler_setup)


def group_norm_silu(x: torch.Tensor, groups: int, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-6,
                    impl: str = "auto") -> torch.Tensor:
    """silu(group_norm(x, groups, gamma, beta, eps)); impl "auto" uses the compiled op ``torch.ops.zrcore.
    group_norm_silu`` for float32 CPU input and for float32 / bfloat16 / float16 CUDA input (when the extension
    was built with CUDA), torch's group_norm and silu otherwise."""
    if resolve_impl("group_norm_silu", impl, x.dtype, x) == "ext":
        return torch.ops.zrcore.group_norm_silu(x, gamma, beta, int(groups), float(eps))[0]
    return F.silu(F.group_norm(x, groups, gamma, beta, eps))


class FusedGroupNormSiLU(torch.nn.Module):
    """Drop-in for a GroupNorm followed by SiLU, holding the GroupNorm's parameters."""

    def __init__(self, norm: torch.nn.GroupNorm, impl: str = "auto"):
        super().__init__()
        self.norm = norm
        self.impl = impl

    def forward(self, x):
        return group_norm_silu(x, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps, self.impl)


def fuse_vae_decoder(vae, impl: str = "auto") -> int:
    """Replaces GroupNorm + SiLU pairs of a diffusers AutoencoderKL decoder (resnet blocks and the output norm) by
    FusedGroupNormSiLU; returns how many were replaced."""
    from diffusers.models.resnet import ResnetBlock2D

    count = 0
    dec = vae.decoder
    for mod in dec.modules():
        if isinstance(mod, ResnetBlock2D) and isinstance(mod.nonlinearity, torch.nn.SiLU):
            mod.norm1 = FusedGroupNormSiLU(mod.norm1, impl)
            mod.norm2 = FusedGroupNormSiLU(mod.norm2, impl)
            mod.nonlinearity = torch.nn.Identity()
            count += 2
    if isinstance(getattr(dec, "conv_act", None), torch.nn.SiLU) and isinstance(dec.conv_norm_out, torch.nn.GroupNorm):
        dec.conv_norm_out = FusedGroupNormSiLU(dec.conv_norm_out, impl)
        dec.conv_act = torch.nn.Identity()
        count += 1
    return count


def cfg_euler_step(x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, dt: float,
                   impl: str = "auto") -> torch.Tensor:
    """x + dt * (v_c + s (v_c - v_u)) for fp32 latents x and fp32 / bf16 / fp16 velocities (one dtype for both);
    impl "auto" uses the compiled op ``torch.ops.zrcore.cfg_euler_step`` where the extension has a kernel."""
    mixed = None if v_cond.dtype == v_uncond.dtype else "v_cond and v_uncond of different dtypes"
    if resolve_impl("cfg_euler_step", impl, x.dtype, x, unsupported=mixed) == "ext":
        return torch.ops.zrcore.cfg_euler_step(x, v_cond, v_uncond, float(scale), float(dt))
    vc, vu = v_cond.float(), v_uncond.float()
    return x + dt * (vc + scale * (vc - vu))
