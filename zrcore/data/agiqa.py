"""AGIQA-3K: 2,982 AI-generated images of 300 prompts with human quality and alignment MOS (0..5) and their std.

Mapping onto the rubric: s = s_min + (MOS / 5) (s_max - s_min) and std_s = std (s_max - s_min) / 5, linear; with
the default 1..5 rubric, MOS 0 -> 1.0 and MOS 5 -> 5.0. The quality MOS is the "realism" dimension, the alignment
MOS the "alignment" dimension. Splits are by prompt (never by image) and deterministic.
"""

from __future__ import annotations

import csv
import hashlib
import math
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
    raise FileNotFoundError("AGIQA-3K not found: pass --data_root (root= in Python) or set ZRCORE_AGIQA_ROOT to the "
                            "folder with data.csv")


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
    """The linear map of a MOS in [0, MOS_MAX] onto the rubric's [min, max] (no clamping: check the MOS first)."""
    return bins.min + (mos / MOS_MAX) * (bins.max - bins.min)


def _number(row: dict, column: str, where: str, lo: float, hi: float | None) -> float:
    """A finite value of ``column`` in [lo, hi]; the error names the file, line and column."""
    text = row[column]
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{where}: {column} must be a finite number in {bound}, got {text!r}")
    return value


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
    csv_path = root / "data.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"AGIQA-3K: no data.csv in {str(root)!r} (--data_root, root= in Python)")
    records = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        needed = ["name", "prompt"] + [c for d in dimensions for c in DIMENSION_COLUMNS[d]]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}:1: missing column {missing[0]!r} (needed: {needed})")
        for line_no, row in enumerate(reader, 2):
            where = f"{csv_path}:{line_no}"
            prompt = row["prompt"]
            if not prompt or not row["name"]:
                raise ValueError(f"{where}: empty {'prompt' if not prompt else 'name'}")
            which = prompt_split(prompt, fractions, seed)
            if split is not None and which != split:
                continue
            image = root / "images" / row["name"]
            if not image.is_file():
                raise FileNotFoundError(f"{where}: image file not found: {image}")
            for dim in dimensions:
                mos_col, std_col = DIMENSION_COLUMNS[dim]
                mos = _number(row, mos_col, where, 0.0, MOS_MAX)
                std = _number(row, std_col, where, 0.0, None)
                records.append(Record(prompt, str(image), dim, mos_to_rubric(mos, bins), prompt_id=prompt,
                                      std=std * scale, meta={"name": row["name"], "mos": mos, "split": which,
                                                             "line": line_no}))
    return records
