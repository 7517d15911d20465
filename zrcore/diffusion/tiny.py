"""Tiny random-init generators for tests and the default generator recipe: a Z-Image, SD3 or Flux transformer, a
small VAE, a FlowMatchEulerDiscreteScheduler, and a prompt encoder (the tiny tokenizer + an embedding table)
standing in for the text encoders."""

from __future__ import annotations

import torch

GENERATOR_ARCHS = ("zimage", "sd3", "flux")


class TinyPromptEncoder(torch.nn.Module):
    """Caption features per prompt: token embeddings [L, dim] of the tiny tokenizer's ids (Z-Image's format), or with
    ``pooled=True`` the SD3 / Flux format {"prompt_embeds": [max_length, dim], "pooled": [dim]} (padded with the
    pad token's embedding, pooled = the mean over the prompt's own tokens)."""

    def __init__(self, dim: int = 16, seed: int = 0, pooled: bool = False, max_length: int = 32):
        super().__init__()
        from zrcore.models.tiny import VOCAB_SIZE, build_tiny_tokenizer

        self.tokenizer = build_tiny_tokenizer()
        self.pooled, self.max_length = pooled, max_length
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(VOCAB_SIZE, dim, generator=g))

    def forward(self, prompts: list[str]) -> list:
        out = []
        pad = self.tokenizer.pad_token_id
        for p in prompts:
            ids = self.tokenizer.encode(p, add_special_tokens=False)[:self.max_length] or [pad]
            n = len(ids)
            if self.pooled:
                ids = ids + [pad] * (self.max_length - n)
            tokens = self.embed[torch.tensor(ids, device=self.embed.device)]
            out.append({"prompt_embeds": tokens, "pooled": tokens[:n].mean(0)} if self.pooled else tokens)
        return out


def _tiny_transformer(arch: str):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, ZImageTransformer2DModel

    if arch == "zimage":
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
            axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():  # created with torch.empty upstream: give them values
            transformer.x_pad_token.normal_(0, 0.02)
            transformer.cap_pad_token.normal_(0, 0.02)
        return transformer
    if arch == "sd3":
        return SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=16,
                                     num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=32,
                                     pooled_projection_dim=16, out_channels=16, pos_embed_max_size=64)
    if arch == "flux":
        return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                      pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    raise ValueError(f"arch must be one of {list(GENERATOR_ARCHS)}, got {arch!r}")


def build_tiny_generator(seed: int = 0, arch: str = "zimage"):
    """(transformer, vae, scheduler, prompt encoder) of a random-init ``arch`` generator ("zimage", "sd3", "flux");
    latents [B, 16, H, W] decode to images [B, 3, 2H, 2W]."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = _tiny_transformer(arch)
        vae = AutoencoderKL(block_out_channels=[32, 64], layers_per_block=1, latent_channels=16, norm_num_groups=32,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return transformer, vae, scheduler, TinyPromptEncoder(seed=seed, pooled=arch != "zimage")
