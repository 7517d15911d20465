"""Kernels of the compiled extension zrcore._C used by the diffusion path, with pure-torch fallbacks.

- group_norm_silu: y = silu(group_norm(x)); the compiled backward recomputes the normalised activation from the
  input and the per-group statistics instead of storing it (one activation less per VAE decoder layer).
- cfg_euler_step: x + dt (v_c + s (v_c - v_u)) in one pass over fp32 master latents, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def extension():
    """The compiled module, or None when zrcore was installed without it (ZRCORE_BUILD_EXT=0)."""
    try:
        from zrcore import _C
    except ImportError:
        return None
    return _C


def extension_supports(x: torch.Tensor) -> bool:
    """Whether the compiled extension has a kernel for x's device (CPU always; CUDA when built with nvcc)."""
    ext = extension()
    if ext is None or torch.compiler.is_compiling():
        return False
    return x.device.type == "cpu" or (x.device.type == "cuda" and bool(ext.with_cuda))


def _resolve(impl: str, device_ok: bool, inputs_ok: bool, inputs_rule: str) -> bool:
    """Whether to use the compiled kernel: impl 'ext' demands it (clear error when impossible), 'auto' uses it when
    the device and the inputs allow, 'torch' never."""
    if impl not in ("auto", "torch", "ext"):
        raise ValueError(f"impl must be 'auto', 'torch' or 'ext', got {impl!r}")
    if impl == "ext" and not device_ok:
        raise RuntimeError("impl='ext' needs the compiled extension zrcore._C with a kernel for this device "
                           "(CUDA tensors need an extension built with CUDA)")
    if impl == "ext" and not inputs_ok:
        raise TypeError(f"impl='ext' needs {inputs_rule}")
    return impl == "ext" or (impl == "auto" and device_ok and inputs_ok)


class _GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, groups, eps):
        y, mean, rstd = extension().group_norm_silu_forward(x, gamma, beta, groups, eps)
        ctx.save_for_backward(x, gamma, beta, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, dy):
        x, gamma, beta, mean, rstd = ctx.saved_tensors
        dx, dgamma, dbeta = extension().group_norm_silu_backward(dy, x, gamma, beta, mean, rstd, ctx.groups)
        return dx, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None


def group_norm_silu(x: torch.Tensor, groups: int, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-6,
                    impl: str = "auto") -> torch.Tensor:
    """silu(group_norm(x, groups, gamma, beta, eps)); impl "auto" uses the compiled kernel for float32 CPU input and
    for float32 / bfloat16 / float16 CUDA input (when the extension was built with CUDA)."""
    dtype_ok = x.dtype == torch.float32 or (x.device.type == "cuda" and x.dtype in (torch.bfloat16, torch.float16))
    if _resolve(impl, extension_supports(x), dtype_ok, "x in float32 (CPU) or float32 / bfloat16 / float16 (CUDA)"):
        return _GroupNormSiLU.apply(x, gamma, beta, int(groups), float(eps))
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


class _CFGEuler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, vc, vu, scale, dt):
        ctx.meta = (scale, dt, vc.dtype)  # v_cond and v_uncond share one dtype (cfg_euler_step checks)
        return extension().cfg_euler_forward(x, vc, vu, scale, dt)

    @staticmethod
    def backward(ctx, g):
        scale, dt, v_dtype = ctx.meta
        dx, dvc, dvu = extension().cfg_euler_backward(g, scale, dt, v_dtype)
        return dx, dvc, dvu, None, None


def cfg_euler_step(x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, dt: float,
                   impl: str = "auto") -> torch.Tensor:
    """x + dt * (v_c + s (v_c - v_u)) for fp32 latents x and fp32 / bf16 / fp16 velocities (one dtype for both)."""
    inputs_ok = x.dtype == torch.float32 and v_cond.dtype == v_uncond.dtype
    if _resolve(impl, extension_supports(x), inputs_ok, "float32 latents x and one dtype for v_cond and v_uncond"):
        return _CFGEuler.apply(x, v_cond, v_uncond, float(scale), float(dt))
    vc, vu = v_cond.float(), v_uncond.float()
    return x + dt * (vc + scale * (vc - vu))
