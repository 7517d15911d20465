"""Training and evaluation data for the recipes, from a config: the synthetic rubric set, AGIQA-3K or a JSONL file.
Images are loaded once and resized to ``image_size`` (the tiny models' pixel budget).

The synthetic split: training prompts are scenes 0 .. train_prompts - 1 of the run's seed; held-out prompts are
scenes from ``EVAL_OFFSET`` on of the fixed ``eval_seed`` (the same images whatever the run's seed). No held-out
image is a training image, but the prompt strings repeat: the scene grammar has 162 prompts (1-3 objects, 3 shapes,
6 colours, 3 backgrounds), so some held-out prompts are also training prompts with other images (12, 18 and 7 of
the 48 held-out prompts at seeds 0, 1 and 2 with the defaults)."""

from __future__ import annotations

from PIL import Image

from zrcore.data import SyntheticRubric, group_records, load_agiqa3k, load_jsonl
from zrcore.data.records import Record
from zrcore.models import load_images

EVAL_OFFSET = 100_000  # synthetic held-out prompts are indexed from here


class ResizedImage:
    """An image source decoded and resized on first use, then kept: a rank decodes only the images it scores."""

    def __init__(self, source, size: int):
        self.source, self.size = source, size
        self._image: Image.Image | None = None

    def open(self) -> Image.Image:
        if self._image is None:
            img = load_images([self.source])[0]
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.BICUBIC)
            self._image = img
        return self._image

    def __repr__(self) -> str:
        return f"ResizedImage({self.source!r}, {self.size})"


def _resized(records: list[Record], size: int) -> list[Record]:
    cache: dict = {}
    out = []
    for r in records:
        key = r.image if isinstance(r.image, str) else id(r.image)
        if key not in cache:
            cache[key] = ResizedImage(r.image, size)
        out.append(Record(r.prompt, cache[key], r.dimension, r.score, r.prompt_id, r.ratings, r.std, r.meta))
    return out


def build_data(cfg) -> tuple[list, list[Record]]:
    """(training groups, evaluation records) for cfg.data."""
    dims = tuple(cfg.dimensions)
    if cfg.data == "synthetic":
        from zrcore.data.captions import PRETRAIN_OFFSET

        if cfg.train_prompts > EVAL_OFFSET:
            raise ValueError(f"train_prompts must be <= {EVAL_OFFSET} (the held-out prompts start there)")
        if EVAL_OFFSET + cfg.eval_prompts > PRETRAIN_OFFSET:
            raise ValueError(f"eval_prompts must be <= {PRETRAIN_OFFSET - EVAL_OFFSET} (the pretraining scenes "
                             f"start at index {PRETRAIN_OFFSET})")
        gen = SyntheticRubric(seed=cfg.seed, image_size=cfg.image_size)
        train = gen.records(cfg.train_prompts, cfg.candidates, dims)
        held_out = SyntheticRubric(seed=getattr(cfg, "eval_seed", cfg.seed), image_size=cfg.image_size)
        evals = held_out.records(cfg.eval_prompts, cfg.candidates, dims, start=EVAL_OFFSET)
    elif cfg.data == "agiqa":
        root = cfg.data_root or None
        train = load_agiqa3k(root, split="train", dimensions=dims)
        evals = load_agiqa3k(root, split="test", dimensions=dims)
    else:
        train, evals = jsonl_splits(cfg.data, dims)
    if cfg.eval_limit:
        evals = limit_by_prompt(evals, cfg.eval_limit)
    train, evals = _resized(train, cfg.image_size), _resized(evals, cfg.image_size)
    return group_records(train, min_candidates=2), evals


def jsonl_splits(path: str, dims: tuple[str, ...]) -> tuple[list[Record], list[Record]]:
    """(training records, evaluation records) of a JSONL file by each row's ``split``: rows without one and
    ``"train"`` rows train, ``"test"`` rows evaluate, ``"val"`` rows do neither. Only the ``dims`` dimensions are
    kept. A prompt in both the training and the test rows (a leak), or no test row at all, is an error."""
    records = [r for r in load_jsonl(path) if r.dimension in dims]
    train = [r for r in records if r.meta.get("split", "train") == "train"]
    evals = [r for r in records if r.meta.get("split") == "test"]
    if not evals:
        raise ValueError(f"{path}: no row of the dimensions {list(dims)} has \"split\": \"test\"; mark the "
                         f"held-out rows (the evaluation set) with it")
    if not train:
        raise ValueError(f"{path}: no training row of the dimensions {list(dims)} (rows without \"split\" or "
                         f"with \"split\": \"train\")")
    seen = {r.prompt_id: r for r in train}
    for r in evals:
        if r.prompt_id in seen:
            raise ValueError(f"{path}:{r.meta['line']}: prompt {r.prompt_id!r} is a test row and a training row "
                             f"(line {seen[r.prompt_id].meta['line']}): split by prompt, so that no test prompt is "
                             f"trained on")
    return train, evals


def limit_by_prompt(records: list[Record], limit: int) -> list[Record]:
    """At most ``limit`` records per dimension, whole prompts at a time (every candidate of a kept prompt, so
    that same-prompt pairs, and HPA, remain), prompts in the order they first appear; the first prompt is kept
    whole even when it alone has more."""
    by_prompt: dict = {}
    for r in records:
        by_prompt.setdefault((r.dimension, r.prompt_id), []).append(r)
    order = list(by_prompt)
    kept_keys, count = set(), {}
    for dim, pid in order:
        n = len(by_prompt[(dim, pid)])
        if count.get(dim, 0) == 0 or count[dim] + n <= limit:
            kept_keys.add((dim, pid))
            count[dim] = count.get(dim, 0) + n
    return [r for r in records if (r.dimension, r.prompt_id) in kept_keys]
