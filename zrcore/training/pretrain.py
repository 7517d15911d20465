"""Pretraining of the tiny VLMs: describe rendered synthetic scenes in words (zrcore.data.captions), so that a
reward model starts from a network that can see, as the paper's start from a pretrained Qwen-VL. With
``vision_warmup_steps`` (the default) the vision tower first learns the rendered attributes on its own
(zrcore.training.vision_warmup), then the whole model learns the descriptions:

    L = - (1 / #tokens) sum_rows sum_t log pi(y_t | image, instruction, y_<t)

over the answer tokens and the end of the turn, the instruction being "Describe the image." or a question about
one part of it (with ``contexts``, the default, inside a random surrounding text and system turn).
``pretrained_model(cfg)`` gives the folder a reward recipe starts from with ``init_from="pretrained"``: kept under
``pretrain_cache`` by a hash of the pretraining config, built on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from zrcore import seeding
from zrcore.data.captions import FORMAT_VERSION, PRETRAIN_OFFSET, captions
from zrcore.data.synthetic import SyntheticRubric
from zrcore.models.tiny import build_tiny_reward_model
from zrcore.training.config import PretrainConfig
from zrcore.training.loop import TrainLoop
from zrcore.training.model_setup import configure_reward_model
from zrcore.training.vision_warmup import stack_images, warm_up_vision

log = logging.getLogger("zrcore")

# what the cache key leaves out: bookkeeping that does not change the weights
NOT_IN_KEY = ("output_dir", "save_every", "log_every", "progress", "report_to", "eval_every", "device", "distributed",
              "fsdp_cpu_offload", "attn_implementation", "resume", "overwrite_output_dir", "ref_dtype", "ref_offload")


class PretrainTrainer(TrainLoop):
    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, model=None):
        super().__init__(cfg)
        rm = model if model is not None else build_tiny_reward_model(cfg.arch, cfg.preset, seed=cfg.seed)
        configure_reward_model(rm, cfg, self.rt.device)
        gen = SyntheticRubric(seed=cfg.seed, image_size=cfg.image_size)
        self.train_set = captions(gen, cfg.scenes, cfg.candidates, with_questions=cfg.questions,
                                 contexts=cfg.contexts, match_questions=cfg.match_questions)
        self.eval_set = captions(gen, cfg.eval_scenes, cfg.candidates, start=PRETRAIN_OFFSET + cfg.scenes,
                                 with_questions=cfg.questions, contexts=cfg.contexts,
                                 match_questions=cfg.match_questions)
        self.pixels = self._pixels(rm, self.train_set + self.eval_set)
        self.vision_warmup = self._warm_up_vision(rm) if cfg.vision_warmup_steps else {}
        rm.train()
        net = self.rt.prepare(rm, rm.shard_units(), methods=rm.fsdp_methods)
        self.rm = rm
        seeding.seed_everything(cfg.seed)
        self.setup_optimizer(rm, net)

    def batch_for(self, step: int) -> list:
        """The global batch of a step: a pure function of (seed, step) (one shuffle per epoch), so resume is exact."""
        n, b = len(self.train_set), self.cfg.batch_size
        per_epoch = max(1, n // b)
        epoch, pos = divmod(step, per_epoch)
        order = torch.randperm(n, generator=seeding.generator(seeding.counter_seed(self.cfg.seed, epoch))).tolist()
        return [self.train_set[i] for i in order[pos * b:(pos + 1) * b]]

    @staticmethod
    def _pixels(rm, rows: list) -> dict:
        """Each image through the image processor once: (scene index, candidate) -> (pixel rows, grid_thw row)."""
        firsts = _distinct_images(rows)
        out = {}
        for i in range(0, len(firsts), 256):
            chunk = firsts[i:i + 256]
            img = rm.image_inputs([r.image for r in chunk])
            sizes = img["image_grid_thw"].prod(-1).tolist()
            for r, px, grid in zip(chunk, img["pixel_values"].split(sizes), img["image_grid_thw"]):
                out[(r.index, r.candidate)] = (px, grid)
        return out

    def _warm_up_vision(self, rm) -> dict:
        """The vision tower's warm-up on the training images (each once), checked on the held-out ones. Every
        process runs the same steps on the same images (before the model is wrapped), so the ranks agree."""
        def images(rows: list) -> tuple[list, torch.Tensor]:
            firsts = _distinct_images(rows)
            return ([self.pixels[(r.index, r.candidate)] for r in firsts],
                    torch.tensor([r.attributes for r in firsts], dtype=torch.long))

        cfg = self.cfg
        result = warm_up_vision(rm, *images(self.train_set), steps=cfg.vision_warmup_steps,
                                lr=cfg.vision_warmup_lr, batch_size=cfg.batch_size, seed=cfg.seed,
                                held_out=images(self.eval_set), autocast=self.rt.autocast)
        log.info("vision warm-up, held-out accuracy (majority class): " + ", ".join(
            f"{k[4:]} {v:.2f} ({result['majority/' + k[4:]]:.2f})" for k, v in result.items()
            if k.startswith("acc/")))
        return result

    def _token_logps(self, rows: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities [B, L] of the description tokens, their mask [B, L]) of ``rows``."""
        px = [self.pixels[(r.index, r.candidate)] for r in rows]
        img = stack_images(px)
        ids, mask, comp, img = self.rm.text_inputs([r.instruction for r in rows], img, [r.text for r in rows],
                                                    [r.system for r in rows])
        with self.rt.autocast():
            out = self.net(ids, mask, img, comp, 1.0, with_distribution=False)
        return out.logps.float(), comp

    def train_step(self, step: int) -> dict:
        local, _ = self.rt.shard(self.batch_for(step), "batch_size")
        logps, comp = self._token_logps(local)
        nll, tokens = -logps.sum(), comp.sum()
        loss = nll / tokens.clamp_min(1) * self.rt.share(float(tokens))
        metrics = {"loss/caption_nll": float(nll.detach() / tokens.clamp_min(1))}
        return metrics | self.optimizer_step(loss)

    def evaluate_shard(self, rows: list, indices: list[int]) -> dict:
        """Each held-out row's summed description NLL and its number of tokens."""
        nll, tokens = [], []
        for i in range(0, len(rows), self.cfg.batch_size):
            logps, comp = self._token_logps(rows[i:i + self.cfg.batch_size])
            nll.append(-logps.double().sum(-1).cpu())
            tokens.append(comp.sum(-1).double().cpu())
        return {"nll": torch.cat(nll), "tokens": torch.cat(tokens)}

    def eval_metrics(self, name: str, columns: dict) -> dict:
        """Per-token NLL of the held-out descriptions."""
        return {"caption_nll": float(columns["nll"].sum() / columns["tokens"].sum().clamp_min(1))}

    def report(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results | {"vision_warmup": self.vision_warmup},
                                                          indent=1))
        log.info(f"held-out caption NLL per token: {self.results['start']['caption_nll']:.3f} (random init) -> "
              f"{self.results['final']['caption_nll']:.3f}")


def _distinct_images(rows: list) -> list:
    """The first row of each image (scene index, candidate): a description and its questions share one image."""
    return list({(r.index, r.candidate): r for r in rows}.values())


def pretrain_config_for(cfg) -> PretrainConfig:
    """The pretraining config a reward config's ``init_from="pretrained"`` stands for: its arch, preset, image size,
    device and precision; everything else at PretrainConfig's defaults."""
    return PretrainConfig(arch=cfg.arch, preset=cfg.preset, image_size=cfg.image_size, device=cfg.device,
                          dtype=cfg.dtype, progress=cfg.progress)


def cache_key(cfg: PretrainConfig) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_KEY}
    fields["texts"] = FORMAT_VERSION
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.arch}-{cfg.preset}-{digest}"


def pretrained_model(cfg) -> str:
    """The folder of the pretrained tiny model for a reward config (see the module docstring), pretrained now in
    this process when it is not cached yet. A lock file beside the folder makes a second process that asks for the
    same model at the same time wait for the first one's, instead of pretraining it again."""
    import fcntl

    pre = pretrain_config_for(cfg)
    folder = Path(cfg.pretrain_cache) / cache_key(pre)
    model = folder / "model"
    if (model / "config.json").exists():
        return str(model)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"init_from='pretrained': {folder} is not built yet; run python recipes/pretrain_tiny.py "
                         f"--arch {cfg.arch} --preset {cfg.preset} --image_size {cfg.image_size} --output_dir "
                         f"{folder} in one process first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not (model / "config.json").exists():
            log.info(f"pretraining the tiny {cfg.arch} {cfg.preset} (cached in {folder}; done once)")
            PretrainTrainer(dataclasses.replace(pre, output_dir=str(folder))).fit()
    return str(model)
