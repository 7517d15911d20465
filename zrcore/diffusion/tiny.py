"""Tiny random-init generator for tests and the default generator recipe: a Z-Image transformer, a small VAE, a
FlowMatchEulerDiscreteScheduler, and a prompt encoder (the tiny tokenizer + a learned embedding table) standing in
for the text encoder."""

from __future__ import annotations

import torch


class TinyPromptEncoder(torch.nn.Module):
    """Caption features [L, dim] per prompt: token embeddings of the tiny tokenizer's ids."""

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        from zrcore.models.tiny import VOCAB_SIZE, build_tiny_tokenizer

        self.tokenizer = build_tiny_tokenizer()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(VOCAB_SIZE, dim, generator=g))

    def forward(self, prompts: list[str]) -> list[torch.Tensor]:
        out = []
        for p in prompts:
            ids = self.tokenizer.encode(p, add_special_tokens=False) or [self.tokenizer.pad_token_id]
            out.append(self.embed[torch.tensor(ids, device=self.embed.device)])
        return out


def build_tiny_generator(seed: int = 0):
    """(transformer, vae, scheduler, prompt encoder); latents [B, 16, H, W] decode to images [B, 3, 2H, 2W]."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
            axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():  # created with torch.empty upstream: give them values
            transformer.x_pad_token.normal_(0, 0.02)
            transformer.cap_pad_token.normal_(0, 0.02)
        vae = AutoencoderKL(block_out_channels=[32, 64], layers_per_block=1, latent_channels=16, norm_num_groups=32,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return transformer, vae, scheduler, TinyPromptEncoder(seed=seed)
