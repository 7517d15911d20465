"""The compiled extension's ops in a diffusers pipeline: ``fuse_vae_decoder`` swaps each GroupNorm + SiLU pair
of an AutoencoderKL decoder for ``FusedGroupNormSiLU`` (``zrcore.ops.group_norm_silu``). The ops themselves,
``group_norm_silu`` and ``cfg_euler_step``, live in ``zrcore.ops`` and are re-exported here."""

from __future__ import annotations

import torch

from zrcore.ops import cfg_euler_step, extension, group_norm_silu

__all__ = ["FusedGroupNormSiLU", "cfg_euler_step", "extension", "fuse_vae_decoder", "group_norm_silu"]


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
