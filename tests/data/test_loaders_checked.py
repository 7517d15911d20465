"""Every loader checks what users feed it: columns, types, finiteness, the score range, the images and the split,
each error naming the file and line; nothing is clamped, dropped or re-split silently. Property-based: random bad
rows are rejected with their line, random good rows load to the same records."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zrcore.bins import ScoreBins
from zrcore.data import load_agiqa3k, load_jsonl, same_prompt_pairs
from zrcore.data.records import DIMENSIONS, check_scores
from zrcore.training.config import TrainConfig
from zrcore.training.datasets import build_data, jsonl_splits, limit_by_prompt

AGIQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "agiqa-3k"
needs_agiqa = pytest.mark.skipif(not (AGIQA / "data.csv").exists(), reason="AGIQA-3K not present beside the repo")
COLUMNS = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align", "mos"]


def tiny_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="PNG")


def agiqa_root(tmp_path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    """A fake AGIQA-3K folder: data.csv with ``rows`` (defaults filled in) and an image per row."""
    root = tmp_path / "agiqa"
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "data.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(rows):
            full = {"name": f"im{i}.png", "prompt": f"prompt {i // 2}", "mos_quality": "2.5", "std_quality": "0.5",
                    "mos_align": "3.0", "std_align": "0.4", "mos": "2.5"} | row
            writer.writerow(full)
            if not (root / "images" / full["name"]).exists() and full["name"] != "missing.png":
                tiny_png(root / "images" / full["name"])
    return root


# ---- AGIQA-3K ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "7.5", "-2", "high", "", "inf"])
def test_agiqa_bad_mos_is_an_error_with_its_line_not_a_clamped_label(tmp_path, value):
    root = agiqa_root(tmp_path, [{}, {}, {"mos_quality": value}])
    with pytest.raises(ValueError, match=r"data.csv:4: mos_quality must be a"):
        load_agiqa3k(root, dimensions=("realism",))


def test_agiqa_bad_std_missing_column_and_missing_image(tmp_path):
    root = agiqa_root(tmp_path, [{"std_align": "-0.1"}])
    with pytest.raises(ValueError, match=r"data.csv:2: std_align must be a finite number in >= 0"):
        load_agiqa3k(root, dimensions=("alignment",))
    root = agiqa_root(tmp_path / "b", [{}], columns=[c for c in COLUMNS if c != "mos_align"])
    with pytest.raises(ValueError, match=r"data.csv:1: missing column 'mos_align'"):
        load_agiqa3k(root, dimensions=("alignment",))
    assert load_agiqa3k(root, dimensions=("realism",))  # a column a dimension does not need may be absent
    root = agiqa_root(tmp_path / "c", [{"name": "missing.png"}])
    with pytest.raises(FileNotFoundError, match=r"data.csv:2: image file not found"):
        load_agiqa3k(root, dimensions=("realism",))
    with pytest.raises(FileNotFoundError, match=r"--data_root"):
        load_agiqa3k(tmp_path / "nowhere")


def test_agiqa_maps_the_mos_linearly_without_clamping(tmp_path):
    root = agiqa_root(tmp_path, [{"mos_quality": "0"}, {"mos_quality": "5"}, {"mos_quality": "2.5"}])
    assert [r.score for r in load_agiqa3k(root, dimensions=("realism",))] == [1.0, 5.0, 3.0]


@needs_agiqa
def test_agiqa_eval_limit_keeps_whole_prompts_so_hpa_has_pairs():
    cfg = TrainConfig(data="agiqa", dimensions=["realism"], eval_limit=20, image_size=16, init_from="")
    _, evals = build_data(cfg)
    assert 0 < len(evals) <= 20 + 10
    assert same_prompt_pairs(evals)  # the old first-20-rows cut had none: HPA was nan
    by_prompt = {}
    for r in load_agiqa3k(AGIQA, split="test", dimensions=("realism",)):
        by_prompt.setdefault(r.prompt_id, 0)
        by_prompt[r.prompt_id] += 1
    assert all(by_prompt[r.prompt_id] == sum(e.prompt_id == r.prompt_id for e in evals) for r in evals)


def test_limit_by_prompt_takes_whole_prompts_per_dimension():
    from zrcore.data.records import Record

    recs = [Record(f"p{i // 3}", None, d, 3.0) for d in ("realism", "alignment") for i in range(12)]
    kept = limit_by_prompt(recs, 7)
    for d in ("realism", "alignment"):
        assert [r.prompt for r in kept if r.dimension == d] == ["p0"] * 3 + ["p1"] * 3


# ---- JSONL ---------------------------------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


@pytest.fixture
def img(tmp_path) -> Path:
    tiny_png(tmp_path / "a.png")
    return tmp_path / "a.png"


def row(**kw) -> dict:
    return {"prompt": "p", "image": "a.png", "dimension": "realism", "score": 3.0} | kw


@pytest.mark.parametrize("bad,message", [
    ('{"prompt": "p", "image": "a.png", "dimension": "realism", "score": NaN}', "field 'score' must be finite"),
    (row(score="high"), "field 'score' must be a number, got 'high'"),
    (row(score=True), "field 'score' must be a number"),
    (row(score=None), "field 'score' must be a number, got null"),
    (row(score=9.0), "score 9.0 outside the rubric range"),
    (row(ratings=[3, float("inf")]), "field 'ratings' must be finite"),
    (row(ratings=[]), "field 'ratings' must be a non-empty list"),
    (row(std=-0.5), "field 'std' must be a finite number >= 0"),
    (row(dimension="beauty"), "dimension 'beauty' is not a rubric dimension"),
    (row(image="nowhere.png"), "image file not found"),
    (row(split="holdout"), "field 'split' must be one of"),
    (row(prompt=3), "field 'prompt' must be a str"),
    (row(prompt_id=[1]), "field 'prompt_id' must be a non-empty string or an integer"),
    ("[1, 2]", "each line must be a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_jsonl_bad_rows_name_the_file_line_and_field(tmp_path, img, bad, message):
    path = write_jsonl(tmp_path / "d.jsonl", [row(), bad])
    with pytest.raises(ValueError, match=r"d.jsonl:2: ") as info:
        load_jsonl(path)
    assert message in str(info.value)


def test_jsonl_split_is_honoured_no_train_test_leak(tmp_path, img):
    rows = [row(prompt=f"p{i}", score=1.0 + i % 3) for i in range(4) for _ in range(2)]
    rows += [row(prompt="held", split="test"), row(prompt="held", split="test", score=4.0)]
    rows += [row(prompt="val", split="val")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [r.meta.get("split") for r in load_jsonl(path)][-3:] == ["test", "test", "val"]
    cfg = TrainConfig(data=str(path), dimensions=["realism"], image_size=16, init_from="")
    groups, evals = build_data(cfg)
    assert [r.prompt for r in evals] == ["held", "held"]  # eval/n counts the test rows only
    assert {g.prompt for g in groups} == {"p0", "p1", "p2", "p3"}  # neither the test nor the val rows are trained on
    write_jsonl(path, rows + [row(prompt="held")])
    with pytest.raises(ValueError, match=r"d.jsonl:9: prompt 'held' is a test row and a training row \(line 12\)"):
        jsonl_splits(str(path), ("realism",))
    write_jsonl(path, [row(prompt=f"p{i}") for i in range(4)])
    with pytest.raises(ValueError, match=r'has "split": "test"'):
        jsonl_splits(str(path), ("realism",))


def test_scores_handed_to_the_trl_trainer_are_checked():
    bins = ScoreBins.half_points()
    check_scores([1.0, 3.5, 5], bins)
    for bad, message in ((float("nan"), "must be finite"), (9.0, "outside the rubric range"), ("3", "a number")):
        with pytest.raises(ValueError, match=f"row 1: .*{message}"):
            check_scores([3.0, bad], bins, "train_dataset score")


# ---- properties ----------------------------------------------------------------------------------------------------

BINS = ScoreBins.half_points()
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
good_rows = st.fixed_dictionaries(
    {"prompt": text.filter(str.strip), "dimension": st.sampled_from(DIMENSIONS),
     "score": st.floats(1.0, 5.0, allow_nan=False)},
    optional={"std": st.floats(0.0, 3.0), "prompt_id": st.one_of(text.filter(bool), st.integers(0, 99)),
              "split": st.sampled_from(["train", "val", "test"])})
# (field, value) that makes a good row bad
bad_edits = st.one_of(
    st.tuples(st.just("score"), st.one_of(st.floats(allow_nan=True).filter(lambda x: not 1.0 <= x <= 5.0),
                                          text, st.booleans(), st.lists(st.integers(), max_size=2))),
    st.tuples(st.just("std"), st.one_of(st.floats(max_value=-1e-9), st.just(float("inf")), text)),
    st.tuples(st.just("dimension"), text.filter(lambda t: t not in DIMENSIONS)),
    st.tuples(st.just("split"), text.filter(lambda t: t not in ("train", "val", "test"))),
    st.tuples(st.just("prompt"), st.one_of(st.integers(), st.none(), st.floats(allow_nan=False), st.just(" "))),
    st.tuples(st.just("image"), st.just("no/such/file.png")),
    st.tuples(st.just("prompt_id"), st.one_of(st.just(""), st.none(), st.booleans(), st.lists(text, max_size=1))),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(good_rows, min_size=1, max_size=6))
def test_good_rows_load_to_the_same_records(tmp_path, img, rows):
    path = write_jsonl(tmp_path / "good.jsonl", [r | {"image": "a.png"} for r in rows])
    recs = load_jsonl(path)
    assert len(recs) == len(rows)
    for r, src in zip(recs, rows):
        assert (r.prompt, r.dimension, r.score) == (src["prompt"], src["dimension"], src["score"])
        assert r.std == src.get("std") and r.prompt_id == str(src.get("prompt_id", src["prompt"]))
        assert r.meta.get("split") == src.get("split") and Path(r.image) == img


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(good_rows, min_size=1, max_size=5), where=st.integers(0, 4), edit=bad_edits)
def test_a_random_bad_row_is_rejected_with_its_line(tmp_path, img, rows, where, edit):
    rows = [r | {"image": "a.png"} for r in rows]
    where = where % len(rows)
    key, value = edit
    rows[where] = rows[where] | {key: value}
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"bad.jsonl:{where + 1}: "):
        load_jsonl(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mos=st.floats(allow_nan=True, allow_infinity=True), line=st.integers(0, 3))
def test_agiqa_rejects_any_mos_outside_0_5_with_its_line(tmp_path, mos, line):
    rows = [{} for _ in range(4)]
    rows[line] = {"mos_align": repr(mos)}
    root = agiqa_root(tmp_path, rows)
    if math.isfinite(mos) and 0 <= mos <= 5:
        recs = load_agiqa3k(root, dimensions=("alignment",))
        assert recs[line].score == pytest.approx(1 + mos * 4 / 5)
    else:
        with pytest.raises(ValueError, match=rf"data.csv:{line + 2}: mos_align"):
            load_agiqa3k(root, dimensions=("alignment",))
