"""Recipe configs as the interface: every field documented in --help, nested sampling, renamed flags, one-line
errors for every bad value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from zrcore.training.config import (
    GDSOTeacherConfig,
    GeneratorConfig,
    OPDConfig,
    PretrainConfig,
    RISDConfig,
    SamplingConfig,
    SFTConfig,
    TrainConfig,
    flat_fields,
    parse_config,
    run_recipe,
)

CONFIGS = [TrainConfig, PretrainConfig, SFTConfig, GDSOTeacherConfig, RISDConfig, OPDConfig, GeneratorConfig]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_has_help(cls):
    missing = [name for name, (_, f) in flat_fields(cls).items() if not f.metadata.get("help")]
    assert missing == []


def test_train_gdso_help_lists_every_field_with_its_help_and_default():
    out = subprocess.run([sys.executable, str(ROOT / "recipes/train_gdso.py"), "--help"], capture_output=True,
                         text=True, check=True, env={"COLUMNS": "400", "PATH": "", "PYTHONPATH": str(ROOT)}).stdout
    text = " ".join(out.split())  # argparse wraps lines
    for name, (_, f) in flat_fields(GDSOTeacherConfig).items():
        assert f"--{name}" in text, name
        assert " ".join(f.metadata["help"].split()) in text, name
    assert "--sampling.temperature FLOAT" in text and "(default: 1.0)" in text


def test_sampling_is_one_nested_group():
    cfg = parse_config(GDSOTeacherConfig, ["--sampling.num_samples", "3", "--sampling.temperature", "0.5"])
    assert cfg.sampling == SamplingConfig(num_samples=3, temperature=0.5)
    assert RISDConfig().sampling.num_samples == 2 and GDSOTeacherConfig().sampling.num_samples == 4
    names = [f.name for f in dataclasses.fields(GDSOTeacherConfig)]
    assert "sampling" in names and not {"num_samples", "temperature", "max_reasoning_tokens"} & set(names)


def test_yaml_nested_and_old_keys(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text("batch_size: 2\nsampling:\n  temperature: 0.7\n")
    cfg = parse_config(GDSOTeacherConfig, ["--config", str(new)])
    assert cfg.batch_size == 2 and cfg.sampling.temperature == 0.7 and cfg.sampling.num_samples == 4
    old = tmp_path / "old.yaml"
    old.write_text("prompts_per_step: 2\nnum_samples: 3\n")
    with pytest.warns(FutureWarning, match="prompts_per_step is renamed batch_size"):
        cfg = parse_config(GDSOTeacherConfig, ["--config", str(old)])
    assert cfg.batch_size == 2 and cfg.sampling.num_samples == 3


@pytest.mark.parametrize("cls,old,new,attr,value", [
    (GDSOTeacherConfig, "--prompts_per_step", "--batch_size", "batch_size", 2),
    (GDSOTeacherConfig, "--num_samples", "--sampling.num_samples", "sampling.num_samples", 3),
    (RISDConfig, "--teacher_samples", "--sampling.num_samples", "sampling.num_samples", 3),
    (GeneratorConfig, "--val_every", "--eval_every", "eval_every", 2),
    (GeneratorConfig, "--batch", "--batch_size", "batch_size", 2),
])
def test_old_flags_work_with_a_warning_naming_the_new_one(cls, old, new, attr, value):
    with pytest.warns(FutureWarning, match=f"{old} is renamed {new}"):
        cfg = parse_config(cls, [old, str(value)])
    obj = cfg
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert obj == value


def test_a_silent_kappa_override_is_refused():
    with pytest.raises(ValueError, match="aggregation='pessimistic'"):
        GeneratorConfig(kappa=1.0)
    assert GeneratorConfig(kappa=1.0, aggregation="pessimistic").kappa == 1.0


@pytest.mark.parametrize("argv,message", [
    (["--data", "nosuch"], "data must be 'synthetic', 'agiqa' or a JSONL file, got 'nosuch'"),
    (["--config", "/nonexistent.yaml"], "config: no such file '/nonexistent.yaml'"),
    (["--reward_from", "words"], "reward_from must be one of"),
    (["--loss_type", "ppo"], "loss_type must be one of"),
    (["--sampling.temperature", "0"], "sampling.temperature must be > 0"),
    (["--report_to", "mlflow"], "report_to must be one of"),
    (["--distributed", "zero3"], "distributed must be one of"),
    (["--dtype", "fp8"], "dtype must be one of"),
    (["--sampling.rollout_batch_size", "0"], "sampling.rollout_batch_size must be >= 1"),
    (["--sampling.decode", "eager"], "sampling.decode must be 'dynamic' or 'static_compiled'"),
    (["--device", "tpu"], "device: 'tpu'"),
    (["--attn_implementation", "flash"], "attn_implementation must be one of"),
    (["--dtype", "fp16", "--distributed", "fsdp"], "dtype='fp16' with distributed='fsdp'"),
])
def test_bad_values_end_in_one_line_naming_the_field(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(GDSOTeacherConfig, lambda cfg: pytest.fail("the trainer must not be built"), argv=argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


def test_bad_config_file_keys_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    with pytest.raises(SystemExit):
        run_recipe(GDSOTeacherConfig, lambda cfg: None, argv=["--config", str(bad)])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown keys ['stepz']" in err
