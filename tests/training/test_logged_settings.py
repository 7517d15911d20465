"""What a run logs and records is what it used: each metrics row's ``lr`` is the rate its step trained with, and a
reasoning cap of 0 appears resolved in config.yaml, the run-dir record and the metrics log's config, while the same
command still resumes and a sweep still reuses the run."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.training.runs import TINY
from tests.training.test_loop import ToyLoop
from zrcore.training.cli_args import ConfigError
from zrcore.training.config import RunConfig, SFTConfig, parse_config
from zrcore.training.student import SFTTrainer


def test_each_logged_lr_is_the_rate_its_step_trained_with(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path), steps=4, warmup_steps=3, lr_schedule="constant", progress=False)
    loop = ToyLoop(cfg)
    used = []
    step = loop.train_step
    loop.train_step = lambda s: used.append(loop.opt.param_groups[0]["lr"]) or step(s)
    loop.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r] == used
    # the warm-up from the first step's 1/3 of the rate: the rates differ, so a row showing another step's rate fails
    assert used == pytest.approx([cfg.lr / 3, 2 * cfg.lr / 3, cfg.lr, cfg.lr])


def test_a_reasoning_cap_of_0_is_recorded_resolved_and_the_same_command_still_resumes(tmp_path):
    out = tmp_path / "sft"
    args = TINY + ["--steps", "1", "--eval_prompts", "1", "--output_dir", str(out)]
    trainer = SFTTrainer(parse_config(SFTConfig, args))
    cap = trainer.cfg.sampling.max_reasoning_tokens
    assert cap > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["sampling"]["max_reasoning_tokens"] == cap
    assert yaml.safe_load((out / "run_config.yaml").read_text())["sampling"]["max_reasoning_tokens"] == cap
    assert trainer.log.config["sampling"]["max_reasoning_tokens"] == cap
    from zrcore.training.sweep import stale_reason

    trainer.fit()
    again = SFTTrainer(parse_config(SFTConfig, args))  # the same command, the cap again given as 0
    assert again.run_action == "resume"
    assert yaml.safe_load((out / "run_config.yaml").read_text())["sampling"]["max_reasoning_tokens"] == cap
    sweep_args = TINY + ["--steps", "1", "--eval_prompts", "1"]
    assert stale_reason(sweep_args, out) is None  # a sweep reuses it
    assert stale_reason(sweep_args + ["--sampling.max_reasoning_tokens", str(cap)], out) is None  # the same cap
    other = sweep_args + ["--sampling.max_reasoning_tokens", str(cap + 1)]
    assert stale_reason(other, out) == f"sampling.max_reasoning_tokens={cap}, now sampling.max_reasoning_tokens={cap + 1}"
    with pytest.raises(ConfigError, match=f"sampling.max_reasoning_tokens={cap}, now "):
        SFTTrainer(parse_config(SFTConfig, other + ["--output_dir", str(out)]))
