"""Recipes at tiny scale in one process: exact resume after a kill, evaluate.py reproduces the logged numbers, and
the student recipes run end to end (several processes: test_distributed.py)."""

import json
import sys

import pytest
import torch

from tests.training.runs import GDSO_TINY, ROOT, TINY
from tests.training.runs import logged as _losses
from zrcore import metrics
from zrcore.training.config import GDSOTeacherConfig, OPDConfig, RISDConfig, SFTConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer
from zrcore.training.student import OPDTrainer, RISDTrainer, SFTTrainer


def _rows(out) -> list[dict]:
    """The metrics rows of a run without their wall-clock timings."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "time/step")} for r in rows]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    """A GDSO run stopped after a reset of its reference policy (every 2 steps: after step 2) and resumed from its
    step-3 checkpoint logs the same metrics rows and writes the same results.md (the sampled traces of the start and
    the end) and results as an uninterrupted run."""
    args = GDSO_TINY + ["--ref_reset_every", "2"]  # 4 steps: resets after steps 2 and 4
    full = parse_config(GDSOTeacherConfig, args + ["--output_dir", str(tmp_path / "full")])
    res_full = GDSOTeacherTrainer(full).fit()
    report = (tmp_path / "full" / "results.md").read_text()  # sampled traces of both evaluations
    assert "reasoning of the zero-shot model" in report and "reasoning of the trained model" in report
    cut = GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, args + ["--output_dir", str(tmp_path / "cut")]))
    start = {k: v.clone() for k, v in cut.ref.state_dict().items()}
    monkeypatch.setenv("ZRCORE_STOP_AFTER_STEP", "3")
    with pytest.raises(SystemExit, match="stopped after step 3"):
        cut.fit()
    assert any(not torch.equal(v, start[k]) for k, v in cut.ref.state_dict().items())  # the reference was reset
    monkeypatch.delenv("ZRCORE_STOP_AFTER_STEP")
    res_cut = GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, args + ["--output_dir", str(tmp_path / "cut")])).fit()
    assert _rows(tmp_path / "full") == _rows(tmp_path / "cut")
    assert len(_losses(tmp_path / "cut", "loss/total")) == 4
    assert (tmp_path / "cut" / "results.md").read_text() == report
    assert res_full == res_cut


@pytest.mark.slow
def test_students_and_evaluate_reproduce_logged_numbers(tmp_path):
    teacher_out = tmp_path / "teacher"
    GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, GDSO_TINY + ["--steps", "2", "--output_dir", str(teacher_out)])).fit()
    sft = SFTTrainer(parse_config(SFTConfig, TINY + ["--steps", "3", "--output_dir", str(tmp_path / "sft")])).fit()
    risd = RISDTrainer(parse_config(RISDConfig, TINY + ["--steps", "2", "--teacher", str(teacher_out / "model"),
                                                         "--output_dir", str(tmp_path / "risd")])).fit()
    opd = OPDTrainer(parse_config(OPDConfig, TINY + ["--steps", "2", "--teacher", str(teacher_out / "model"),
                                                      "--sampling.max_reasoning_tokens", "3",
                                                      "--output_dir", str(tmp_path / "opd")])).fit()
    for res in (sft, risd, opd):
        assert res["final"]["all"]["n"] == res["start"]["all"]["n"] > 0
    assert opd["final"]["all"]["tokens"] > 0 and sft["final"]["all"]["tokens"] == 0
    assert len(_losses(tmp_path / "risd", "loss")) == 2
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import evaluate as evaluate_recipe
    finally:
        sys.path.pop(0)
    ev_out = tmp_path / "eval"
    spec_s, spec_t = str(tmp_path / "sft" / "model"), str(teacher_out / "model") + ":teacher"
    # the teacher is sampled as it was trained (its zrcore_sampling.yaml: 1 sample of at most 3 tokens)
    res = evaluate_recipe.main([spec_s, spec_t, "--output_dir", str(ev_out), *TINY])
    teacher_final = json.loads((teacher_out / "results.json").read_text())["final"]
    for key in ("plcc", "srcc", "hpa", "nll", "w1", "tokens"):
        assert res[spec_s]["all"][key] == pytest.approx(sft["final"]["all"][key], abs=1e-6)
        assert res[spec_t]["all"][key] == pytest.approx(teacher_final["all"][key], abs=1e-6)
    # the JSON output recomputes to the same metrics with zrcore.metrics
    data = json.loads((ev_out / "results.json").read_text())
    preds = data["predictions"][spec_s]
    # means in float64 from the stored probabilities: near-uniform q makes PLCC sensitive to rounding the means
    probs = torch.tensor([r["probs"] for r in preds], dtype=torch.float64)
    mean = probs @ torch.arange(1, 5.01, 0.5, dtype=torch.float64)
    target = [r["score"] for r in preds]
    assert metrics.plcc(mean, target) == pytest.approx(data["metrics"][spec_s]["realism"]["plcc"], abs=1e-6)
    assert metrics.hpa(mean, target, [r["prompt_id"] for r in preds]) == pytest.approx(
        data["metrics"][spec_s]["realism"]["hpa"], abs=1e-9)
    assert (ev_out / "results.png").exists() and (ev_out / "results.md").exists()
    assert "| ceiling (true score) | realism |" in (ev_out / "results.md").read_text()
    assert data["ceiling"]["realism"]["hpa"] > 0.5
