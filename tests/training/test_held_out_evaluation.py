"""What the held-out evaluations compare: the generator's held-out student is another student that scores the
validation images itself, and the reward recipes' held-out set (``eval_seed``) is the same across run seeds: the same
records, images and scores, and the same evaluation sampling seeds."""

import hashlib

import pytest
import torch

from tests.training.runs import GDSO_TINY, GENERATOR_TINY
from zrcore.diffusion import reward_of_images
from zrcore.models import build_tiny_reward_model, load_reward_model
from zrcore.training.config import GDSOTeacherConfig, GeneratorConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer
from zrcore.training.generator import GeneratorTrainer


def _digest(image) -> str:
    """The image's pixel bytes, hashed (readable in a failed comparison)."""
    return hashlib.sha256(image.open().tobytes()).hexdigest()


def test_the_held_out_student_scores_the_validation_images_itself(tmp_path):
    """A held-out student of another seed than the trained-on one: its validation columns are its own scores of the
    validation images (recomputed here from the saved student), not the trained-on model's."""
    held_out = tmp_path / "held_out"
    build_tiny_reward_model("qwen2_vl", "student", seed=7).save_pretrained(held_out)
    cfg = parse_config(GeneratorConfig, GENERATOR_TINY + ["--output_dir", str(tmp_path / "gen"),
                                                          "--held_out_reward_model", str(held_out)])
    trainer = GeneratorTrainer(cfg)
    prompts = trainer.eval_set
    cols = trainer.evaluate_shard(prompts, list(range(len(prompts))))
    with torch.no_grad():
        reward, dists = reward_of_images(load_reward_model(str(held_out)), prompts, cols["images"], cfg.dimensions,
                                         mode=cfg.aggregation, kappa=cfg.kappa)
    torch.testing.assert_close(cols["held_out"], reward.float(), atol=1e-5, rtol=1e-5)
    for d in cfg.dimensions:
        torch.testing.assert_close(cols[f"held_out/{d}"], dists[d].mean.float(), atol=1e-5, rtol=1e-5)
    assert (cols["held_out"] - cols["reward"]).abs().max() > 1e-3  # two different students
    row = trainer.eval_metrics("check", cols)
    assert row["val/held_out/reward"] == pytest.approx(float(reward.mean()), abs=1e-5)
    assert row["val/held_out/reward"] != pytest.approx(row["val/reward"], abs=1e-4)


def test_two_seeds_evaluate_on_the_same_records_with_the_same_sampling_seeds(tmp_path, monkeypatch):
    """Runs of seeds 0 and 1 (different training data and initialisation) hold the same evaluation records (prompt,
    dimension, score, prompt id, image bytes) and sample their evaluation reasoning with the same seeds."""
    trainers, seeds = [], []
    for seed in (0, 1):
        trainer = GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, GDSO_TINY + [
            "--seed", str(seed), "--output_dir", str(tmp_path / f"s{seed}")]))
        calls = []
        judge = trainer.rm.judge
        monkeypatch.setattr(trainer.rm, "judge", lambda *a, _calls=calls, _judge=judge, **kw:
                            _calls.append(list(kw["seeds"])) or _judge(*a, **kw))
        records = trainer.eval_set
        out = trainer.evaluate_shard(records, list(range(len(records))))
        assert out["probs"].shape[0] == len(records) > 0
        trainers.append(trainer)
        seeds.append(calls)

    def described(trainer) -> list:
        return [(r.prompt, r.dimension, r.score, r.prompt_id, _digest(r.image)) for r in trainer.eval_set]

    def trained_on(trainer) -> list:
        return [(r.prompt, _digest(r.image)) for g in trainer.train_groups for r in g.records]

    a, b = trainers
    assert trained_on(a) != trained_on(b)  # the seeds differ where they should
    assert described(a) == described(b)
    assert a.eval_seed == b.eval_seed == a.cfg.eval_seed
    assert seeds[0] == seeds[1] and seeds[0]
