import json
from pathlib import Path

import pytest
import torch

from zrcore import ScoreBins, metrics
from zrcore.data import SyntheticRubric, batch_groups, group_records, load_agiqa3k, load_jsonl, prompt_split, same_prompt_pairs, true_scores

AGIQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "agiqa-3k"
needs_agiqa = pytest.mark.skipif(not (AGIQA / "data.csv").exists(), reason="AGIQA-3K not present beside the repo")


@needs_agiqa
def test_agiqa_counts_splits_and_mapping():
    recs = load_agiqa3k(AGIQA, dimensions=("realism",))
    assert len(recs) == 2982
    assert len({r.prompt_id for r in recs}) == 300
    splits = {s: {r.prompt_id for r in load_agiqa3k(AGIQA, split=s, dimensions=("alignment",))}
              for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    assert sum(len(v) for v in splits.values()) == 300
    r = recs[0]
    assert r.score == pytest.approx(1 + r.meta["mos"] / 5 * 4)  # MOS 0..5 -> rubric 1..5 linearly
    assert all(1.0 <= x.score <= 5.0 for x in recs)
    both = load_agiqa3k(AGIQA, split="test")
    assert {x.dimension for x in both} == {"realism", "alignment"}


def test_prompt_split_is_deterministic():
    assert prompt_split("a cat") == prompt_split("a cat")
    assert {prompt_split(f"p{i}") for i in range(200)} == {"train", "val", "test"}


def test_synthetic_is_deterministic_and_true_scores_recoverable():
    a = SyntheticRubric(seed=7).records(6, candidates=3)
    b = SyntheticRubric(seed=7).records(6, candidates=3)
    assert [(r.prompt, r.dimension, r.score, r.ratings) for r in a] == [(r.prompt, r.dimension, r.score, r.ratings)
                                                                          for r in b]
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a[::4], b[::4]))
    c = SyntheticRubric(seed=8).records(6, candidates=3)
    assert [r.prompt for r in a] != [r.prompt for r in c] or [r.score for r in a] != [r.score for r in c]
    gen = SyntheticRubric(seed=7)
    for r in a:
        scene = gen.scene(r.meta["index"])
        from zrcore.data.synthetic import Defects

        assert true_scores(scene, Defects(**r.meta["defects"]))[r.dimension] == r.meta["true"]
        assert r.score == pytest.approx(float(metrics.aggregate_ratings([r.ratings])[0]))


def test_synthetic_raters_track_the_truth():
    recs = SyntheticRubric(seed=1, n_raters=5, rater_noise=0.5).records(30, candidates=4)
    true = torch.tensor([r.meta["true"] for r in recs])
    score = torch.tensor([r.score for r in recs])
    assert (score - true).abs().mean() < 0.35
    assert metrics.plcc(score, true) > 0.85
    # every dimension varies across candidates
    for dim in ("alignment", "realism", "aesthetics", "plausibility"):
        vals = {r.meta["true"] for r in recs if r.dimension == dim}
        assert len(vals) >= 3, dim


def test_groups_batches_and_pairs():
    recs = SyntheticRubric(seed=2).records(8, candidates=4, dimensions=("alignment",))
    groups = group_records(recs)
    assert len(groups) == 8 and all(len(g.records) == 4 for g in groups)
    assert groups[0].soft_targets(ScoreBins.half_points()).shape == (4, 9)
    batches = list(batch_groups(groups, prompts_per_batch=3, candidates=2, seed=0))
    assert len(batches) == 2 and all(len(b) == 3 and all(len(g.records) == 2 for g in b) for b in batches)
    assert batches == list(batch_groups(groups, prompts_per_batch=3, candidates=2, seed=0))
    pairs = same_prompt_pairs(recs)
    assert all(recs[a].prompt_id == recs[b].prompt_id and recs[a].score != recs[b].score for a, b in pairs)


def test_jsonl_loading_and_errors(tmp_path):
    img = tmp_path / "a.png"
    SyntheticRubric().records(1, 1, ("realism",))[0].image.save(img)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "p", "image": "a.png", "dimension": "realism", "ratings": [1, 3, 4, 5]})
                    + "\n\n" + json.dumps({"prompt": "p", "image": str(img), "dimension": "realism", "score": 2.5})
                    + "\n")
    recs = load_jsonl(good)
    assert [r.score for r in recs] == [3.5, 2.5] and Path(recs[0].image) == img
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "image": "a.png", "dimension": "realism", "score": 3}) + "\n"
                   + json.dumps({"prompt": "p", "dimension": "realism", "score": 3}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'image'"):
        load_jsonl(bad)
    bad.write_text(json.dumps({"prompt": "p", "image": "a.png", "dimension": "realism", "score": 7}) + "\n")
    with pytest.raises(ValueError, match=r":1: score 7.0 outside the rubric range"):
        load_jsonl(bad)


def _luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def test_clutter_contrasts_with_the_background_and_is_a_patch_wide():
    from zrcore.data.synthetic import BACKGROUNDS, Defects, Scene, contrast_colour, render

    g = torch.Generator().manual_seed(0)
    for bg, rgb in BACKGROUNDS.items():
        for _ in range(200):
            assert abs(_luminance(contrast_colour(bg, g)) - _luminance(rgb)) >= (50 if bg == "gray" else 150), bg
    scene = Scene(1, "circle", "red", "white")
    clean = torch.tensor(list(render(scene, Defects("red", "circle", 1), 112, seed=3).getdata())).float()
    marked = torch.tensor(list(render(scene, Defects("red", "circle", 1, clutter=1), 112, seed=3).getdata())).float()
    changed = ((clean - marked).abs().sum(-1) > 60).view(112, 112)
    cols, rows = changed.any(0).nonzero().flatten(), changed.any(1).nonzero().flatten()
    assert changed.sum() > 60  # three "x" marks, each 14 px wide with 4 px strokes
    assert int(cols.max() - cols.min()) >= 13 and int(rows.max() - rows.min()) >= 13


def test_overlap_is_visible_and_its_pair_stands():
    from zrcore.data.synthetic import COLOURS, Defects, Scene, render

    scene = Scene(2, "square", "blue", "white")
    colour = torch.tensor(COLOURS["blue"]).float()

    def blue_pixels(d) -> int:
        px = torch.tensor(list(render(scene, d, 112, seed=1).getdata())).float()
        return int(((px - colour).abs().sum(-1) < 30).sum())

    apart, overlapping = blue_pixels(Defects("blue", "square", 2)), blue_pixels(Defects("blue", "square", 2, overlap=True))
    assert overlapping < 0.85 * apart  # half of one object is hidden behind the other
    gen = SyntheticRubric(seed=4)
    drawn = [gen.defects(gen.scene(i), i, c) for i in range(300) for c in range(4)]
    assert any(d.overlap for d in drawn)
    assert all(d.floating <= d.count - 2 for d in drawn if d.overlap)


def test_labels_do_not_depend_on_which_dimensions_are_asked():
    """A record's raters are seeded by its dimension's name: a realism-only run scores against the same labels as
    the four-dimension run, in any order of ``dimensions``."""
    gen = SyntheticRubric(seed=0, image_size=16)
    four = {(r.prompt_id, r.meta["candidate"], r.dimension): r.ratings for r in gen.records(6, 4)}
    for dims in (("realism",), ("plausibility", "alignment"), ("aesthetics", "realism", "alignment")):
        for r in gen.records(6, 4, dimensions=dims):
            assert r.ratings == four[(r.prompt_id, r.meta["candidate"], r.dimension)], (dims, r.dimension)
    with pytest.raises(ValueError, match="colourfulness"):
        gen.ratings(3.0, 0, 0, "colourfulness")
