"""The pretraining stage: a tiny run lowers the held-out description loss and exports a folder the reward recipes
start from; ``init_from="pretrained"`` builds it once and then reuses it, keyed by the pretraining config."""

import dataclasses
import json

import pytest

from zrcore.data.captions import ATTRIBUTES
from zrcore.models import RewardModel
from zrcore.training import pretrain
from zrcore.training.config import PretrainConfig, TrainConfig

TINY = dict(steps=4, scenes=4, candidates=2, eval_scenes=1, batch_size=4, image_size=56, preset="student",
            lr=3e-3, warmup_steps=1, vision_warmup_steps=3, progress=False)


def test_tiny_pretraining_learns_and_exports(tmp_path):
    res = pretrain.PretrainTrainer(PretrainConfig(output_dir=str(tmp_path / "run"), **TINY)).fit()
    assert res["final"]["caption_nll"] < res["start"]["caption_nll"]
    warm = json.loads((tmp_path / "run" / "results.json").read_text())["vision_warmup"]
    assert {k for k in warm if k.startswith("acc/")} == {f"acc/{a}" for a in ATTRIBUTES}
    rm = RewardModel.from_pretrained(tmp_path / "run" / "model")
    assert rm.model.config.text_config.hidden_size == 64  # the student preset


def test_init_from_pretrained_builds_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "pretrain_config_for",
                        lambda cfg: PretrainConfig(arch=cfg.arch, **(TINY | {"preset": cfg.preset})))
    cfg = TrainConfig(preset="student", image_size=56, pretrain_cache=str(tmp_path / "cache"), progress=False)
    first = pretrain.pretrained_model(cfg)
    assert (tmp_path / "cache").is_dir() and first.endswith("model")

    def refuse(*_, **__):
        raise AssertionError("pretrained again although the folder is cached")

    monkeypatch.setattr(pretrain, "PretrainTrainer", refuse)
    assert pretrain.pretrained_model(cfg) == first
    other = PretrainConfig(**(TINY | {"steps": 5}))
    assert pretrain.cache_key(other) != pretrain.cache_key(PretrainConfig(**TINY))
    assert pretrain.cache_key(dataclasses.replace(other, output_dir="elsewhere")) == pretrain.cache_key(other)


def test_a_second_process_waits_for_the_first_ones_pretraining(tmp_path, monkeypatch):
    """While another process holds the cache folder's lock (pretraining), pretrained_model waits; once that process
    has exported the model and released the lock, it returns the folder without pretraining again."""
    import fcntl
    import threading
    import time

    monkeypatch.setattr(pretrain, "pretrain_config_for",
                        lambda cfg: PretrainConfig(arch=cfg.arch, **(TINY | {"preset": cfg.preset})))

    def refuse(*_, **__):
        raise AssertionError("pretrained again although another process built the folder")

    monkeypatch.setattr(pretrain, "PretrainTrainer", refuse)
    cfg = TrainConfig(preset="student", image_size=56, pretrain_cache=str(tmp_path / "cache"), progress=False)
    folder = tmp_path / "cache" / pretrain.cache_key(pretrain.pretrain_config_for(cfg))
    folder.parent.mkdir(parents=True)
    result = {}
    with open(folder.parent / f"{folder.name}.lock", "w") as held:  # the "first process"
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.update(path=pretrain.pretrained_model(cfg)))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and not result  # waiting on the lock
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "config.json").write_text("{}")
    waiter.join(timeout=10)
    assert result["path"] == str(folder / "model")


def test_vision_warmup_steps_must_not_be_negative():
    with pytest.raises(ValueError, match="vision_warmup_steps"):
        PretrainConfig(vision_warmup_steps=-1)


def test_distributed_runs_need_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = TrainConfig(pretrain_cache=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="pretrain_tiny.py"):
        pretrain.pretrained_model(cfg)


@pytest.mark.slow
def test_pretraining_two_processes_match_one(tmp_path):
    """Under DDP each rank weights its description tokens by its share of the global batch, so two processes
    take the steps of one: the held-out loss after training agrees to float32 rounding (gloo, CPU)."""
    from tests.training.runs import logged, torchrun

    args = ["--steps", "3", "--scenes", "4", "--candidates", "2", "--eval_scenes", "1", "--batch_size", "4",
            "--image_size", "56", "--preset", "student", "--lr", "3e-3", "--warmup_steps", "1", "--vision_warmup_steps", "3",
            "--progress", "false"]
    torchrun("pretrain_tiny", args, 1, tmp_path / "one")
    torchrun("pretrain_tiny", args + ["--distributed", "ddp"], 2, tmp_path / "two")
    one, two = logged(tmp_path / "one", "eval/caption_nll"), logged(tmp_path / "two", "eval/caption_nll")
    assert one[0] == pytest.approx(two[0], rel=1e-5)  # the same start
    assert one[-1] < one[0]
    assert two[-1] == pytest.approx(one[-1], rel=1e-5)  # seen: 1e-7 apart
    assert (tmp_path / "two" / "model" / "config.json").exists()
