"""recipes/paper_table.py's tables from fake run folders: each row holds the runs' own numbers and a bootstrap
interval of its mean, and the paper's orderings get the paired bootstrap's interval and verdict."""

import argparse
import json
import sys

import pytest
import torch

from tests.training.runs import ROOT
from zrcore import metrics
from zrcore.bins import ScoreBins
from zrcore.data.records import Record

sys.path.insert(0, str(ROOT / "recipes"))
try:
    import paper_table
finally:
    sys.path.pop(0)

BINS = ScoreBins.half_points()
DIMS = ("alignment", "realism")
PROMPTS, IMAGES = 10, 4


def held_out() -> list[Record]:
    g = torch.Generator().manual_seed(0)
    return [Record(f"prompt {p}", None, d, round(float(torch.rand((), generator=g)) * 12) / 3 + 1, f"syn-{p}")
            for p in range(PROMPTS) for d in DIMS for _ in range(IMAGES)]


def fake_metrics(records: list[Record], probs: torch.Tensor, tokens: float) -> dict:
    """The run's own metrics as evaluate.score_metrics computes them (calibration left as placeholders)."""
    mean = probs.double() @ BINS.values.double()
    out = {}
    for dim in DIMS:
        idx = [i for i, r in enumerate(records) if r.dimension == dim]
        y, groups = [records[i].score for i in idx], [records[i].prompt_id for i in idx]
        out[dim] = {"plcc": metrics.plcc(mean[idx], y), "srcc": metrics.srcc(mean[idx], y),
                    "hpa": metrics.hpa(mean[idx], y, groups), "hpa_margin": metrics.hpa(mean[idx], y, groups, 0.5),
                    "nll": 2.0, "w1": 1.0, "tokens": tokens, "n": len(idx)}
    out["all"] = {k: sum(out[d][k] for d in DIMS) / len(DIMS) for k in paper_table.KEYS} | {"n": len(records)}
    return out


def write_eval(path, skill: float, noise_seed: int, records=None, jitter_seed: int | None = None) -> None:
    """An eval_<name>.json as a reward run writes it: the metrics and per-record predictions of a model whose
    distribution peaks near the human score by ``skill`` (``jitter_seed``: a little more noise of its own)."""
    records = records or held_out()
    g = torch.Generator().manual_seed(noise_seed)
    y = torch.tensor([r.score for r in records], dtype=torch.float64)
    logits = torch.randn(len(records), len(BINS), generator=g, dtype=torch.float64) \
        - skill * 3 * (BINS._values64[None] - y[:, None]).abs()
    if jitter_seed is not None:
        g = torch.Generator().manual_seed(jitter_seed)
        logits = logits + 0.1 * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, 1).float()
    rows = [{"prompt": r.prompt, "dimension": r.dimension, "score": r.score, "prompt_id": r.prompt_id, "probs": p,
             "tokens": 10.0} for r, p in zip(records, probs.tolist())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": fake_metrics(records, probs, 10.0), "predictions": rows}))


def fake_runs(tmp_path, seeds=(0, 1, 2)) -> dict:
    """(size, name) -> {seed: eval file}: a GDSO teacher, a weak GRPO row, a copy of GDSO as the no-pairwise row,
    a RISD student with its teacher's noise and a little of its own, a chance-level OPD student with one seed
    fewer."""
    skill = {("teacher", "GDSO"): 0.3, ("teacher", "GRPO (parsed text)"): 0.05, ("student", "RISD"): 0.3,
             ("student", "OPD"): 0.0}
    table = {}
    for seed in seeds:
        for (size, name), s in skill.items():
            if name == "OPD" and seed == seeds[-1]:
                continue
            run = tmp_path / paper_table.folder(size, name, seed)
            noise = 100 * seed + len("GDSO" if name == "RISD" else name)  # RISD: its teacher's noise, and some
            write_eval(run / "eval_final.json", s, noise, jitter_seed=seed if name == "RISD" else None)
            table.setdefault((size, name), {})[seed] = run / "eval_final.json"
        gdso = tmp_path / paper_table.folder("teacher", "GDSO", seed)
        write_eval(gdso / "eval_start.json", 0.0, 100 * seed + 7)
        table.setdefault(("teacher", "zero-shot"), {})[seed] = gdso / "eval_start.json"
        table.setdefault(("teacher", "GDSO without pairwise"), {})[seed] = gdso / "eval_final.json"
    return table


def args_for(tmp_path) -> argparse.Namespace:
    return argparse.Namespace(seeds=[0, 1, 2], steps=60, student_steps=60, data="synthetic", eval_prompts=PROMPTS,
                              extra=[], json=str(tmp_path / "docs.json"))


def test_table_gives_each_row_its_seeds_mean_and_interval_and_judges_the_orderings(tmp_path):
    table = fake_runs(tmp_path)
    ceiling = {d: {"plcc": 0.98, "srcc": 0.95, "hpa": 0.93, "hpa_margin": 0.97} for d in (*DIMS, "all")}
    paper_table.write_table(table, ceiling, tmp_path, args_for(tmp_path))
    data = json.loads((tmp_path / "table.json").read_text())
    assert json.loads((tmp_path / "docs.json").read_text()) == data
    text = (tmp_path / "table.md").read_text()
    for (size, name), evals in table.items():
        row = data["rows"][f"{size}/{name}"]
        assert data["seeds_per_row"][f"{size}/{name}"] == sorted(evals)
        metrics = [json.loads(evals[s].read_text())["metrics"] for s in sorted(evals)]
        for dim in (*DIMS, "all"):
            for key in paper_table.KEYS:
                assert row[dim][key]["values"] == [m[dim][key] for m in metrics]
                assert row[dim][key]["mean"] == pytest.approx(sum(m[dim][key] for m in metrics) / len(metrics))
            for key in ("hpa", "plcc"):
                low, high = row[dim][key]["interval"]
                assert low <= row[dim][key]["mean"] <= high and low < high
        hpa, plcc = row["all"]["hpa"], row["all"]["plcc"]
        assert (f"| {size} | {name} | {len(evals)} | {hpa['mean']:.3f} [{hpa['interval'][0]:.3f}, "
                f"{hpa['interval'][1]:.3f}] | {plcc['mean']:.3f} [{plcc['interval'][0]:.3f}, "
                f"{plcc['interval'][1]:.3f}] |") in text
    assert "| - | ceiling (true score) | - | 0.930 | 0.980 | 0.950 | 0.970 | - | - | - |" in text
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert lines["- GDSO > GRPO on HPA"].endswith("(3 seeds): holds")
    assert lines["- GDSO > GRPO on PLCC"].endswith("(3 seeds): holds")
    assert lines["- RISD > OPD on HPA"].endswith("(2 seeds): holds")  # OPD lacks seed 2: the common seeds
    assert lines["- pairwise helps on HPA"] == "- pairwise helps on HPA: +0.000 [+0.000, +0.000] (3 seeds): not resolved"
    assert "- GDSO > SFT on HPA" not in lines  # no SFT row: not judged
    assert ": holds: the student trails its teacher by at most 0.03 HPA" in lines["- RISD within 0.03 HPA of its GDSO teacher"]
    found = {(o["claim"], o.get("metric")): o for o in data["orderings"]}
    grpo = found[("GDSO > GRPO", "hpa")]
    gdso, weak = data["rows"]["teacher/GDSO"]["all"]["hpa"], data["rows"]["teacher/GRPO (parsed text)"]["all"]["hpa"]
    assert grpo["estimate"] == pytest.approx(gdso["mean"] - weak["mean"]) and grpo["low"] > 0
    assert found[("RISD within 0.03 HPA of its GDSO teacher", "hpa")]["holds"]


def test_a_student_far_below_its_teacher_fails_the_closeness_claim(tmp_path):
    """RISD at chance against a skilled teacher: the interval of the gap lies above 0.03 HPA, which the table says
    (not merely "not shown")."""
    table = fake_runs(tmp_path)
    for seed, path in table[("student", "RISD")].items():
        write_eval(path, 0.0, 100 * seed + 4)
    paper_table.write_table(table, None, tmp_path, args_for(tmp_path))
    line = next(x for x in (tmp_path / "table.md").read_text().splitlines()
                if x.startswith("- RISD within 0.03 HPA of its GDSO teacher"))
    assert ": fails: the student trails its teacher by more than 0.03 HPA" in line
    found = json.loads((tmp_path / "table.json").read_text())["orderings"]
    close = next(o for o in found if o["claim"] == "RISD within 0.03 HPA of its GDSO teacher")
    assert close["interval"]["low"] > 0.03 and not close["holds"] and close["verdict"] == "fails"


def test_table_refuses_runs_that_are_not_paired_or_missing(tmp_path):
    table = fake_runs(tmp_path, seeds=(0, 1))
    other = held_out()[:-1]  # one held-out record fewer
    bad = tmp_path / "teacher-SFT-s0" / "eval_final.json"
    write_eval(bad, 1.0, 5, records=other)
    write_eval(tmp_path / "teacher-SFT-s1" / "eval_final.json", 1.0, 6)
    table[("teacher", "SFT")] = {0: bad, 1: tmp_path / "teacher-SFT-s1" / "eval_final.json"}
    with pytest.raises(ValueError, match="teacher-SFT-s1/eval_final.json' is not paired"):
        paper_table.write_table(table, None, tmp_path, args_for(tmp_path))
    table[("teacher", "SFT")] = {0: tmp_path / "teacher-SFT-s9" / "eval_final.json"}
    with pytest.raises(SystemExit, match="teacher-SFT-s9/eval_final.json is missing"):
        paper_table.write_table(table, None, tmp_path, args_for(tmp_path))
