"""One Euler step of a flow-matching sampler with classifier-free guidance, in one pass over fp32 master latents:

    x' = x + dt (v_c + s (v_c - v_u))
    dx'/dx = 1,  dx'/dv_c = dt (1 + s),  dx'/dv_u = -dt s

The compiled kernels (``zrcore._C``, csrc/) read bf16 / fp16 velocities without an fp32 copy and write the
gradients in the velocities' dtype. The op is defined in C++ (csrc/bindings.cpp); its fake kernels and autograd are
registered here. ``impl="torch"`` is the same arithmetic in torch operations.
"""

from __future__ import annotations

import torch

from zrcore.ops._dispatch import register_extension_op, resolve_impl


def _fake(x, v_cond, v_uncond, scale, dt):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _backward_fake(grad, scale, dt, velocity_dtype):
    dv = grad.new_empty(grad.shape, dtype=velocity_dtype)
    return dv, torch.empty_like(dv)


def _setup_context(ctx, inputs, output):
    ctx.meta = (inputs[3], inputs[4], inputs[1].dtype)  # v_cond and v_uncond share one dtype (checked)


def _backward(ctx, g):
    scale, dt, v_dtype = ctx.meta
    dvc, dvu = torch.ops.zrcore.cfg_euler_step_backward(g, scale, dt, v_dtype)
    return g, dvc, dvu, None, None


register_extension_op("cfg_euler_step", _fake, setup_context=_setup_context, backward=_backward,
                      backward_name="cfg_euler_step_backward", backward_fake=_backward_fake)


def cfg_euler_step(x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, dt: float,
                   impl: str = "auto") -> torch.Tensor:
    """x + dt * (v_c + s (v_c - v_u)) for fp32 latents x and fp32 / bf16 / fp16 velocities (one dtype for both);
    impl "auto" uses the compiled op ``torch.ops.zrcore.cfg_euler_step`` where the extension has a kernel."""
    mixed = None if v_cond.dtype == v_uncond.dtype else "v_cond and v_uncond of different dtypes"
    if resolve_impl("cfg_euler_step", impl, x.dtype, x, unsupported=mixed) == "ext":
        return torch.ops.zrcore.cfg_euler_step(x, v_cond, v_uncond, float(scale), float(dt))
    vc, vu = v_cond.float(), v_uncond.float()
    return x + dt * (vc + scale * (vc - vu))
