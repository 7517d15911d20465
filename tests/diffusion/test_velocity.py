"""The velocity wrappers follow each diffusers pipeline's conventions: sampling without gradients reproduces the
pipeline's own denoising loop (Z-Image, SD3, Flux), and checkpointed gradients equal plain autograd for every
architecture, including the gradients of the conditioning tensors."""

import pytest
import torch

from zrcore.diffusion import GENERATOR_ARCHS, FlowMatchSampler, SamplerConfig, build_tiny_generator, velocity_for
from zrcore.diffusion.velocity import image_position_ids, pack_latents, unpack_latents

PROMPTS = ["a red circle", "two blue squares on a white background"]
SIGMAS = [1.0, 0.75, 0.5]


def _detached(cond):
    return [{k: v.detach() for k, v in c.items()} if isinstance(c, dict) else c.detach() for c in cond]


def _pipeline_latents(arch, tr, vae, sch, cond, uncond, lat, guidance):
    """The pipeline's own loop, output_type="latent"; returns latents [B, 16, H, W] and our guidance scale."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, ZImagePipeline

    size = dict(height=2 * lat.shape[2], width=2 * lat.shape[3], num_inference_steps=len(SIGMAS), sigmas=SIGMAS,
                 output_type="latent")
    if arch == "zimage":
        pipe = ZImagePipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, transformer=tr)
        out = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=lat.clone(), guidance_scale=guidance,
                   **size).images
        return out, guidance  # pos + g (pos - neg)
    embeds = torch.stack([c["prompt_embeds"] for c in cond])
    pooled = torch.stack([c["pooled"] for c in cond])
    if arch == "sd3":
        pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=sch, vae=vae, text_encoder=None, tokenizer=None,
                                        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                   negative_prompt_embeds=torch.stack([c["prompt_embeds"] for c in uncond]),
                   negative_pooled_prompt_embeds=torch.stack([c["pooled"] for c in uncond]),
                   latents=lat.clone(), guidance_scale=guidance, **size).images
        return out, guidance - 1  # neg + G (pos - neg) = pos + (G - 1)(pos - neg)
    pipe = FluxPipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tr)
    out = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, latents=pack_latents(lat), guidance_scale=guidance,
               **size).images
    return unpack_latents(out, lat.shape[2], lat.shape[3]), 0.0  # distilled guidance only, no CFG


@pytest.mark.parametrize("arch", GENERATOR_ARCHS)
def test_sampling_reproduces_the_diffusers_pipeline(arch):
    tr, vae, sch, enc = build_tiny_generator(seed=0, arch=arch)
    lat = torch.randn(2, 16, 28, 28, generator=torch.Generator().manual_seed(0))
    cond, uncond = _detached(enc(PROMPTS)), _detached(enc(["", ""]))
    with torch.no_grad():
        ref, scale = _pipeline_latents(arch, tr, vae, sch, cond, uncond, lat, guidance=3.0)
        velocity = velocity_for(tr, guidance=3.0) if arch == "flux" else velocity_for(tr)
        ours = FlowMatchSampler(velocity, sch, vae).sample(
            lat, cond, SamplerConfig(num_steps=len(SIGMAS), sigmas=SIGMAS, guidance_scale=scale, backprop="full"),
            uncond=uncond)
    assert not torch.allclose(ours, lat)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_checkpointed_gradients_equal_plain_autograd(arch):
    tr, vae, sch, enc = build_tiny_generator(seed=0, arch=arch)
    sampler = FlowMatchSampler(velocity_for(tr), sch, vae)
    lat = torch.randn(2, 16, 28, 28, generator=torch.Generator().manual_seed(1))

    def grads(ck):
        tr.zero_grad(set_to_none=True)
        enc.zero_grad(set_to_none=True)
        cfg = SamplerConfig(num_steps=3, backprop="last_k", k=2, guidance_scale=1.5, checkpoint=ck)
        x = sampler.sample(lat, enc(PROMPTS), cfg, uncond=enc(["", ""]))
        sampler.decode(x, checkpointed=ck != "none").square().mean().backward()
        flat = torch.cat([p.grad.flatten() for p in tr.parameters() if p.grad is not None])
        return flat, enc.embed.grad.clone()

    (p0, e0) = grads("none")
    assert p0.abs().sum() > 0 and e0.abs().sum() > 0
    for ck in ("step", "step+blocks"):
        p1, e1 = grads(ck)
        assert float((p1 - p0).norm() / p0.norm()) <= 1e-5, ck
        assert float((e1 - e0).norm() / e0.norm()) <= 1e-5, ck


def test_packing_round_trip_and_position_ids():
    lat = torch.randn(2, 16, 6, 8)
    packed = pack_latents(lat)
    assert packed.shape == (2, 12, 64)
    torch.testing.assert_close(unpack_latents(packed, 6, 8), lat)
    torch.testing.assert_close(packed[0, 1, :4], lat[0, 0, 0:2, 2:4].flatten())  # token 1: rows 0-1, cols 2-3
    ids = image_position_ids(6, 8, "cpu")
    assert ids.shape == (12, 3) and ids[5].tolist() == [0.0, 1.0, 1.0]


def test_bad_input():
    tr, vae, sch, enc = build_tiny_generator(seed=0, arch="flux")
    sampler = FlowMatchSampler(velocity_for(tr), sch, vae)
    cond = _detached(enc(PROMPTS))
    with pytest.raises(ValueError, match="even height and width"):
        sampler.sample(torch.randn(2, 16, 7, 8), cond, SamplerConfig(num_steps=2))
    with pytest.raises(ValueError, match="16"):
        sampler.sample(torch.randn(2, 64, 8, 8), cond, SamplerConfig(num_steps=2))
    with pytest.raises(ValueError, match=r"cond\[0\] must be a dict"):
        sampler.velocity(torch.randn(2, 16, 8, 8), torch.tensor(500.0), [c["prompt_embeds"] for c in cond])
    cond[1] = {"prompt_embeds": cond[1]["prompt_embeds"][:5], "pooled": cond[1]["pooled"]}
    with pytest.raises(ValueError, match="share one shape"):
        sampler.velocity(torch.randn(2, 16, 8, 8), torch.tensor(500.0), cond)
    with pytest.raises(ValueError, match="no velocity wrapper"):
        velocity_for(torch.nn.Linear(2, 2))
    from diffusers import FlowMatchEulerDiscreteScheduler

    dyn = FlowMatchSampler(velocity_for(tr), FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae)
    with pytest.raises(ValueError, match="SamplerConfig.mu"):
        dyn.sample(torch.randn(2, 16, 8, 8), _detached(enc(PROMPTS)), SamplerConfig(num_steps=2))
