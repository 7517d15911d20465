"""The memory options of a training run, on CPU with tiny models: every trained model configured from the config
(a model passed in too), fp32 master weights whatever a checkpoint was saved in, the frozen reference in the compute
dtype, no gradient alive after a step, the optimizers, and micro-batched updates whose accumulated gradient is the
full batch's (float64)."""

import pytest
import torch

from tests.training.runs import GDSO_TINY
from zrcore.models import RewardModel, build_tiny_reward_model
from zrcore.training.config import GDSOTeacherConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer, micro_batches
from zrcore.training.optim import build_optimizer


def _cfg(tmp_path, *extra: str) -> GDSOTeacherConfig:
    return parse_config(GDSOTeacherConfig, GDSO_TINY + ["--output_dir", str(tmp_path), *extra])


def _trainer(tmp_path, *extra: str, model=None) -> GDSOTeacherTrainer:
    return GDSOTeacherTrainer(_cfg(tmp_path, *extra), model=model)


def test_micro_batches_hold_whole_prompts_under_the_budget():
    assert micro_batches(5, 6, 10, 0) == [(0, 5)]
    assert micro_batches(5, 6, 10, 130) == [(0, 2), (2, 4), (4, 5)]  # 2 prompts x 6 rows x 10 tokens = 120
    assert micro_batches(3, 6, 10, 1) == [(0, 1), (1, 2), (2, 3)]  # at least one prompt, whatever the budget


def _gradients_of_one_step(tmp_path, *extra: str) -> tuple[dict, dict]:
    trainer = _trainer(tmp_path, "--beta", "0.3", "--updates_per_rollout", "1", "--grad_balance_every", "0", *extra)
    trainer.rm.double()
    trainer.ref.double()
    grads = {}

    def capture():
        grads.update({n: p.grad.detach().clone() for n, p in trainer.rm.named_parameters() if p.grad is not None})
        trainer.opt.zero_grad(set_to_none=True)
        return {"grad_norm": 0.0}

    trainer.optimizer_step = capture
    metrics = trainer.train_step(0)
    return grads, metrics


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_micro_batched_gradient_equals_the_full_batch_gradient(tmp_path, loss_type):
    """float64: the gradient accumulated over micro-batches of one prompt each equals the one-pass gradient of
    eq. 14 (policy with KL, CE and pairwise terms), and the logged total loss is the same."""
    args = ("--loss_type", loss_type, "--batch_size", "3", "--train_prompts", "6")
    full, m_full = _gradients_of_one_step(tmp_path / "full", *args)
    parts, m_parts = _gradients_of_one_step(tmp_path / "micro", *args, "--micro_batch_tokens", "1")
    assert full.keys() == parts.keys() and len(full) > 10
    for name in full:
        torch.testing.assert_close(parts[name], full[name], rtol=1e-9, atol=1e-12, msg=name)
    assert abs(m_parts["loss/total"] - m_full["loss/total"]) < 1e-9
    assert any(float(g.abs().max()) > 0 for g in full.values())


def test_micro_batches_refuse_a_batch_wide_advantage_scale(tmp_path):
    with pytest.raises(ValueError, match="adv_scale"):
        _cfg(tmp_path, "--micro_batch_tokens", "64", "--adv_scale", "batch")


def test_a_model_passed_in_is_configured_like_a_built_one(tmp_path):
    rm = build_tiny_reward_model("qwen2_vl", "teacher")
    rm.to(torch.bfloat16)
    assert not rm.model.is_gradient_checkpointing
    trainer = _trainer(tmp_path, "--gradient_checkpointing", "true", "--beta", "0", model=rm)
    assert trainer.rm.model.is_gradient_checkpointing
    assert {p.dtype for p in trainer.rm.parameters()} == {torch.float32}


def test_fp32_master_weights_from_a_bf16_checkpoint(tmp_path):
    rm = build_tiny_reward_model("qwen2_vl", "teacher")
    rm.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    loaded = RewardModel.from_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert {p.dtype for p in RewardModel.from_pretrained(tmp_path / "bf16", torch_dtype="auto").parameters()} \
        == {torch.bfloat16}
    trainer = _trainer(tmp_path / "run", "--init_from", str(tmp_path / "bf16"), "--beta", "0")
    assert {p.dtype for p in trainer.rm.parameters()} == {torch.float32}


def test_no_gradient_alive_after_a_step_and_the_reference_frozen_in_16_bit(tmp_path):
    trainer = _trainer(tmp_path, "--dtype", "bf16", "--beta", "0.1", "--updates_per_rollout", "2")
    assert {p.dtype for p in trainer.ref.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in trainer.ref.parameters()) and not trainer.ref.training
    assert {p.dtype for p in trainer.rm.parameters()} == {torch.float32}  # fp32 master, bf16 compute
    trainer.train_step(0)
    assert all(p.grad is None for p in trainer.rm.parameters())
    fp32_ref = _trainer(tmp_path / "fp32", "--dtype", "bf16", "--beta", "0.1", "--ref_dtype", "fp32")
    assert {p.dtype for p in fp32_ref.ref.parameters()} == {torch.float32}


def _step_moves(optimizer: str, master: str) -> torch.Tensor:
    dtype = torch.bfloat16 if master == "bf16" else torch.float32
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64, 300).to(dtype))
    before = w.detach().clone()
    opt = build_optimizer([w], optimizer, master, lr=1e-2)
    w.grad = torch.randn_like(w)
    opt.step()
    return (w.detach().float() - before.float()).abs()


@pytest.mark.parametrize("optimizer,master", [("adamw", "fp32"), ("adamw_fused", "fp32"), ("adamw_8bit", "fp32"),
                                              ("adamw", "bf16"), ("adamw_8bit", "bf16")])
def test_each_optimizer_takes_an_adam_step(optimizer, master):
    """Adam's first step moves every weight by about lr (m / sqrt(v) = sign(g)); in bf16 with stochastic rounding
    the mean move is lr too, although single weights round to a neighbouring bf16 value."""
    pytest.importorskip("torchao")
    moved = _step_moves(optimizer, master)
    assert abs(float(moved.mean()) - 1e-2) < 2e-3, float(moved.mean())


def test_bf16_master_needs_stochastic_rounding_and_the_model_in_bf16(tmp_path):
    with pytest.raises(ValueError, match="adamw_fused"):
        _cfg(tmp_path, "--master_dtype", "bf16", "--optimizer", "adamw_fused")
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="master_dtype"):
        build_optimizer([w], "adamw", "bf16", lr=1e-3)
    with pytest.raises(ValueError, match="ref_offload"):
        _cfg(tmp_path, "--ref_offload", "true")


def test_a_bf16_master_run_trains_with_torchao(tmp_path):
    pytest.importorskip("torchao")
    trainer = _trainer(tmp_path, "--master_dtype", "bf16", "--optimizer", "adamw_8bit", "--beta", "0.1")
    before = {n: p.detach().clone() for n, p in trainer.rm.named_parameters()}
    assert {p.dtype for p in trainer.rm.parameters()} == {torch.bfloat16}
    metrics = trainer.train_step(0)
    assert metrics["grad_norm"] > 0
    assert any(not torch.equal(before[n], p) for n, p in trainer.rm.named_parameters())


@pytest.mark.parametrize("extra", [("--optimizer", "adamw_8bit"), ("--master_dtype", "bf16")])
def test_torchao_optimizer_state_resumes_exactly(tmp_path, monkeypatch, extra):
    """A run killed after step 1 and restarted logs the same losses as one that ran through: torchao's 8-bit
    states (and its tensor learning rate) go through the DCP checkpoint and the JSON trainer state."""
    pytest.importorskip("torchao")
    from tests.training.runs import TINY, logged
    from zrcore.training.config import SFTConfig
    from zrcore.training.student import SFTTrainer

    def run(out):
        return SFTTrainer(parse_config(SFTConfig, TINY + ["--steps", "3", "--output_dir", str(out), *extra])).fit()

    run(tmp_path / "full")
    monkeypatch.setenv("ZRCORE_STOP_AFTER_STEP", "1")
    with pytest.raises(SystemExit, match="stopped after step 1"):
        run(tmp_path / "cut")
    monkeypatch.delenv("ZRCORE_STOP_AFTER_STEP")
    run(tmp_path / "cut")
    assert logged(tmp_path / "cut", "loss") == logged(tmp_path / "full", "loss")
    assert len(logged(tmp_path / "full", "loss")) == 3


@pytest.mark.slow
def test_fsdp_ranks_but_the_first_build_empty_and_receive_their_shards(tmp_path):
    """Two processes under fsdp: rank 1 builds every parameter on the meta device (no weights in memory before
    sharding), rank 0 builds the weights; after sharding and loading, the gathered policy and reference equal the
    seeded build of one process, and the computed buffers (rotary frequencies) are kept."""
    import json
    import os
    import subprocess
    import sys

    from tests.training.runs import ROOT

    out = tmp_path / "res.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "tests/training/sharded_start.py", str(out), str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["meta_params_at_build"][0] == [0] and res["meta_params_at_build"][1][0] > 10, res
    assert res["policy_equal"] and res["reference_equal"] and res["buffers_finite"], res
