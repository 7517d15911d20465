"""Loading a reward model: a hub id goes to transformers, a folder of another model type or the run folder instead
of its model/ gets one line, and the outputs print short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zrcore.models import RewardModel, build_tiny_reward_model

ROOT = Path(__file__).resolve().parents[2]


def test_a_hub_id_is_passed_to_transformers():
    code = ("from zrcore.models import RewardModel\n"
            "try:\n    RewardModel.from_pretrained('zrcore-test/does-not-exist')\n"
            "except Exception as err:\n    print(type(err).__name__, str(err).splitlines()[0])\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert "not a checkpoint folder" not in out and "not a local checkpoint" not in out
    assert "huggingface.co" in out or "offline" in out.lower() or "does-not-exist" in out


def test_another_model_type_and_the_run_folder_are_one_line(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=1, n_embd=8).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError) as info:
        RewardModel.from_pretrained(tmp_path / "gpt2")
    assert "no image-text-to-text" in str(info.value) and len(str(info.value)) < 300
    run = tmp_path / "run"
    build_tiny_reward_model("qwen2_vl").save_pretrained(run / "model")
    with pytest.raises(ValueError, match=r"did you mean '.*run/model'"):
        RewardModel.from_pretrained(run)
    with pytest.raises(ValueError, match="is not a checkpoint folder"):
        RewardModel.from_pretrained(tmp_path / "a" / "b" / "c")


def test_judgements_and_distributions_print_short():
    from zrcore.data import SyntheticRubric

    rm = build_tiny_reward_model("qwen2_vl", "teacher")
    recs = SyntheticRubric(seed=0, image_size=56).records(2, 1, ("realism",))
    j = rm.judge([r.prompt for r in recs], [r.image for r in recs], "realism", num_samples=2, max_reasoning_tokens=4,
                 seeds=[1, 2, 3, 4])
    for text in (repr(j), str(j), repr(j.distribution)):
        assert "\n" not in text and len(text) < 300 and "tensor(" not in text
    assert repr(j).startswith("Judgement(B=2, G=2,") and "ScoreDistribution(shape=[2, 2], K=9" in repr(j.distribution)
