"""Memory and time of one reward-backprop step through a full-size random-init Z-Image transformer (the 6B
configuration: diffusers' ZImageTransformer2DModel defaults) in bf16 at 1024x1024 (latents 16 x 128 x 128, 4096
image tokens), with a full-size 16-channel VAE decoder and the tiny student reward on two dimensions.

    python benchmarks/zimage_fullsize.py                            # on a GPU (about 12 GiB of weights)
    python benchmarks/zimage_fullsize.py --preset smoke --out /tmp  # a small configuration, any device

One step: 8 denoising steps, gradients through the last K (DRaFT-K) with per-step recomputation (optionally block
checkpointing inside each recomputed step), checkpointed VAE decode, reward, backward into every transformer
weight (full fine-tuning; bf16 gradients). Each case's row is printed (and kept: benchmarks/results.py) as it ends;
--out also writes the rows as JSON to OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.results import Table, note

PRESETS = {
    "full": dict(transformer={}, latent=128, caption_tokens=128,
                 vae=dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2)),
    "smoke": dict(transformer=dict(dim=64, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32,
                                   axes_dims=[8, 12, 12], axes_lens=[256, 64, 64]),
                  latent=16, caption_tokens=8, vae=dict(block_out_channels=[32, 32], layers_per_block=1)),
}
CASES = [(1, "step"), (4, "step"), (8, "step"), (8, "step+blocks")]


def build(preset: dict, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    from zrcore.diffusion import FlowMatchSampler, velocity_for
    from zrcore.models import build_tiny_reward_model

    torch.manual_seed(0)
    with torch.device(device):
        tr = ZImageTransformer2DModel(**preset["transformer"]).to(dtype)
        with torch.no_grad():
            tr.x_pad_token.normal_(0, 0.02)
            tr.cap_pad_token.normal_(0, 0.02)
        n_blocks = len(preset["vae"]["block_out_channels"])
        vae = AutoencoderKL(latent_channels=16, down_block_types=["DownEncoderBlock2D"] * n_blocks,
                            up_block_types=["UpDecoderBlock2D"] * n_blocks, **preset["vae"]).to(dtype)
    vae.requires_grad_(False)
    rm = build_tiny_reward_model("qwen2_vl", "student").to(device)
    rm.model.requires_grad_(False)
    sampler = FlowMatchSampler(velocity_for(tr), FlowMatchEulerDiscreteScheduler(shift=3.0), vae)
    return tr, sampler, rm


def run(preset_name: str, out: Path | None, repeats: int, cases: int = len(CASES)) -> list[dict]:
    from zrcore.diffusion import SamplerConfig, reward_of_images

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16
    preset = PRESETS[preset_name]
    tr, sampler, rm = build(preset, device, dtype)
    n_params = sum(p.numel() for p in tr.parameters())
    s = preset["latent"]
    lat = torch.randn(1, 16, s, s, generator=torch.Generator().manual_seed(0)).to(device)
    cap = [torch.randn(preset["caption_tokens"], tr.config.cap_feat_dim, device=device, dtype=dtype)]
    prompts = ["a red circle on a white background"]
    header = (f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
              f"preset {preset_name}: Z-Image {n_params / 1e9:.2f}B params bf16, latents 16x{s}x{s}, 8 steps")
    note(header)
    table = Table("preset", "backprop", "checkpoint", "time / step (s):", "peak growth (GiB):", "peak total (GiB):")
    rows = []
    for k, ck in CASES[:cases]:
        cfg = SamplerConfig(num_steps=8, backprop="last_k", k=k, checkpoint=ck)

        def step(cfg=cfg):
            tr.zero_grad(set_to_none=False)
            img = sampler.decode(sampler.sample(lat, cap, cfg), checkpointed=True)
            reward, _ = reward_of_images(rm, prompts, img, ["realism", "aesthetics"])
            (-reward.sum()).backward()
            if device == "cuda":
                torch.cuda.synchronize()

        row = {"K": k, "checkpoint": ck}
        try:
            step()  # allocates the gradient buffers, warms up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            row["time_s"] = sorted(times)[len(times) // 2]
            if device == "cuda":
                row["peak_growth_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
                row["peak_total_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        if "error" in row:
            table.row(preset_name, f"last_k K={row['K']}", row["checkpoint"], row["error"], "-", "-")
        else:
            table.row(preset_name, f"last_k K={row['K']}", row["checkpoint"], f"{row['time_s']:.3f}",
                      f"{row.get('peak_growth_gib', float('nan')):.2f}", f"{row.get('peak_total_gib', float('nan')):.2f}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"zimage-{preset_name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", type=int, default=len(CASES), help="the first N of the (K, checkpoint) cases")
    args = parser.parse_args()
    run(args.preset, args.out, args.repeats, args.cases)


if __name__ == "__main__":
    main()
