"""AGIQA-3K: 2,982 AI-generated images of 300 prompts with human quality and alignment MOS (0..5) and their std.

Mapping onto the rubric: s = s_min + (MOS / 5) (s_max - s_min) and std_s = std (s_max - s_min) / 5, linear; with
the default 1..5 rubric, MOS 0 -> 1.0 and MOS 5 -> 5.0. The quality MOS is the "realism" dimension, the alignment
MOS the "alignment" dimension. Splits are by prompt (never by image) and deterministic.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from zrcore.bins import ScoreBins
from zrcore.data.records import Record

DIMENSION_COLUMNS = {"realism": ("mos_quality", "std_quality"), "alignment": ("mos_align", "std_align")}
MOS_MAX = 5.0
SPLITS = ("train", "val", "test")


def default_root() -> Path:
    """$ZRCORE_AGIQA_ROOT, else ../shared/data/agiqa-3k or shared/data/agiqa-3k from the working directory."""
    env = os.environ.get("ZRCORE_AGIQA_ROOT")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared/data/agiqa-3k", Path.cwd() / "shared/data/agiqa-3k",
                 Path.cwd().parent.parent / "shared/data/agiqa-3k"):
        if (cand / "data.csv").exists():
            return cand
    raise FileNotFoundError("AGIQA-3K not found: pass root=... or set ZRCORE_AGIQA_ROOT to the folder with data.csv")


def prompt_split(prompt: str, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Deterministic split of a prompt by a hash of (seed, prompt)."""
    digest = hashlib.sha1(f"{seed}:{prompt}".encode()).hexdigest()
    u = int(digest[:12], 16) / 16**12
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def mos_to_rubric(mos: float, bins: ScoreBins) -> float:
    return bins.min + (mos / MOS_MAX) * (bins.max - bins.min)


def load_agiqa3k(root: str | Path | None = None, split: str | None = None, dimensions=("realism", "alignment"),
                 bins: ScoreBins | None = None, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> list[Record]:
    """Records of AGIQA-3K (one per image and dimension), optionally one split ("train", "val", "test")."""
    root = Path(root) if root is not None else default_root()
    bins = bins or ScoreBins.half_points()
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} or None, got {split!r}")
    unknown = [d for d in dimensions if d not in DIMENSION_COLUMNS]
    if unknown:
        raise ValueError(f"AGIQA-3K has the dimensions {list(DIMENSION_COLUMNS)}, not {unknown}")
    scale = (bins.max - bins.min) / MOS_MAX
    records = []
    with (root / "data.csv").open(newline="") as fh:
        for line_no, row in enumerate(csv.DictReader(fh), 2):
            prompt = row["prompt"]
            which = prompt_split(prompt, fractions, seed)
            if split is not None and which != split:
                continue
            for dim in dimensions:
                mos_col, std_col = DIMENSION_COLUMNS[dim]
                try:
                    mos, std = float(row[mos_col]), float(row[std_col])
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{root / 'data.csv'}:{line_no}: bad {mos_col}/{std_col} value") from err
                records.append(Record(prompt, str(root / "images" / row["name"]), dim,
                                      min(bins.max, max(bins.min, mos_to_rubric(mos, bins))), prompt_id=prompt,
                                      std=std * scale, meta={"name": row["name"], "mos": mos, "split": which}))
    return records
