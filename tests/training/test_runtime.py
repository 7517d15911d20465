"""One process: configuration errors name their field, checkpoints survive a kill before the rename, the rollout
path computes GDSO's losses as the full-logits path does, and shards split any batch."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tests.training.runs import TINY, logged
from zrcore import losses
from zrcore.training.checkpoint import complete_checkpoint
from zrcore.training.config import GDSOTeacherConfig, GeneratorConfig, SFTConfig, TrainConfig, parse_config, run_recipe
from zrcore.training.distributed import Runtime, padded_shard, shard
from zrcore.training.student import SFTTrainer


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_named():
    with pytest.raises(ValueError, match="device: 'cuda' asks for CUDA"):
        parse_config(GeneratorConfig, ["--device", "cuda"])


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_ddp_and_fsdp_need_torchrun(monkeypatch, mode):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=f"distributed='{mode}' needs torchrun's environment"):
        Runtime.from_config(parse_config(TrainConfig, ["--distributed", mode]))


def test_several_processes_need_a_mode(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="distributed='none' but torchrun started 2 processes"):
        Runtime.from_config(parse_config(TrainConfig, []))


def test_recipe_prints_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(GDSOTeacherConfig, object, argv=["--dtype", "int4"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: dtype must be one of ['fp32', 'bf16', 'fp16'], got 'int4'"


def test_shards_cover_any_batch():
    for n in range(1, 9):
        for world in range(1, n + 1):
            parts = [shard(list(range(n)), r, world) for r in range(world)]
            assert sum(parts, []) == list(range(n)) and max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="prompts_per_step: 2 items cannot give each of 3 processes"):
        shard([0, 1], 0, 3, "prompts_per_step")
    padded = [padded_shard(5, r, 3) for r in range(3)]
    assert [p for p, _ in padded] == [[0, 1], [2, 3], [4, 4]] and [k for _, k in padded] == [2, 2, 1]


def _sft(out, *extra):
    return SFTTrainer(parse_config(SFTConfig, TINY + ["--steps", "3", "--output_dir", str(out), *extra]))


@pytest.mark.slow
def test_save_killed_before_the_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    full = tmp_path / "full"
    _sft(full).fit()
    cut = tmp_path / "cut"
    monkeypatch.setenv("ZRCORE_STOP_AFTER_STEP", "1")
    with pytest.raises(SystemExit, match="stopped after step 1"):
        _sft(cut).fit()
    monkeypatch.delenv("ZRCORE_STOP_AFTER_STEP")
    monkeypatch.setenv("ZRCORE_STOP_BEFORE_RENAME", "1")
    with pytest.raises(SystemExit, match="before the checkpoint rename"):
        _sft(cut).fit()  # resumes at step 1, trains step 2, dies while saving it
    monkeypatch.delenv("ZRCORE_STOP_BEFORE_RENAME")
    assert (cut / "checkpoint.tmp" / "trainer_state.json").exists()
    assert complete_checkpoint(cut) == cut / "checkpoint"
    # a kill between the two renames: only checkpoint.old is complete, and it is the one loaded
    os.replace(cut / "checkpoint", cut / "checkpoint.old")
    assert complete_checkpoint(cut) == cut / "checkpoint.old"
    trainer = _sft(cut)
    assert trainer.maybe_resume() and trainer.step == 1
    trainer.fit()
    assert logged(cut, "loss") == logged(full, "loss")
    assert complete_checkpoint(cut) == cut / "checkpoint" and not (cut / "checkpoint.old").exists()


def test_checkpoint_files_load_without_unpickling(tmp_path):
    trainer = _sft(tmp_path, "--steps", "1")
    trainer.save()
    for f in (tmp_path / "checkpoint").glob("*.pt"):
        torch.load(f, weights_only=True)


def test_rollout_path_gives_the_full_logits_losses():
    """GDSO on a fixed batch of rollouts: log-probs and q from the module's forward (score rows only, selected
    positions only) give the losses that full-vocabulary logits give."""
    from zrcore.data import SyntheticRubric
    from zrcore.models import build_tiny_reward_model
    from zrcore.models.rollout import rollouts_of
    from zrcore.ops import score_distribution_from_logits

    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=2)
    recs = SyntheticRubric(seed=3, image_size=56).records(2, 2, ("realism",))
    p, m, g = 2, 2, 2
    batch = rollouts_of(rm.judge([r.prompt for r in recs], [r.image for r in recs], "realism", num_samples=g,
                                 max_reasoning_tokens=4, seeds=range(p * m * g)))
    scores = torch.tensor([[recs[0].score, recs[1].score], [recs[2].score, recs[3].score]])
    out = rm.policy_forward(batch, temperature=0.8)
    logits = rm.model(**rm.tensor_inputs(batch.sequences, batch.attention_mask, batch.image_inputs),
                      use_cache=False).logits.float()
    full = torch.log_softmax(logits / 0.8, -1)
    rows, cols = batch.completion_mask.nonzero(as_tuple=True)
    ref_logps = torch.zeros_like(out.logps).index_put((rows, cols), full[rows, cols - 1, batch.sequences[rows, cols]])
    ref_q = score_distribution_from_logits(logits[:, -1], rm.decoder.token_ids, rm.bins.values)

    # one reward source for both: the advantages normalise by the spread of near-equal rewards, which would
    # magnify float32 rounding of the means into the policy term
    reward_mean = out.distribution.mean.detach().view(p, m, g)

    def loss(logps, q):
        return losses.gdso_loss(logps, logps.detach(), batch.completion_mask, q.mean.view(p, m, g),
                                q.log_probs.view(p, m, g, -1), scores, score_range=rm.bins.range,
                                target=rm.bins.index(scores), reward_mean=reward_mean)

    a, b = loss(out.logps, out.distribution), loss(ref_logps, ref_q)
    for x, y in zip(a[:4], b[:4]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a.total, rm.model.get_output_embeddings().weight)[0]
    gb = torch.autograd.grad(b.total, rm.model.get_output_embeddings().weight)[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


def test_records_decode_their_images_when_first_used():
    from zrcore.models import load_images
    from zrcore.training.datasets import ResizedImage, build_data

    groups, evals = build_data(parse_config(TrainConfig, TINY))
    assert all(isinstance(r.image, ResizedImage) and r.image._image is None for r in evals)
    img = load_images([evals[0].image])[0]
    assert img.size == (56, 56) and evals[0].image._image is not None
    assert all(r.image._image is None for r in evals[1:] if r.image is not evals[0].image)


def test_attention_implementation_auto_is_sdpa_off_cuda():
    from zrcore.training.model_setup import attn_implementation
    from zrcore.training.trainer import build_reward_model

    cfg = parse_config(TrainConfig, ["--init_from", ""])
    assert attn_implementation("auto", torch.device("cpu")) == "sdpa"
    assert build_reward_model(cfg).model.config._attn_implementation == "sdpa"
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' needs flash-attn"):
            attn_implementation("flash_attention_2", torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_step_updates_fp32_master_weights(tmp_path, dtype):
    """Autocast over fp32 master weights (fp16 with a GradScaler): the parameters stay fp32, losses are finite, and
    the weights move (under fp16 once the scaler has backed off from steps whose scaled gradients overflowed)."""
    trainer = _sft(tmp_path, "--steps", "12", "--dtype", dtype)
    assert (trainer.scaler is not None) == (dtype == "fp16")
    before = [p.detach().clone() for p in trainer.params]
    for step in range(12):
        assert torch.isfinite(torch.tensor(trainer.train_step(step)["loss"]))
        if any(not torch.equal(a, b) for a, b in zip(before, trainer.params)):
            break
    else:
        pytest.fail("no optimizer step changed the weights")
    assert all(p.dtype == torch.float32 for p in trainer.params)
    if trainer.scaler is not None:
        assert trainer.scaler.get_scale() <= 2.0**16
