"""Velocity fields v(x, t) of diffusers flow-matching transformers behind one interface, for FlowMatchSampler.

Each wrapper maps (latents [B, C, H, W] float32, scheduler timestep t in [0, 1000], per-sample conditioning list)
to the velocity [B, C, H, W] float32 that FlowMatchEulerDiscreteScheduler.step integrates,
x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v, following each pipeline's own conventions:

- Z-Image: timestep (1000 - t) / 1000, a frame axis, list inputs, the model output negated. Conditioning: caption
  features [L, D] per sample.
- SD3 / SD3.5: timestep t, the output used as is. Conditioning: {"prompt_embeds": [L, D], "pooled": [P]}.
- Flux: latents packed into 2x2 patches [B, HW/4, 4C] with position ids, timestep t / 1000, distilled guidance
  embedding when the model has one. Conditioning as for SD3.
"""

from __future__ import annotations

import torch


def _stack_prompt_conditioning(cond: list, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(cond) != batch:
        raise ValueError(f"cond has {len(cond)} entries but latents has batch {batch}")
    for i, c in enumerate(cond):
        if not isinstance(c, dict) or not {"prompt_embeds", "pooled"} <= c.keys():
            raise ValueError(f"cond[{i}] must be a dict with 'prompt_embeds' [L, D] and 'pooled' [P] tensors")
    lengths = {tuple(c["prompt_embeds"].shape) for c in cond}
    if len(lengths) != 1:
        raise ValueError(f"cond prompt_embeds must share one shape [L, D] across the batch (pad them), got {lengths}")
    return torch.stack([c["prompt_embeds"] for c in cond]), torch.stack([c["pooled"] for c in cond])


class _Velocity:
    """A transformer behind the v(latents, t, cond) interface; latent_channels is what the latents must have."""

    def __init__(self, transformer, net=None):
        self.transformer = transformer
        self.net = transformer if net is None else net  # what is called: the transformer or its DDP wrapper

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels


class ZImageVelocity(_Velocity):
    """v(x, t) of a ZImageTransformer2DModel."""

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cap_feats: list) -> torch.Tensor:
        b = latents.shape[0]
        timestep = (1000 - t.expand(b).float()) / 1000
        x = list(latents.to(self.transformer.dtype).unsqueeze(2).unbind(0))
        out = self.net(x, timestep, cap_feats, return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)


class SD3Velocity(_Velocity):
    """v(x, t) of an SD3Transformer2DModel (Stable Diffusion 3 / 3.5)."""

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: list) -> torch.Tensor:
        b, dtype = latents.shape[0], self.transformer.dtype
        embeds, pooled = _stack_prompt_conditioning(cond, b)
        out = self.net(hidden_states=latents.to(dtype), encoder_hidden_states=embeds.to(dtype),
                               pooled_projections=pooled.to(dtype), timestep=t.expand(b), return_dict=False)[0]
        return out.float()


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/2)(W/2), 4C]: 2x2 patches as tokens (Flux's layout)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of pack_latents for latents of height x width."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def image_position_ids(height: int, width: int, device) -> torch.Tensor:
    """[(H/2)(W/2), 3] position ids of the packed latent tokens: (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3, device=device)
    ids[..., 1] = torch.arange(height // 2, device=device)[:, None]
    ids[..., 2] = torch.arange(width // 2, device=device)[None, :]
    return ids.reshape(-1, 3)


class FluxVelocity(_Velocity):
    """v(x, t) of a FluxTransformer2DModel; ``guidance`` is the distilled guidance scale (models with
    guidance_embeds, e.g. FLUX.1-dev); it is ignored by models without it."""

    def __init__(self, transformer, guidance: float = 3.5, net=None):
        super().__init__(transformer, net)
        self.guidance = guidance

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels // 4

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: list) -> torch.Tensor:
        b, _, h, w = latents.shape
        if h % 2 or w % 2:
            raise ValueError(f"Flux latents need even height and width (2x2 packing), got {h}x{w}")
        dtype, device = self.transformer.dtype, latents.device
        embeds, pooled = _stack_prompt_conditioning(cond, b)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.guidance), device=device, dtype=torch.float32)
        out = self.net(
            hidden_states=pack_latents(latents).to(dtype), encoder_hidden_states=embeds.to(dtype),
            pooled_projections=pooled.to(dtype), timestep=t.expand(b).float() / 1000,
            img_ids=image_position_ids(h, w, device), txt_ids=torch.zeros(embeds.shape[1], 3, device=device),
            guidance=guidance, return_dict=False)[0]
        return unpack_latents(out.float(), h, w)


def velocity_for(transformer, **kwargs):
    """The wrapper matching a diffusers transformer's class."""
    wrappers = {"ZImageTransformer2DModel": ZImageVelocity, "SD3Transformer2DModel": SD3Velocity,
                "FluxTransformer2DModel": FluxVelocity}
    for cls in type(transformer).__mro__:  # the class itself, then its bases (subclasses of the three)
        if cls.__name__ in wrappers:
            return wrappers[cls.__name__](transformer, **kwargs)
    raise ValueError(f"no velocity wrapper for {type(transformer).__name__}; supported: {sorted(wrappers)}")
