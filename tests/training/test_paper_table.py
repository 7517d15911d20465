"""recipes/paper_table.py's tables hold the runs' own numbers, and its verdicts on the paper's orderings follow the
twice-the-larger-std rule."""

import argparse
import json
import statistics
import sys

import pytest

from tests.training.runs import ROOT

sys.path.insert(0, str(ROOT / "recipes"))
try:
    import paper_table
finally:
    sys.path.pop(0)

KEYS = paper_table.KEYS


def _result(hpa: float, plcc: float) -> dict:
    row = {k: 0.5 for k in KEYS} | {"hpa": hpa, "plcc": plcc}
    return {"realism": dict(row), "alignment": dict(row), "all": dict(row)}


def test_table_holds_the_seeds_numbers_and_judges_the_orderings(tmp_path):
    table = {("teacher", "GDSO"): [_result(0.70, 0.50), _result(0.72, 0.52), _result(0.71, 0.51)],
             ("teacher", "GRPO (parsed text)"): [_result(0.60, 0.50), _result(0.61, 0.55), _result(0.59, 0.45)],
             ("student", "RISD"): [_result(0.69, 0.4), _result(0.70, 0.4), _result(0.68, 0.4)],
             ("student", "OPD"): [_result(0.50, 0.1), _result(0.70, 0.1), _result(0.60, 0.1)]}
    ceiling = {d: {"plcc": 0.98, "srcc": 0.95, "hpa": 0.75, "hpa_margin": 0.97} for d in ("realism", "alignment", "all")}
    args = argparse.Namespace(seeds=[0, 1, 2], steps=60, student_steps=60, data="synthetic", eval_prompts=48,
                              extra=[], json=str(tmp_path / "docs.json"))
    paper_table.write_table(table, ceiling, tmp_path, args)
    data = json.loads((tmp_path / "table.json").read_text())
    assert json.loads((tmp_path / "docs.json").read_text()) == data
    gdso = data["rows"]["teacher/GDSO"]["all"]["hpa"]
    assert gdso["values"] == [0.70, 0.72, 0.71]
    assert gdso["mean"] == pytest.approx(0.71) and gdso["std"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.71]))
    text = (tmp_path / "table.md").read_text()
    assert "| teacher | GDSO | 3 | 0.510 ± 0.010 | 0.500 ± 0.000 | 0.710 ± 0.010 |" in text
    assert "| - | ceiling (true score) | - | 0.980 | 0.950 | 0.750 | 0.970 | - | - | - |" in text
    assert "- GDSO > GRPO on HPA: +0.110 (2 std = 0.020): holds" in text
    assert "- GDSO > GRPO on PLCC: +0.010 (2 std = 0.100): not resolved" in text
    assert "- RISD > OPD on HPA: +0.090 (2 std = 0.200): not resolved" in text
    assert "- RISD within 0.03 HPA of its GDSO teacher: gap +0.020: holds" in text
    paper_table.write_table({k: v[:1] for k, v in table.items()}, ceiling, tmp_path, args)
    assert "- GDSO > GRPO on HPA: +0.100 (2 std = 0.000): one seed: no spread to judge by" in (
        tmp_path / "table.md").read_text()
