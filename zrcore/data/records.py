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


def load_jsonl(path: str | Path, bins: ScoreBins | None = None, require_score: bool = True) -> list[Record]:
    """Users' own data, one JSON object per line: ``prompt``, ``image`` (a path, relative to the file's folder or
    absolute), ``dimension``, and ``score`` or ``ratings`` (a list; aggregated by dropping the highest and lowest),
    optionally ``std`` and ``prompt_id``. Errors name the line."""
    path = Path(path)
    bins = bins or ScoreBins.half_points()
    records = []
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object")
            for key, typ in JSONL_FIELDS.items():
                if key not in row:
                    raise ValueError(f"{path}:{line_no}: missing field {key!r}")
                if not isinstance(row[key], typ):
                    raise ValueError(f"{path}:{line_no}: field {key!r} must be a {typ.__name__}")
            ratings = row.get("ratings")
            if "score" in row:
                score = float(row["score"])
            elif ratings:
                score = float(aggregate_ratings([ratings])[0])
            elif require_score:
                raise ValueError(f"{path}:{line_no}: missing field 'score' (or 'ratings')")
            else:
                score = float("nan")
            if not math.isnan(score) and not bins.min - 1e-6 <= score <= bins.max + 1e-6:
                raise ValueError(f"{path}:{line_no}: score {score} outside the rubric range [{bins.min}, {bins.max}]")
            image = Path(row["image"])
            image = image if image.is_absolute() else path.parent / image
            records.append(Record(row["prompt"], str(image), row["dimension"], score,
                                  prompt_id=str(row.get("prompt_id", row["prompt"])),
                                  ratings=[float(x) for x in ratings] if ratings else None,
                                  std=float(row["std"]) if row.get("std") is not None else None,
                                  meta={"line": line_no}))
    return records
