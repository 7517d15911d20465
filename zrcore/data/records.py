"""Records (one prompt, image, dimension and its scores) and groups (all candidates of one prompt and dimension)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zrcore import seeding
from zrcore.bins import ScoreBins
from zrcore.metrics import aggregate_ratings

DIMENSIONS = ("alignment", "realism", "aesthetics", "plausibility")  # the rubric dimensions, in table order


@dataclass
class Record:
    """One (prompt, image, dimension) with its score on the rubric scale.

    ``image`` is a path or a PIL image; ``ratings`` the raters' scores (on the rubric scale) when known, or
    ``std`` the spread of the raters; ``prompt_id`` groups the candidates of one prompt.
    """

    prompt: str
    image: object
    dimension: str
    score: float
    prompt_id: str = ""
    ratings: list[float] | None = None
    std: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.prompt_id:
            self.prompt_id = self.prompt


@dataclass
class Group:
    """The M candidates of one prompt for one dimension (a GDSO training instance)."""

    prompt: str
    prompt_id: str
    dimension: str
    records: list[Record]

    @property
    def images(self) -> list:
        return [r.image for r in self.records]

    @property
    def scores(self) -> torch.Tensor:
        return torch.tensor([r.score for r in self.records], dtype=torch.float32)

    def soft_targets(self, bins: ScoreBins) -> torch.Tensor:
        """[M, K] rater distributions: from (score, std) as a discretised Gaussian (std 0 where unknown)."""
        std = torch.tensor([r.std if r.std is not None else 0.0 for r in self.records], dtype=torch.float64)
        return bins.soft_labels(self.scores.double(), std).float()


def group_records(records: Iterable[Record], min_candidates: int = 2) -> list[Group]:
    """Groups by (prompt_id, dimension), in first-seen order; groups with fewer than min_candidates are dropped."""
    buckets: dict = defaultdict(list)
    for r in records:
        buckets[(r.prompt_id, r.dimension)].append(r)
    return [Group(rs[0].prompt, pid, dim, rs) for (pid, dim), rs in buckets.items() if len(rs) >= min_candidates]


def batch_groups(groups: Sequence[Group], prompts_per_batch: int, candidates: int, seed: int, epoch: int = 0):
    """Yields lists of groups for GDSO: each group cut to ``candidates`` members (a seeded choice), shuffled per
    epoch; the last short batch is dropped so every batch has the same shape."""
    g = seeding.generator(seeding.epoch_seed(seed, epoch))
    order = torch.randperm(len(groups), generator=g).tolist()
    eligible = [groups[i] for i in order if len(groups[i].records) >= candidates]
    for start in range(0, len(eligible) - prompts_per_batch + 1, prompts_per_batch):
        batch = []
        for grp in eligible[start:start + prompts_per_batch]:
            pick = torch.randperm(len(grp.records), generator=g)[:candidates].tolist()
            batch.append(Group(grp.prompt, grp.prompt_id, grp.dimension, [grp.records[i] for i in sorted(pick)]))
        yield batch


def same_prompt_pairs(records: Sequence[Record]) -> list[tuple[int, int]]:
    """Index pairs (a, b), a < b, of records sharing prompt and dimension with different scores (for HPA)."""
    by_key: dict = defaultdict(list)
    for i, r in enumerate(records):
        by_key[(r.prompt_id, r.dimension)].append(i)
    pairs = []
    for idx in by_key.values():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                if records[idx[x]].score != records[idx[y]].score:
                    pairs.append((idx[x], idx[y]))
    return pairs


# ---- JSONL ---------------------------------------------------------------------------------------------------------

JSONL_FIELDS = {"prompt": str, "image": str, "dimension": str}
SPLITS = ("train", "val", "test")  # a JSONL row's "split"; rows without one are training rows


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _label(value, name: str, where: str, bins: ScoreBins) -> float:
    """A score-like value: a JSON number, finite, inside the rubric range; the error names the line and field."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy / torch scalar
        value = value.item()
    if not _is_number(value):
        raise ValueError(f"{where}: field {name!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: field {name!r} must be finite, got {value}")
    if not bins.min - 1e-6 <= value <= bins.max + 1e-6:
        raise ValueError(f"{where}: {name} {value} outside the rubric range [{bins.min}, {bins.max}]")
    return value


def check_scores(scores: Sequence, bins: ScoreBins, what: str = "score") -> None:
    """Every value a finite number inside the rubric range; the error names ``what`` and the first bad row."""
    for i, value in enumerate(scores):
        _label(value, what, f"row {i}", bins)


def parse_jsonl_row(row, where: str, base: Path, bins: ScoreBins, require_score: bool = True,
                    dimensions: Sequence[str] | None = DIMENSIONS, check_images: bool = True,
                    line: int | None = None) -> Record:
    """One JSONL row as a Record (see ``load_jsonl``); every error names ``where`` (file:line) and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: each line must be a JSON object")
    for key, typ in JSONL_FIELDS.items():
        if key not in row:
            raise ValueError(f"{where}: missing field {key!r}")
        if not isinstance(row[key], typ):
            raise ValueError(f"{where}: field {key!r} must be a {typ.__name__}, got {row[key]!r}")
    if not row["prompt"].strip():
        raise ValueError(f"{where}: field 'prompt' must not be empty")
    if dimensions is not None and row["dimension"] not in dimensions:
        raise ValueError(f"{where}: dimension {row['dimension']!r} is not a rubric dimension ({list(dimensions)})")
    ratings = row.get("ratings")
    if ratings is not None:
        if not isinstance(ratings, list) or not ratings:
            raise ValueError(f"{where}: field 'ratings' must be a non-empty list of numbers, got {ratings!r}")
        ratings = [_label(x, "ratings", where, bins) for x in ratings]
    if row.get("score") is not None:
        score = _label(row["score"], "score", where, bins)
    elif "score" in row:
        raise ValueError(f"{where}: field 'score' must be a number, got null")
    elif ratings:
        score = float(aggregate_ratings([ratings])[0])
    elif require_score:
        raise ValueError(f"{where}: missing field 'score' (or 'ratings')")
    else:
        score = float("nan")
    std = row.get("std")
    if std is not None:
        if not _is_number(std) or not math.isfinite(std) or std < 0:
            raise ValueError(f"{where}: field 'std' must be a finite number >= 0, got {std!r}")
        std = float(std)
    split = row.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: field 'split' must be one of {list(SPLITS)}, got {split!r}")
    prompt_id = row.get("prompt_id", row["prompt"])
    if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool) or prompt_id == "":
        raise ValueError(f"{where}: field 'prompt_id' must be a non-empty string or an integer, got {prompt_id!r}")
    image = Path(row["image"])
    image = image if image.is_absolute() else base / image
    if check_images and not image.is_file():
        raise ValueError(f"{where}: image file not found: {image}")
    meta: dict = {"line": line}
    if split is not None:
        meta["split"] = split
    return Record(row["prompt"], str(image), row["dimension"], score, prompt_id=str(prompt_id),
                  ratings=ratings, std=std, meta=meta)


def load_jsonl(path: str | Path, bins: ScoreBins | None = None, require_score: bool = True,
               dimensions: Sequence[str] | None = DIMENSIONS, check_images: bool = True) -> list[Record]:
    """Users' own data, one JSON object per line:

    - ``prompt`` (string), ``image`` (a path, relative to the file's folder or absolute; it must exist unless
      ``check_images=False``), ``dimension`` (one of ``dimensions``, the rubric's; None accepts any);
    - ``score`` (a number in the rubric range) or ``ratings`` (a list of such numbers, aggregated by dropping the
      highest and lowest);
    - optionally ``std`` (>= 0, the raters' spread), ``prompt_id`` (groups the candidates of one prompt; default
      the prompt) and ``split`` (``"train"``, ``"val"`` or ``"test"``; kept in ``Record.meta["split"]``; no split:
      a training row).

    Nothing is changed silently: a NaN, out-of-range or non-numeric score, a negative std, an unknown dimension or
    split, or a missing image is an error naming the file, the line and the field."""
    path = Path(path)
    bins = bins or ScoreBins.half_points()
    records = []
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from err
            records.append(parse_jsonl_row(row, where, path.parent, bins, require_score, dimensions, check_images,
                                           line_no))
    return records
