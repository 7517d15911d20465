import json

import pytest

from zrcore.cli.score import main
from zrcore.data import SyntheticRubric

TINY = ["--model", "tiny:qwen2_vl"]


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
    assert main([str(root), "--prompts", str(root / "prompts.txt"), "--output", str(out), "--no-progress", *TINY]) == 0
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
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--no-progress", *TINY]) == 0
    err = capsys.readouterr().err
    assert "row 2: missing field 'image' (skipped)" in err
    assert "row 3: image file not found" in err
    assert "row 4: cannot read image" in err
    assert len(out.read_text().splitlines()) == 1
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--on-error", "fail", "--no-progress", *TINY]) == 2
    assert "row 2: missing field 'image'" in capsys.readouterr().err


def test_unknown_dimension_is_an_error(folder):
    root, _ = folder
    with pytest.raises(SystemExit):
        main([str(root), "--prompt", "x", "--dimension", "beauty", "--no-progress", *TINY])


def test_missing_model_folder_is_a_one_line_error(folder, capsys):
    root, _ = folder
    with pytest.raises(SystemExit) as exit_info:
        main([str(root), "--prompt", "x", "--model", str(root / "no-such-model"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "is not a checkpoint folder" in err and "Traceback" not in err


def test_no_image_scored_exits_non_zero(tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "x", "image": "nowhere.png"}) + "\n" + json.dumps({"prompt": "y"}) + "\n")
    assert main([str(items), "--dimension", "realism", "-o", str(tmp_path / "o.jsonl"), "--no-progress", *TINY]) == 1
    assert "no image scored (2 bad rows of 2)" in capsys.readouterr().err


def one_line_exit_2(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


def test_model_is_required_and_a_random_init_model_says_so(folder, tmp_path, capsys, caplog):
    root, _ = folder
    err = one_line_exit_2(capsys, [str(root), "--prompt", "x", "--no-progress"])
    assert "--model" in err and "required" in err
    with caplog.at_level("WARNING", logger="zrcore"):
        assert main([str(root / "img_00.png").replace("img_00.png", ""), "--prompt", "x", "--no-progress", *TINY,
                     "-o", str(tmp_path / "o.jsonl")]) == 0
    assert "random-init model" in caplog.text


def test_a_prompt_that_is_not_a_string_is_a_bad_row_not_a_traceback(folder, tmp_path, capsys):
    root, _ = folder
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": 42, "image": str(root / "img_00.png")}) + "\n"
                     + json.dumps({"prompt": "ok", "image": str(root / "img_01.png")}) + "\n")
    out = tmp_path / "o.jsonl"
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--no-progress", *TINY]) == 0
    assert "row 1: field 'prompt' must be a string, got 42 (skipped)" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 1


def test_a_failing_run_leaves_no_half_written_output(folder, tmp_path, capsys):
    root, _ = folder
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "ok", "image": str(root / "img_00.png")}) + "\n"
                     + json.dumps({"prompt": "bad", "image": "nowhere.png"}) + "\n")
    out = tmp_path / "o.jsonl"
    assert main([str(items), "--dimension", "realism", "-o", str(out), "--on-error", "fail", "--batch-size", "1",
                 "--no-progress", *TINY]) == 2
    assert not out.exists() and not (tmp_path / "o.jsonl.tmp").exists()


def test_images_are_decoded_batch_by_batch(folder, tmp_path, monkeypatch):
    import zrcore.cli.score as score

    events = []
    real_open, real_score = score.open_image, score.score_batch
    monkeypatch.setattr(score, "open_image", lambda item: events.append("open") or real_open(item))
    monkeypatch.setattr(score, "score_batch", lambda *a: events.append("score") or real_score(*a))
    root, _ = folder
    assert main([str(root), "--prompt", "x", "--dimension", "realism", "--batch-size", "4", "--no-progress",
                 "-o", str(tmp_path / "o.jsonl"), *TINY]) == 0
    assert events[:5] == ["open"] * 4 + ["score"]  # 20 images: never more than a batch decoded at once
    assert events.count("score") == 5


def test_teacher_mode_samples_reasoning(folder, tmp_path):
    root, _ = folder
    out = tmp_path / "o.jsonl"
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "a red circle", "image": str(root / "img_00.png")}) + "\n")
    assert main([str(items), "--dimension", "realism", "--mode", "teacher", "--samples", "1", "-o", str(out),
                 "--no-progress", *TINY]) == 0
    row = json.loads(out.read_text())
    assert abs(sum(row["realism"]["probs"]) - 1) < 1e-5


def test_a_checkpoint_missing_tensors_is_refused_in_one_line(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from zrcore.models import build_tiny_reward_model

    ckpt = tmp_path / "ckpt"
    build_tiny_reward_model("qwen2_vl", "student").save_pretrained(ckpt)
    weights = load_file(ckpt / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, ckpt / "model.safetensors",
              metadata={"format": "pt"})
    capsys.readouterr()
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "x", "image": "nowhere.png"}) + "\n")
    err = one_line_exit_2(capsys, [str(items), "--model", str(ckpt), "--no-progress"])
    assert "missing keys" in err and "refusing to fill them at random" in err
    err = one_line_exit_2(capsys, [str(items), "--model", str(tmp_path), "--no-progress"])
    assert "has no config.json" in err
    build_tiny_reward_model("qwen2_vl", "student").save_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config.get("text_config", config)["intermediate_size"] = 96
    (ckpt / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    err = one_line_exit_2(capsys, [str(items), "--model", str(ckpt), "--no-progress"])
    assert "weights do not fit its config (6 tensors of other shapes" in err
