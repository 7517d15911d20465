"""The config parser: YAML values go through the same typed reading as command-line values (one-line errors naming
the file, line and field), values that can be accepted are accepted correctly, and every recipe error is one line
with exit code 2 unless --debug / ZRCORE_DEBUG asks for the traceback. Property-based over the config fields."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zrcore.training.cli_args import ConfigError, coerce_yaml, flat_fields, parse_config
from zrcore.training.config import GDSOTeacherConfig, GeneratorConfig, SFTConfig, TrainConfig
from zrcore.training.entry import run_recipe

ROOT = Path(__file__).resolve().parents[2]


def from_yaml(tmp_path, text: str, cls=SFTConfig, argv=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return parse_config(cls, ["--config", str(path), *argv])


def test_yaml_values_are_typed_like_the_command_line(tmp_path):
    cfg = from_yaml(tmp_path, "lr: 1e-3\ndimensions: realism\nbatch_size: 2\nprogress: 'false'\nmax_grad_norm: 2\n")
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # PyYAML reads 1e-3 as a string
    assert cfg.dimensions == ["realism"]  # one dimension, not ['r', 'e', ...]
    assert cfg.batch_size == 2 and cfg.progress is False and cfg.max_grad_norm == 2.0
    assert from_yaml(tmp_path, "dimensions: [realism, alignment]\n").dimensions == ["realism", "alignment"]
    assert TrainConfig(dimensions="realism").dimensions == ["realism"]


@pytest.mark.parametrize("text,message", [
    ("batch_size: 2.5\n", "c.yaml:1: batch_size: expected an integer, got 2.5"),
    ("seed: 0\nlr: fast\n", "c.yaml:2: lr: expected a number, got 'fast'"),
    ("lr: .nan\n", "c.yaml:1: lr: expected a finite number"),
    ("progress: 3\n", "c.yaml:1: progress: expected a boolean (true or false), got 3"),
    ("steps: true\n", "c.yaml:1: steps: expected an integer, got True"),
    ("data: [a, b]\n", "c.yaml:1: data: expected a string, got ['a', 'b']"),
    ("sampling:\n  temperature: hot\n", "c.yaml:2: sampling.temperature: expected a number, got 'hot'"),
    ("steps: null\n", "c.yaml:1: steps: expected an integer, got null"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("max_grad_norm: -1\n", "max_grad_norm must be > 0"),
])
def test_bad_yaml_values_are_one_line_errors_naming_file_line_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        from_yaml(tmp_path, text)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("argv,message", [
    (["--max_grad_norm", "-1"], "max_grad_norm must be > 0"),
    (["--max_grad_norm", "0"], "max_grad_norm must be > 0"),
    (["--eval_limit", "-1"], "eval_limit must be >= 0"),
    (["--lr", "nan"], "--lr: expected a finite number"),
    (["--batch_size", "2.5"], "--batch_size: expected an integer, got '2.5'"),
    (["--stepz", "3"], "unrecognized arguments: --stepz 3"),
    (["--dimensions", "realism,realism"], "dimensions must not repeat"),
    (["--resume", "true", "--overwrite_output_dir", "true"], "exclude each other"),
])
def test_bad_flags_end_in_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(SFTConfig, lambda cfg: pytest.fail("the trainer must not be built"), argv=argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err and "usage:" not in err


def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(ConfigError, match="max_grad_norm"):
        run_recipe(SFTConfig, lambda cfg: None, argv=["--max_grad_norm", "-1", "--debug"])
    monkeypatch.setenv("ZRCORE_DEBUG", "1")
    with pytest.raises(ConfigError, match="max_grad_norm"):
        run_recipe(SFTConfig, lambda cfg: None, argv=["--max_grad_norm", "-1"])


def test_a_recipe_process_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/train_sft.py"), "--data", "agiqa", "--data_root",
                           "/nonexistent", "--init_from", "", "--output_dir", str(tmp_path / "never")],
                          capture_output=True, text=True, env={"PATH": "", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--data_root" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "never").exists()  # nothing half-written


def test_agiqa_defaults_to_its_own_dimensions():
    assert parse_config(SFTConfig, ["--data", "agiqa"]).dimensions == ["alignment", "realism"]
    assert parse_config(SFTConfig, ["--data", "agiqa", "--dimensions", "realism"]).dimensions == ["realism"]
    assert parse_config(SFTConfig, []).dimensions == ["alignment", "realism", "aesthetics", "plausibility"]


# ---- properties ----------------------------------------------------------------------------------------------------

SCALARS = {name: tp for name, (tp, _) in flat_fields(GDSOTeacherConfig).items() if tp in (int, float, bool)}


def value_for(tp):
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-10**6, 10**6)
    return st.floats(allow_nan=False, allow_infinity=False, width=32)


def cli_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_yaml_and_command_line_read_every_scalar_field_alike(tmp_path, data):
    name = data.draw(st.sampled_from(sorted(SCALARS)))
    tp = SCALARS[name]
    value = data.draw(value_for(tp))
    nested = {name.split(".")[0]: {name.split(".")[1]: value}} if "." in name else {name: value}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(nested))
    outcomes = []
    for argv in (["--config", str(path)], [f"--{name}={cli_text(value)}"]):
        try:
            cfg = parse_config(GDSOTeacherConfig, argv)
            obj = cfg
            for part in name.split("."):
                obj = getattr(obj, part)
            outcomes.append(("ok", obj, type(obj)))
        except ValueError as err:  # a value the field's check refuses: both refuse it, naming the field
            assert name.split(".")[-1] in str(err) and "\n" not in str(err)
            outcomes.append(("refused",))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] == "ok":
        assert outcomes[0][1] == value and outcomes[0][2] is tp


WRONG = {int: st.one_of(st.floats(allow_nan=False).filter(lambda x: x != int(x) if x == x and abs(x) < 1e300
                                                            else True), st.booleans(), st.lists(st.integers(),
                                                                                                 max_size=2)),
         float: st.one_of(st.booleans(), st.lists(st.floats(), max_size=2), st.just("fast"), st.just(".nan")),
         bool: st.one_of(st.integers(2, 100), st.floats(allow_nan=False), st.just("maybe"))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), pad=st.integers(0, 3))
def test_a_wrong_typed_yaml_value_is_refused_with_its_line(tmp_path, data, pad):
    name = data.draw(st.sampled_from(sorted(n for n in SCALARS if "." not in n)))
    value = data.draw(WRONG[SCALARS[name]])
    path = tmp_path / "w.yaml"
    other = "".join(f"# comment {i}\n" for i in range(pad))
    path.write_text(other + yaml.safe_dump({name: value}))
    with pytest.raises(ConfigError, match=rf"w.yaml:{pad + 1}: {name}: expected"):
        parse_config(GDSOTeacherConfig, ["--config", str(path)])


@pytest.mark.parametrize("cls", [GDSOTeacherConfig, GeneratorConfig])
def test_coerce_yaml_covers_every_field_type(cls):
    for name, (tp, _) in flat_fields(cls).items():
        inner = tp
        if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
            inner = next(a for a in typing.get_args(tp) if a is not type(None))
        if typing.get_origin(inner) is list:
            sample = ["x"] if typing.get_args(inner)[0] is str else [1]
        else:
            sample = {int: 1, float: 1.5, bool: True, str: "x"}[inner]
        assert coerce_yaml(tp, sample) == sample, name


def test_progress_false_also_silences_hugging_face_bars():
    from transformers.utils import logging as hf_logging

    try:
        recipe_out = run_recipe(SFTConfig, lambda cfg: type("T", (), {"fit": lambda self: "built"})(),
                                argv=["--progress", "false"])
        assert recipe_out == "built" and not hf_logging.is_progress_bar_enabled()
        run_recipe(SFTConfig, lambda cfg: type("T", (), {"fit": lambda self: None})(), argv=[])
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
