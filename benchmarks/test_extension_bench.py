"""The compiled extension's kernels against the pure-torch paths they replace, on the CPU or (when the extension was
built with CUDA) the GPU: fused GroupNorm + SiLU inside a VAE decoder (forward + backward to the latents) and the
fused CFG + Euler step (forward + backward).

    python -m pytest benchmarks/test_extension_bench.py --benchmark-enable
"""

import pytest
import torch

from benchmarks.harness import bench_device, peak_memory_growth, sync
from zrcore.diffusion.fused import cfg_euler_step, extension, fuse_vae_decoder

DEVICE = bench_device()
pytestmark = pytest.mark.skipif(extension() is None or (DEVICE == "cuda" and not extension().with_cuda),
                                reason="zrcore._C was not built (with CUDA, on a GPU machine)")


def _vae(fused: bool):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[64, 128], layers_per_block=2, latent_channels=16, norm_num_groups=32,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    if fused:
        assert fuse_vae_decoder(vae, impl="ext") > 0
    return vae.to(DEVICE)


@pytest.mark.parametrize("path", ["naive", "zrcore"])
def test_vae_decode_group_norm_silu(benchmark, record, path):
    vae = _vae(path == "zrcore")
    z = torch.randn(1, 16, 64, 64, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def step():
        x = z.clone().requires_grad_()
        vae.decode(x).sample.square().mean().backward()
        sync()
        return x.grad

    step()
    peak = peak_memory_growth(step)
    benchmark.pedantic(step, rounds=3, warmup_rounds=0)
    record(op="vae_decode GroupNorm+SiLU", shape="AutoencoderKL [64,128] x2 layers, latents 16x64x64",
           mode="fwd+bwd", path=path, time_s=benchmark.stats.stats.median, peak_bytes=peak)


@pytest.mark.parametrize("path", ["naive", "zrcore"])
def test_cfg_euler(benchmark, record, path):
    g = torch.Generator().manual_seed(2)
    x, vc, vu = (torch.randn(4, 16, 128, 128, generator=g).to(DEVICE) for _ in range(3))
    impl = "ext" if path == "zrcore" else "torch"

    def step():
        a, b = vc.clone().requires_grad_(), vu.clone().requires_grad_()
        cfg_euler_step(x, a, b, 4.5, -0.05, impl=impl).square().mean().backward()
        sync()
        return a.grad

    step()
    peak = peak_memory_growth(step)
    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
    record(op="cfg + euler step", shape="latents 4x16x128x128 fp32", mode="fwd+bwd", path=path,
           time_s=benchmark.stats.stats.median, peak_bytes=peak)
