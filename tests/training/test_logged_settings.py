"""What a run logs is what it used: each metrics row's ``lr`` is the rate its step trained with."""

from __future__ import annotations

import json

import pytest

from tests.training.test_loop import ToyLoop
from zrcore.training.config import RunConfig


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
