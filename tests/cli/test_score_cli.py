import json

import pytest

from zrcore.cli.score import main
from zrcore.data import SyntheticRubric


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    recs = SyntheticRubric(seed=3).records(5, candidates=4, dimensions=("alignment",))
    for i, r in enumerate(recs):
        r.image.save(root / f"img_{i:02d}.png")
    (root / "prompts.txt").write_text("\n".join(r.prompt for r in recs) + "\n")
    return root, recs


def test_scores_a_folder_of_20_images_for_all_dimensions(folder, tmp_path, capsys):
    root, recs = folder
    out = tmp_path / "scores.jsonl"
    assert main([str(root), "--prompts", str(root / "prompts.txt"), "--output", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20
    assert [r["prompt"] for r in rows] == [r.prompt for r in recs]
    for row in rows:
        for dim in ("alignment", "realism", "aesthetics", "plausibility"):
            q = row[dim]
            assert len(q["probs"]) == 9 and abs(sum(q["probs"]) - 1) < 1e-5
            assert abs(sum(p * v for p, v in zip(q["probs"], row["bins"])) - q["mean"]) < 1e-4
    assert "scored 20 images, 0 bad rows" in capsys.readouterr().err


def test_bad_rows_are_reported_by_line_and_skipped_or_fail(folder, tmp_path, capsys):
    root, _ = folder
    (tmp_path / "broken.png").write_bytes(b"not a png")
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join([
        json.dumps({"prompt": "a red circle", "image": str(root / "img_00.png")}),
        json.dumps({"prompt": "missing image field"}),
        json.dumps({"prompt": "no such file", "image": "nowhere.png"}),
        json.dumps({"prompt": "corrupt", "image": "broken.png"}),
    ]) + "\n")
    out = tmp_path / "o.jsonl"
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "row 2: missing field 'image' (skipped)" in err
    assert "row 3: image file not found" in err
    assert "row 4: cannot read image" in err
    assert len(out.read_text().splitlines()) == 1
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--on-error", "fail", "--no-progress"]) == 2
    assert "row 2: missing field 'image'" in capsys.readouterr().err


def test_unknown_dimension_is_an_error(folder):
    root, _ = folder
    with pytest.raises(SystemExit):
        main([str(root), "--prompt", "x", "--dimension", "beauty", "--no-progress"])


def test_missing_model_folder_is_a_one_line_error(folder, capsys):
    root, _ = folder
    with pytest.raises(SystemExit) as exit_info:
        main([str(root), "--prompt", "x", "--model", str(root / "no-such-model"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "is not a local checkpoint directory" in err and "Traceback" not in err


def test_no_image_scored_exits_non_zero(tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "x", "image": "nowhere.png"}) + "\n" + json.dumps({"prompt": "y"}) + "\n")
    assert main([str(items), "--dimension", "realism", "-o", str(tmp_path / "o.jsonl"), "--no-progress"]) == 1
    assert "no image scored (2 bad rows of 2)" in capsys.readouterr().err
