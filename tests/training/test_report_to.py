"""report_to="tensorboard": the scalars of metrics.jsonl, read back with TensorBoard's own reader, also after a
killed run resumed."""

from __future__ import annotations

import json

import pytest

from tests.training.runs import TINY
from zrcore.training.config import SFTConfig, parse_config
from zrcore.training.metrics_log import MetricsLog
from zrcore.training.student import SFTTrainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(path) -> dict[str, list[tuple[int, float]]]:
    out: dict = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, []).append((row["step"], v))
    return out


def same(events: dict, jsonl: dict) -> None:
    assert sorted(events) == sorted(jsonl)
    for tag, points in jsonl.items():
        got = events[tag]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), tag  # float32


def test_metrics_log_writes_the_same_scalars_and_purges_on_resume(tmp_path):
    log = MetricsLog(tmp_path, report_to="tensorboard")
    for step in range(1, 5):
        log.write({"step": step, "loss": 1.0 / step, "lr": 0.1, "note": "text is left out"})
    log.close()
    # a resumed run (from step 2) writes steps 3 and 4 again, with other values
    log = MetricsLog(tmp_path, report_to="tensorboard")
    log.truncate_after(2)
    for step in (3, 4):
        log.write({"step": step, "loss": 10.0 + step, "lr": 0.1})
    log.close()
    events = read_events(tmp_path / "tensorboard")
    same(events, jsonl_scalars(tmp_path / "metrics.jsonl"))
    assert events["loss"][-1] == (4, 14.0)


def test_a_recipe_run_reports_to_tensorboard(tmp_path):
    out = tmp_path / "sft"
    cfg = parse_config(SFTConfig, TINY + ["--steps", "2", "--report_to", "tensorboard", "--output_dir", str(out)])
    SFTTrainer(cfg).fit()
    events = read_events(out / "tensorboard")
    same(events, jsonl_scalars(out / "metrics.jsonl"))
    assert {"loss", "eval/hpa", "grad_norm"} <= set(events)


def test_missing_wandb_is_named(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    log = MetricsLog(tmp_path, report_to="wandb")
    with pytest.raises(ImportError, match="zrcore\\[wandb\\]"):
        log.write({"step": 1, "loss": 1.0})


def test_report_to_takes_a_list_or_all_as_in_transformers(tmp_path):
    from zrcore.training.metrics_log import report_targets

    assert report_targets("none") == () and report_targets([]) == ()
    assert report_targets("all") == ("tensorboard", "wandb")
    assert report_targets("tensorboard,wandb") == report_targets(["wandb", "tensorboard"])[::-1]
    assert parse_config(SFTConfig, ["--report_to", "all"]).report_to == ["tensorboard", "wandb"]
    assert parse_config(SFTConfig, []).report_to == ["none"]
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("report_to: [tensorboard]\n")
    assert parse_config(SFTConfig, ["--config", str(cfg_file)]).report_to == ["tensorboard"]
    with pytest.raises(ValueError, match="report_to must be one of"):
        parse_config(SFTConfig, ["--report_to", "tensorboard,mlflow"])
