"""Differentiable flow-matching sampling for diffusers transformers, for reward backpropagation into a generator.
The transformer enters as a velocity field v(latents, t, cond) (zrcore.diffusion.velocity: Z-Image, SD3, Flux).

    x_{i+1} = scheduler.step(v(x_i, t_i), t_i, x_i)        (Euler on FlowMatchEulerDiscreteScheduler's sigmas)
    v = v_cond + g (v_cond - v_uncond)                       (classifier-free guidance, g = guidance_scale)

Backprop modes over the N steps:
- "full": gradients through every step;
- "last_k" (DRaFT-K): the first N - K steps run without gradients, the last K with;
- "refl" (ReFL): all steps without gradients up to step N - K, then one step with gradients to the predicted clean
  latent x0 = x - sigma v;
- "drtune" (DRTune): the last K steps with gradients through the update but with the model input detached.

Memory: with ``checkpoint="step"`` the gradient-carrying steps run without a graph and keep only their input
latents; the backward recomputes them last to first, one step's graph alive at a time (the stateful scheduler is
not re-run: the Euler update uses its sigmas, x + (sigma_next - sigma) v, which is what its step computes).
``"step+blocks"`` also turns on the transformer's own block checkpointing inside each recomputed step. The VAE
decode can be checkpointed as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree
from torch.utils.checkpoint import checkpoint

MODES = ("full", "last_k", "refl", "drtune")
CHECKPOINTING = ("none", "step", "step+blocks")


@dataclass
class SamplerConfig:
    num_steps: int = 8
    guidance_scale: float = 0.0
    backprop: str = "last_k"
    k: int = 1
    checkpoint: str = "step"
    checkpoint_vae: bool = True
    sigmas: list[float] | None = None  # custom noise levels in (0, 1], decreasing (default: the scheduler's)
    mu: float | None = None  # resolution-dependent shift of schedulers with use_dynamic_shifting (Flux)

    def validate(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {self.num_steps}")
        if self.backprop not in MODES:
            raise ValueError(f"backprop must be one of {list(MODES)}, got {self.backprop!r}")
        if self.checkpoint not in CHECKPOINTING:
            raise ValueError(f"checkpoint must be one of {list(CHECKPOINTING)}, got {self.checkpoint!r}")
        if self.backprop != "full" and not 1 <= self.k <= self.num_steps:
            raise ValueError(f"k must lie in [1, num_steps={self.num_steps}] for backprop={self.backprop!r}, "
                             f"got {self.k}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be non-negative, got {self.guidance_scale}")
        if self.sigmas is not None:
            sig = [float(x) for x in self.sigmas]
            if len(sig) != self.num_steps:
                raise ValueError(f"sigmas has {len(sig)} entries but num_steps is {self.num_steps}")
            if any(not 0 < x <= 1 for x in sig) or any(b >= a for a, b in zip(sig, sig[1:])):
                raise ValueError(f"sigmas (timesteps / 1000) must lie in (0, 1] and decrease, got {sig}")


class _StepwiseRecompute(torch.autograd.Function):
    """Steps whose graph is rebuilt one at a time in the backward. Parameter gradients are accumulated into .grad
    by the inner backward (as reentrant checkpointing does); the gradients of the latents and of the conditioning
    tensors (the leaves of the conditioning pytrees, flattened) are returned."""

    @staticmethod
    def forward(ctx, x, anchor, run, *features):
        inputs = []
        with torch.no_grad():
            for i in range(run.n):
                inputs.append(x)
                x = run.step(i, x, features)
        ctx.run = run
        ctx.n_features = len(features)
        ctx.save_for_backward(*inputs, *features)
        return x

    @staticmethod
    def backward(ctx, g):
        run = ctx.run
        saved = ctx.saved_tensors
        inputs, features = saved[:run.n], saved[run.n:]
        feature_grads = [None] * len(features)
        for i in reversed(range(run.n)):
            x_in = inputs[i].detach().requires_grad_(True)
            leaves = [f.detach().requires_grad_(f.requires_grad) for f in features]
            with torch.enable_grad():
                x_out = run.step(i, x_in, leaves)
            torch.autograd.backward(x_out, g)
            g = x_in.grad
            for j, leaf in enumerate(leaves):
                if leaf.grad is not None:
                    feature_grads[j] = leaf.grad if feature_grads[j] is None else feature_grads[j] + leaf.grad
        return (g, None, None, *feature_grads)


class _EulerRun:
    """The gradient-carrying steps of one sampling call: step(i, x) = x + (sigma_{i+1} - sigma_i) v(x); the
    conditioning (cond, uncond) is passed in as the flat tensor leaves of its pytree (spec) so that the backward
    can re-leaf them."""

    def __init__(self, sampler, ts, sigmas, spec, scale, detach_input):
        self.sampler, self.ts = sampler, ts
        self.sigmas = [float(s) for s in sigmas]  # one host read per sampling call, not one per step
        self.spec, self.scale, self.detach_input = spec, scale, detach_input
        self.n = len(ts)

    def step(self, i: int, x: torch.Tensor, features) -> torch.Tensor:
        from zrcore.ops.cfg_euler_step import cfg_euler_step

        cond, uncond = pytree.tree_unflatten(list(features), self.spec)
        model_in = x.detach() if self.detach_input else x
        dt = self.sigmas[i + 1] - self.sigmas[i]
        if self.scale > 0:  # guidance combine and Euler update in one fused pass
            if not uncond:
                raise ValueError("guidance_scale > 0 needs unconditional features (uncond)")
            vc = self.sampler.velocity(model_in, self.ts[i], cond)
            vu = self.sampler.velocity(model_in, self.ts[i], uncond)
            return cfg_euler_step(x, vc, vu, self.scale, dt)
        return x + dt * self.sampler.velocity(model_in, self.ts[i], cond)


class FlowMatchSampler:
    """Sampling with gradients (see the module docstring). ``velocity`` maps (latents, t, conditioning) to v;
    ``vae`` decodes latents to images in [-1, 1]."""

    def __init__(self, velocity, scheduler, vae=None):
        self.velocity = velocity
        self.scheduler = scheduler
        self.vae = vae

    def timesteps(self, num_steps: int, device, sigmas=None, mu: float | None = None) -> torch.Tensor:
        extra = {} if mu is None else {"mu": float(mu)}
        if getattr(self.scheduler.config, "use_dynamic_shifting", False) and mu is None:
            raise ValueError("the scheduler uses dynamic shifting: set SamplerConfig.mu (the pipeline computes it "
                             "from the image sequence length)")
        if sigmas is not None:
            self.scheduler.set_timesteps(sigmas=list(sigmas), device=device, **extra)
        else:
            self.scheduler.set_timesteps(num_steps, device=device, **extra)
        self.scheduler.set_begin_index(0)
        ts = self.scheduler.timesteps
        if ts.numel() and (float(ts.max()) > self.scheduler.config.num_train_timesteps or float(ts.min()) < 0):
            raise ValueError(f"scheduler produced timesteps outside [0, {self.scheduler.config.num_train_timesteps}]")
        return ts

    def _guided(self, latents, t, cond, uncond, scale: float):
        v = self.velocity(latents, t, cond)
        if scale > 0:
            if uncond is None:
                raise ValueError("guidance_scale > 0 needs unconditional features (uncond)")
            v_u = self.velocity(latents, t, uncond)
            v = v + scale * (v - v_u)
        return v

    def _call(self, use_ckpt: bool, latents, t, cond, uncond, scale):
        if use_ckpt:
            return checkpoint(self._guided, latents, t, cond, uncond, scale, use_reentrant=False)
        return self._guided(latents, t, cond, uncond, scale)

    def sample(self, latents: torch.Tensor, cond: list, cfg: SamplerConfig, uncond: list | None = None) -> torch.Tensor:
        """Final latents (or ReFL's predicted x0) with gradients as ``cfg.backprop`` says."""
        cfg.validate()
        if latents.dim() != 4:
            raise ValueError(f"latents must be [B, C, H, W], got shape {tuple(latents.shape)}")
        if len(cond) != latents.shape[0]:
            raise ValueError(f"cond has {len(cond)} entries but latents has batch {latents.shape[0]}")
        blocks = cfg.checkpoint == "step+blocks"
        tr = getattr(self.velocity, "transformer", None)
        if tr is not None and hasattr(tr, "enable_gradient_checkpointing"):
            (tr.enable_gradient_checkpointing if blocks else tr.disable_gradient_checkpointing)()
        use_ckpt = cfg.checkpoint != "none"
        expected = getattr(self.velocity, "latent_channels", None)
        if expected is not None and latents.shape[1] != expected:
            raise ValueError(f"latents have {latents.shape[1]} channels but the transformer expects {expected}")
        ts = self.timesteps(cfg.num_steps, latents.device, cfg.sigmas, cfg.mu)
        n = len(ts)
        first_grad = 0 if cfg.backprop == "full" else n - cfg.k
        x = latents.float()
        for i, t in enumerate(ts):
            if i < first_grad:
                with torch.no_grad():
                    v = self._guided(x, t, cond, uncond, cfg.guidance_scale)
                    x = self.scheduler.step(v, t, x, return_dict=False)[0]
                continue
            if cfg.backprop == "refl":  # one differentiable step to the predicted clean latent
                sigma = self.scheduler.sigmas[i].to(x.device)
                v = self._call(use_ckpt, x.detach(), t, cond, uncond, cfg.guidance_scale)
                return x.detach() - sigma * v
            if use_ckpt and torch.is_grad_enabled():  # the remaining steps, recomputed one at a time
                sigmas = self.scheduler.sigmas.to(x.device, torch.float32)[i:]
                if cfg.guidance_scale > 0 and uncond is None:
                    raise ValueError("guidance_scale > 0 needs unconditional features (uncond)")
                features, spec = pytree.tree_flatten((list(cond), list(uncond) if cfg.guidance_scale > 0 else []))
                if not all(isinstance(f, torch.Tensor) for f in features):
                    raise ValueError("cond and uncond must hold tensors (or dicts / lists of tensors) only")
                run = _EulerRun(self, ts[i:], sigmas, spec, cfg.guidance_scale, cfg.backprop == "drtune")
                return _StepwiseRecompute.apply(x, self._anchor(), run, *features)
            model_in = x.detach() if cfg.backprop == "drtune" else x
            v = self._guided(model_in, t, cond, uncond, cfg.guidance_scale)
            x = self.scheduler.step(v, t, x, return_dict=False)[0]
        return x

    def _anchor(self) -> torch.Tensor:
        """A tensor that requires grad whenever the model has trainable parameters, so that autograd runs the
        stepwise backward even when the latents themselves need no gradient."""
        model = getattr(self.velocity, "transformer", None)
        params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        return params[0] if params else torch.zeros((), requires_grad=True)

    def decode(self, latents: torch.Tensor, checkpointed: bool = True) -> torch.Tensor:
        """Latents -> images [B, 3, H, W] in [0, 1], differentiable (VAE decoder optionally checkpointed)."""
        if self.vae is None:
            raise ValueError("this sampler has no vae")
        cfg = self.vae.config
        z = latents.to(self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)

        def run(z_):
            return self.vae.decode(z_, return_dict=False)[0]

        img = checkpoint(run, z, use_reentrant=False) if checkpointed and torch.is_grad_enabled() else run(z)
        return (img.float() / 2 + 0.5).clamp(0, 1)
