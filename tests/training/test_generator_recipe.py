import json

import pytest

from zrcore.training.config import parse_config
from zrcore.training.generator import GeneratorConfig, GeneratorTrainer


@pytest.mark.slow
def test_generator_recipe_runs_and_writes_its_outputs(tmp_path):
    args = ["--steps", "2", "--batch", "1", "--latent_size", "14", "--num_steps", "2", "--val_prompts", "2",
            "--val_every", "1", "--dimensions", "realism,aesthetics", "--progress", "false", "--output_dir",
            str(tmp_path / "gen")]
    res = GeneratorTrainer(parse_config(GeneratorConfig, args)).fit()
    assert set(res) == {"before", "after"} and "val/realism" in res["after"]
    rows = [json.loads(line) for line in (tmp_path / "gen" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and all("val/reward" in r for r in rows)
    for name in ("before_after.png", "val_reward.png", "results.md", "checkpoint.pt"):
        assert (tmp_path / "gen" / name).exists(), name


def test_generator_rejects_unknown_dimensions(tmp_path):
    with pytest.raises(ValueError, match="beauty"):
        GeneratorTrainer(parse_config(GeneratorConfig, ["--dimensions", "beauty", "--output_dir", str(tmp_path)]))
