"""Generator optimisation through the student reward (paper section 5): sample with gradients through the last K
denoising steps, decode, score on the rubric dimensions, aggregate, ascend the reward.

Validation every ``val_every`` steps samples fixed prompts from fixed noise without gradients and logs the mean
predicted score and spread per dimension (the curves of the paper's figure 5); at the end a grid of the validation
images before and after training is saved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from zrcore.data.synthetic import SyntheticRubric
from zrcore.diffusion import FlowMatchSampler, SamplerConfig, build_tiny_generator, reward_of_images, velocity_for
from zrcore.diffusion.lora import DEFAULT_TARGETS, add_lora
from zrcore.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, stop_if_requested
from zrcore.training.config import save_config
from zrcore.training.logging import MetricsLog, Progress, plot_curves


@dataclass
class GeneratorConfig:
    output_dir: str = "runs/generator"
    seed: int = 0
    arch: str = "zimage"  # tiny random-init generator: zimage | sd3 | flux
    lora_rank: int = 0  # 0: full fine-tuning; > 0: a LoRA adapter of this rank (peft), base weights frozen
    lora_alpha: float | None = None  # default: the rank
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    reward_model: str = "tiny"  # "tiny" (random-init student) or a student checkpoint folder (train_risd.py)
    dimensions: list[str] = field(default_factory=lambda: ["realism", "aesthetics", "plausibility", "alignment"])
    aggregation: str = "mean"  # mean | weighted | min | pessimistic
    kappa: float = 0.0  # > 0: pessimistic aggregation mean - kappa * std
    steps: int = 60
    batch: int = 4
    lr: float = 2e-3
    num_steps: int = 4  # denoising steps
    backprop: str = "last_k"
    k: int = 1
    checkpoint: str = "step"
    guidance_scale: float = 0.0
    latent_size: int = 28  # latents [16, s, s] -> images [3, 2s, 2s]
    train_prompts: int = 32
    val_prompts: int = 4
    val_every: int = 5
    max_grad_norm: float = 1.0
    save_every: int = 10
    progress: bool = True


def _grid(images: list[torch.Tensor], rows: int) -> Image.Image:  # noqa: F821
    from PIL import Image

    cols = math.ceil(len(images) / rows)
    h, w = images[0].shape[-2:]
    canvas = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, img in enumerate(images):
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        canvas.paste(Image.fromarray(arr), ((i % cols) * w, (i // cols) * h))
    scale = max(1, 256 // max(h, w))  # small images are shown enlarged (nearest neighbour)
    return canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)


class GeneratorTrainer:
    def __init__(self, cfg: GeneratorConfig):
        from zrcore.models import RewardModel, build_tiny_reward_model

        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        self.transformer, vae, scheduler, self.encoder = build_tiny_generator(seed=cfg.seed, arch=cfg.arch)
        from zrcore.diffusion.fused import extension, fuse_vae_decoder

        if extension() is not None:  # fused GroupNorm + SiLU in the VAE decoder (less memory, see RESULTS)
            fuse_vae_decoder(vae)
        self.sampler = FlowMatchSampler(velocity_for(self.transformer), scheduler, vae)
        self.rm = (build_tiny_reward_model("qwen2_vl", "student", seed=cfg.seed) if cfg.reward_model == "tiny"
                   else RewardModel.from_pretrained(cfg.reward_model))
        self.rm.model.eval()
        for p in list(self.rm.model.parameters()) + list(vae.parameters()) + list(self.encoder.parameters()):
            p.requires_grad_(False)
        unknown = [d for d in cfg.dimensions if d not in self.rm.dimensions]
        if unknown:
            raise ValueError(f"dimensions {unknown} are not known to the reward model ({list(self.rm.dimensions)})")
        self.mode = "pessimistic" if cfg.kappa > 0 else cfg.aggregation
        self.sampler_cfg = SamplerConfig(num_steps=cfg.num_steps, guidance_scale=cfg.guidance_scale,
                                         backprop=cfg.backprop, k=cfg.k, checkpoint=cfg.checkpoint)
        self.sampler_cfg.validate()
        gen = SyntheticRubric(seed=cfg.seed)
        self.train_prompts = [gen.scene(i).prompt for i in range(cfg.train_prompts)]
        self.val_prompts = [gen.scene(10_000 + i).prompt for i in range(cfg.val_prompts)]
        if cfg.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (full fine-tuning) or positive, got {cfg.lora_rank}")
        if cfg.lora_rank > 0:
            self.params = add_lora(self.transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        else:
            self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr)
        self.log = MetricsLog(self.out)
        self.step = 0

    def _latents(self, n: int, seed: int) -> torch.Tensor:
        s = self.cfg.latent_size
        return torch.randn(n, 16, s, s, generator=torch.Generator().manual_seed(seed))

    def generate(self, prompts: list[str], seed: int, grad: bool) -> torch.Tensor:
        cond = pytree.tree_map(torch.Tensor.detach, self.encoder(prompts))
        uncond = None
        if self.cfg.guidance_scale > 0:  # the empty prompt's features, zeroed
            uncond = pytree.tree_map(lambda t: t.detach() * 0, self.encoder([""] * len(prompts)))
        with torch.set_grad_enabled(grad):
            x = self.sampler.sample(self._latents(len(prompts), seed), cond, self.sampler_cfg, uncond=uncond)
            return self.sampler.decode(x)

    @torch.no_grad()
    def validate(self) -> tuple[dict, torch.Tensor]:
        imgs = self.generate(self.val_prompts, seed=12345, grad=False)
        reward, dists = reward_of_images(self.rm, self.val_prompts, imgs, self.cfg.dimensions, mode=self.mode,
                                         kappa=self.cfg.kappa)
        row = {"val/reward": float(reward.mean())}
        for d, q in dists.items():
            row[f"val/{d}"] = float(q.mean.mean())
            row[f"val/std/{d}"] = float(q.std.mean())
        row["val/mean_score"] = sum(float(q.mean.mean()) for q in dists.values()) / len(dists)
        row["val/mean_std"] = sum(float(q.std.mean()) for q in dists.values()) / len(dists)
        return row, imgs

    def fit(self) -> dict:
        cfg = self.cfg
        state = load_checkpoint(self.out)
        if state is not None:
            self.transformer.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            self.step = state["step"]
            self.log.truncate_after(self.step)
            before = state["before"]
        else:
            row, imgs = self.validate()
            before = {"metrics": row, "images": imgs}
            self.log.write({"step": 0, **row})
        bar = Progress(cfg.steps, self.step, enabled=cfg.progress, desc="generator")
        while self.step < cfg.steps:
            g = torch.Generator().manual_seed(cfg.seed * 7919 + self.step)
            idx = torch.randint(len(self.train_prompts), (cfg.batch,), generator=g).tolist()
            prompts = [self.train_prompts[i] for i in idx]
            imgs = self.generate(prompts, seed=cfg.seed * 100_003 + self.step, grad=True)
            reward, _ = reward_of_images(self.rm, prompts, imgs, cfg.dimensions, mode=self.mode, kappa=cfg.kappa)
            loss = -reward.mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.opt.step()
            self.step += 1
            metrics = {"reward": float(reward.detach().mean()), "grad_norm": float(norm)}
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                metrics |= self.validate()[0]
            self.log.write({"step": self.step, **metrics})
            bar.update(metrics | {"loss": float(loss.detach())})
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                save_checkpoint(self.out, {"step": self.step, "model": self.transformer.state_dict(),
                                           "optimizer": self.opt.state_dict(), "rng": rng_state(), "before": before})
            stop_if_requested(self.step, cfg.steps, bar.close)
        bar.close()
        after, imgs = self.validate()
        _grid(list(before["images"]) + list(imgs), rows=2).save(self.out / "before_after.png")
        keys = ["val/reward", *[f"val/{d}" for d in cfg.dimensions], "val/mean_std"]
        plot_curves(self.out / "metrics.jsonl", self.out / "val_reward.png", keys=keys,
                    title="validation reward per dimension")
        result = {"before": before["metrics"], "after": after}
        (self.out / "results.json").write_text(json.dumps(result, indent=1))
        lines = ["| metric | start | end |", "|---|---:|---:|"]
        lines += [f"| {k} | {before['metrics'][k]:.4f} | {after[k]:.4f} |" for k in after]
        (self.out / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return result
