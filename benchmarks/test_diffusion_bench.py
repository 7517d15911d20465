"""One reward-backprop step (sampling, VAE decode, student reward on two dimensions, backward into the generator)
for each backprop mode and K, with and without per-step checkpointing: time and peak memory growth.

    python -m pytest benchmarks/test_diffusion_bench.py --benchmark-enable

The generator is a random-init Z-Image transformer (dim 128, 4 layers) on 48x48 latents (576 image tokens), where
one denoising step's activations dominate the step's memory; 8 sampling steps.

Memory columns: "peak growth" is the peak of live tensor bytes during the step (CPU: the profiler's allocation
timeline; CUDA: the caching allocator) with the generator's gradient buffers already allocated, as in a training
loop past its first step that zeroes them in place; "grads set to None" the same when the step also allocates the
gradient buffers. (The resident set is not used here: the profiler's own allocations leave it unreliable for the
cases measured after it.)
"""

import pytest
import torch

from benchmarks.harness import bench_device, sync, tensor_peak_growth
from zrcore.diffusion import FlowMatchSampler, SamplerConfig, ZImageVelocity, reward_of_images
from zrcore.models import build_tiny_reward_model

CASES = [(mode, k, ck) for mode in ("last_k",) for k in (1, 2, 4, 8) for ck in ("none", "step")]
CASES += [("full", 8, "none"), ("full", 8, "step"), ("refl", 1, "step"), ("drtune", 4, "step")]


@pytest.fixture(scope="module")
def setup():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    from zrcore.diffusion import TinyPromptEncoder

    torch.manual_seed(0)
    tr = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=128, n_layers=4,
                                  n_refiner_layers=1, n_heads=8, n_kv_heads=8, norm_eps=1e-5, qk_norm=True,
                                  cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4],
                                  axes_lens=[256, 64, 64])
    with torch.no_grad():
        tr.x_pad_token.normal_(0, 0.02)
        tr.cap_pad_token.normal_(0, 0.02)
    vae = AutoencoderKL(block_out_channels=[32, 64], layers_per_block=1, latent_channels=16, norm_num_groups=32,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    sampler = FlowMatchSampler(ZImageVelocity(tr), FlowMatchEulerDiscreteScheduler(shift=3.0), vae)
    rm = build_tiny_reward_model("qwen2_vl", "student")
    for p in list(rm.model.parameters()) + list(vae.parameters()):
        p.requires_grad_(False)
    dev = bench_device()
    tr.to(dev), vae.to(dev), rm.to(dev)
    enc = TinyPromptEncoder()
    prompts = ["two red circles on a white background"]
    return tr, sampler, rm, [c.detach().to(dev) for c in enc(prompts)], prompts


@pytest.mark.parametrize("mode,k,ck", CASES, ids=[f"{m}-K{k}-{c}" for m, k, c in CASES])
def test_reward_backprop_step(benchmark, setup, record, mode, k, ck):
    tr, sampler, rm, cond, prompts = setup
    cfg = SamplerConfig(num_steps=8, backprop=mode, k=k, checkpoint=ck, checkpoint_vae=ck != "none")
    lat = torch.randn(1, 16, 48, 48, generator=torch.Generator().manual_seed(0)).to(bench_device())

    def step(set_to_none: bool = False):
        tr.zero_grad(set_to_none=set_to_none)
        img = sampler.decode(sampler.sample(lat, cond, cfg), checkpointed=cfg.checkpoint_vae)
        reward, _ = reward_of_images(rm, prompts, img, ["realism", "aesthetics"])
        (-reward.sum()).backward()
        sync()

    step()
    peak = tensor_peak_growth(step)
    tr.zero_grad(set_to_none=True)
    peak_set_to_none = tensor_peak_growth(lambda: step(set_to_none=True))
    benchmark.pedantic(step, rounds=2, warmup_rounds=0)
    record(op="reward_backprop", shape="Z-Image dim128 x4 layers, 48x48 latents, 8 steps",
           mode=f"{mode} K={k if mode != 'full' else 8}", path=f"checkpoint={ck}", time_s=benchmark.stats.stats.median,
           peak_bytes=peak, extra_mib={"grads set to None": peak_set_to_none})
