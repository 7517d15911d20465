"""A sweep reuses a finished run's results only when the run was made with the settings and the code it asks for
now; otherwise it refuses naming the folder and the difference, or runs it again afresh when told."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.training.runs import ROOT
from tests.training.test_loop import ToyLoop
from zrcore.training import run_dir, sweep
from zrcore.training.cli_args import ConfigError, parse_config
from zrcore.training.config import RunConfig
from zrcore.training.run_dir import code_commit
from zrcore.training.sweep import run_once, stale_reason

ARGS = ["--steps", "2", "--warmup_steps", "1"]
# a recipe of the toy loop whose report writes results.json (the number of its steps)
SCRIPT = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(ROOT)!r})
    from tests.training.test_loop import ToyLoop
    from zrcore.training.config import RunConfig, run_recipe

    class Recipe(ToyLoop):
        def report(self):
            (self.out / "results.json").write_text(json.dumps({{"steps": self.step}}))

    run_recipe(RunConfig, Recipe)
""")


def finished(out: Path, args: list[str]) -> None:
    """A finished toy run of ``args`` in ``out``, with a results.json saying it is the old one."""
    ToyLoop(parse_config(RunConfig, sweep.run_args(args, out))).fit()
    (out / "results.json").write_text(json.dumps({"steps": "old"}))


def test_a_finished_run_of_the_same_settings_and_code_is_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "code_commit", lambda: "abc")
    monkeypatch.setattr(sweep, "code_commit", lambda: "abc")
    finished(tmp_path / "run", ARGS)
    assert run_once(tmp_path / "no_such_script.py", ARGS + ["--log_every", "2"], tmp_path / "run") == {"steps": "old"}


def test_other_settings_are_refused_naming_the_folder_and_the_field(tmp_path):
    finished(tmp_path / "run", ARGS)
    with pytest.raises(ConfigError, match=r"run holds results made with steps=2, now steps=3: remove the folder"):
        run_once(tmp_path / "no_such_script.py", ["--steps", "3", "--warmup_steps", "1"], tmp_path / "run")
    # an evaluation setting changes the results too, unlike the run-dir check of a resume
    assert stale_reason(ARGS + ["--eval_every", "1"], tmp_path / "run") == "eval_every=0, now eval_every=1"


def test_another_commit_of_the_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "code_commit", lambda: "abc")
    finished(tmp_path / "run", ARGS)
    monkeypatch.setattr(sweep, "code_commit", lambda: "def")
    with pytest.raises(ConfigError, match=r"run holds results made with the code at commit abc, now def"):
        run_once(tmp_path / "no_such_script.py", ARGS, tmp_path / "run")


def test_a_run_without_a_record_is_not_reused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="no record of the settings and code it was made with"):
        run_once(tmp_path / "no_such_script.py", ARGS, tmp_path / "run")


def test_a_changed_run_is_run_again_afresh_when_told(tmp_path):
    script = tmp_path / "recipe.py"
    script.write_text(SCRIPT)
    finished(tmp_path / "run", ARGS)
    new = ["--steps", "3", "--warmup_steps", "1"]
    assert run_once(script, new, tmp_path / "run", rerun_changed=True) == {"steps": 3}
    assert stale_reason(new, tmp_path / "run") is None  # its record is the new run's


def test_code_commit_is_the_checkout_head():
    root = Path(run_dir.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if head.returncode or Path(top.stdout.strip()).resolve() != root:  # not run from a git checkout
        assert code_commit() is None
    else:
        assert code_commit().split("-dirty-")[0] == head.stdout.strip()
