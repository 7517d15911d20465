"""The suite's row writer (benchmarks/results.py) and driver arguments (benchmarks/gpu_suite.py)."""

import pytest

from benchmarks import gpu_suite, results


def test_rows_reach_the_file_as_they_are_written_and_headers_repeat_after_another_table(tmp_path, monkeypatch):
    path = tmp_path / "results.md"
    monkeypatch.setenv(results.ENV, str(path))
    monkeypatch.setattr(results, "_last_table", [None])
    a, b = results.Table("op", "time (ms):"), results.Table("test", "passed:")
    a.row("pairwise_gap", "0.41")
    assert path.read_text().splitlines()[-3:] == ["| op | time (ms) |", "|---|---:|", "| pairwise_gap | 0.41 |"]
    a.row("score_distribution", "0.89")  # same table: no second header
    b.row("tests/ops", 3)
    a.row("fused_linear_kl", "67.5")  # after table b: its header again
    lines = path.read_text().splitlines()
    assert lines.count("| op | time (ms) |") == 2 and lines.count("| test | passed |") == 1
    assert lines[-1] == "| fused_linear_kl | 67.5 |"
    with pytest.raises(ValueError, match="a row of 1 cells for a table of 2 columns"):
        a.row("x")


def test_suite_names_its_steps_and_rejects_unknown_ones(capsys):
    assert gpu_suite.NAMES[:6] == ["ops", "kl", "logprobs", "compile", "train", "fsdp"]
    with pytest.raises(SystemExit):
        gpu_suite.main(["--only", "nosuch"])
    assert "--only: unknown step(s) ['nosuch']" in capsys.readouterr().err
