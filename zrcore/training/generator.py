"""Generator optimisation through the student reward (paper section 5): sample with gradients through the last K
denoising steps, decode, score on the rubric dimensions, aggregate, ascend the reward.

Validation every ``eval_every`` steps samples fixed prompts (drawn with ``val_seed``, not the run's seed) from fixed
noise (``VAL_SEED``) without gradients and logs the mean
predicted score and spread per dimension (the curves of the paper's figure 5), and, with ``held_out_reward_model``,
the reward the same images get from an independently trained reward model (``val/held_out/*``): a rise under the
trained-on reward alone is reward hacking; at the end a grid of the validation
images before and after training is saved. Runs on the shared loop: DDP or FSDP2 for the transformer (LoRA
included), the reward model frozen (a replica per rank under ddp, sharded under fsdp). Each image's noise is seeded
by (step, image), so the split of a batch over ranks does not change what is sampled.
"""

from __future__ import annotations

import json
import logging
import math

import torch
from torch.utils import _pytree as pytree

from zrcore import seeding
from zrcore.data.synthetic import SyntheticRubric
from zrcore.diffusion import FlowMatchSampler, build_tiny_generator, reward_of_images, velocity_for
from zrcore.diffusion.lora import add_lora
from zrcore.models.loading import load_reward_model
from zrcore.sharding import block_units
from zrcore.training.loop import TrainLoop
from zrcore.training.metrics_log import plot_curves
from zrcore.training.model_setup import configure_reward_model

log = logging.getLogger("zrcore")

VAL_SEED = 12345


def validation_prompts(val_seed: int, n: int) -> list[str]:
    """The ``n`` validation prompts of ``val_seed``: the same for every run seed, so that runs of several seeds are
    validated alike."""
    gen = SyntheticRubric(seed=val_seed)
    return [gen.scene(10_000 + i).prompt for i in range(n)]


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


class GeneratorTrainer(TrainLoop):
    name = "generator"

    def __init__(self, cfg):
        super().__init__(cfg)
        transformer, vae, scheduler, self.encoder = build_tiny_generator(seed=cfg.seed, arch=cfg.arch)
        from zrcore.diffusion.fused import extension, fuse_vae_decoder

        if extension() is not None:  # fused GroupNorm + SiLU in the VAE decoder (less memory, see RESULTS)
            fuse_vae_decoder(vae)
        rm = configure_reward_model(load_reward_model(cfg.reward_model, cfg.seed), cfg, self.rt.device,
                                    trainable=False)
        unknown = [d for d in cfg.dimensions if d not in rm.dimensions]
        if unknown:
            raise ValueError(f"dimensions {unknown} are not known to the reward model ({list(rm.dimensions)})")
        for module in (vae, self.encoder):
            module.requires_grad_(False)
            module.to(self.rt.device)
        if cfg.lora_rank > 0:
            add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        self.rm = self.rt.prepare(rm, rm.shard_units(), trainable=False, methods=rm.fsdp_methods)
        self.held_out = None  # a reward model the generator never trains on: it scores the validation images too
        if cfg.held_out_reward_model:
            other = configure_reward_model(load_reward_model(cfg.held_out_reward_model, cfg.seed), cfg,
                                           self.rt.device, trainable=False)
            self.held_out = self.rt.prepare(other, other.shard_units(), trainable=False, methods=other.fsdp_methods)
        net = self.rt.prepare(transformer, block_units(transformer))
        self.transformer = transformer
        self.sampler_cfg = cfg.sampler_config()
        self.sampler = FlowMatchSampler(velocity_for(transformer, net=net), scheduler, vae)
        gen = SyntheticRubric(seed=cfg.seed)
        self.train_prompts = [gen.scene(i).prompt for i in range(cfg.train_prompts)]
        self.eval_set = validation_prompts(cfg.val_seed, cfg.val_prompts)
        self.setup_optimizer(transformer, net)

    def _latents(self, seeds: list[int]) -> torch.Tensor:
        s = self.cfg.latent_size
        return torch.stack([torch.randn(16, s, s, generator=torch.Generator().manual_seed(x)) for x in seeds]
                           ).to(self.rt.device)

    def generate(self, prompts: list[str], seeds: list[int], grad: bool) -> torch.Tensor:
        cond = pytree.tree_map(lambda t: t.detach().to(self.rt.device), self.encoder(prompts))
        uncond = None
        if self.cfg.guidance_scale > 0:  # the empty prompt's features, zeroed
            uncond = pytree.tree_map(lambda t: t.detach().to(self.rt.device) * 0, self.encoder([""] * len(prompts)))
        with torch.set_grad_enabled(grad), self.rt.autocast():
            x = self.sampler.sample(self._latents(seeds), cond, self.sampler_cfg, uncond=uncond)
            return self.sampler.decode(x)

    def reward(self, prompts: list[str], images: torch.Tensor, rm=None):
        with self.rt.autocast():
            return reward_of_images(rm or self.rm, prompts, images.float(), self.cfg.dimensions, mode=self.cfg.aggregation,
                                    kappa=self.cfg.kappa)

    # ---- loop hooks --------------------------------------------------------------------------------------------
    def evaluate_shard(self, prompts: list[str], indices: list[int]) -> dict:
        """Each validation prompt's image from its fixed noise, its reward and per-dimension mean and std (and the
        held-out reward model's scores)."""
        imgs = self.generate(prompts, [VAL_SEED + i for i in indices], grad=False)
        reward, dists = self.reward(prompts, imgs)
        cols = {"images": imgs.float().cpu(), "reward": reward.float().cpu()}
        cols |= {f"mean/{d}": q.mean.float().cpu() for d, q in dists.items()}
        cols |= {f"std/{d}": q.std.float().cpu() for d, q in dists.items()}
        if self.held_out is not None:
            other, other_dists = self.reward(prompts, imgs, self.held_out)
            cols["held_out"] = other.float().cpu()
            cols |= {f"held_out/{d}": q.mean.float().cpu() for d, q in other_dists.items()}
        return cols

    def eval_metrics(self, name: str, columns: dict) -> dict:
        """Mean reward, per-dimension mean score and spread (and the held-out model's); the images of the start and
        the end are kept for the before / after grid."""
        dims = self.cfg.dimensions
        row = {"val/reward": float(columns["reward"].mean())}
        for d in dims:
            row[f"val/{d}"] = float(columns[f"mean/{d}"].mean())
            row[f"val/std/{d}"] = float(columns[f"std/{d}"].mean())
        row["val/mean_score"] = sum(float(columns[f"mean/{d}"].mean()) for d in dims) / len(dims)
        row["val/mean_std"] = sum(float(columns[f"std/{d}"].mean()) for d in dims) / len(dims)
        if self.held_out is not None:  # the same images under the independent reward model
            row["val/held_out/reward"] = float(columns["held_out"].mean())
            for d in dims:
                row[f"val/held_out/{d}"] = float(columns[f"held_out/{d}"].mean())
        if name in ("start", "final"):
            self.extra_tensors[f"{'before' if name == 'start' else 'after'}_images"] = columns["images"]
            if self.main:  # per validation prompt, in their fixed order: the rise can be resampled by prompt
                per_prompt = {"reward": columns["reward"].tolist(),
                              "held_out": columns["held_out"].tolist() if self.held_out is not None else None}
                (self.out / f"eval_{name}.json").write_text(json.dumps(per_prompt))
        return row

    def log_row(self, result: dict) -> dict:
        return result

    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        g = seeding.generator(seeding.counter_seed(cfg.seed, step))
        items = list(range(cfg.batch_size))
        picks = torch.randint(len(self.train_prompts), (cfg.batch_size,), generator=g).tolist()
        local, _ = self.rt.shard(items, "batch_size")
        prompts = [self.train_prompts[picks[i]] for i in local]
        imgs = self.generate(prompts, [seeding.noise_seed(cfg.seed, step, i) for i in local], grad=True)
        reward, _ = self.reward(prompts, imgs)
        loss = -reward.float().mean() * self.rt.share(len(local))
        metrics = self.optimizer_step(loss)
        return metrics | {"reward": float(reward.detach().float().mean()), "loss": float(loss.detach())}

    def report(self) -> None:
        cfg = self.cfg
        before, after = self.results["start"], self.results["final"]
        _grid(list(self.extra_tensors["before_images"]) + list(self.extra_tensors["after_images"]), rows=2).save(
            self.out / "before_after.png")
        keys = ["val/reward", *[f"val/{d}" for d in cfg.dimensions], "val/mean_std"]
        plot_curves(self.out / "metrics.jsonl", self.out / "val_reward.png", keys=keys,
                    title="validation reward per dimension")
        (self.out / "results.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
        lines = ["| metric | start | end |", "|---|---:|---:|"]
        lines += [f"| {k} | {before[k]:.4f} | {after[k]:.4f} |" for k in after]
        (self.out / "results.md").write_text("\n".join(lines) + "\n")
        log.info("\n".join(lines))

    def fit(self) -> dict:
        res = super().fit()
        return {"before": res["start"], "after": res["final"]}
