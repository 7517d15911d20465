"""Several processes on torch's engine (gloo on CPU under torchrun): DDP and FSDP2 runs log the losses of one
process with the same global batch, uneven shards included; a killed fsdp run resumes exactly, also with another
world size; the exported model loads in zrcore and in transformers; bad configurations name their field."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.training.runs import GDSO_TINY, GENERATOR_TINY, TINY, final_metrics, logged, torchrun
from zrcore.models import build_tiny_reward_model

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")

GDSO = GDSO_TINY + ["--steps", "3"]
STUDENT = TINY + ["--steps", "2"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "model"
    build_tiny_reward_model("qwen2_vl", "teacher", seed=1).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Runs of one process, made once per (recipe, arguments) and shared by the tests that compare with them."""
    root = tmp_path_factory.mktemp("one")
    done: dict = {}

    def run(recipe: str, args: list[str]):
        key = (recipe, tuple(args))
        if key not in done:
            out = root / f"run{len(done)}"
            torchrun(recipe, args, 1, out)
            done[key] = out
        return done[key]

    return run


def _assert_same_losses(a, b, key: str, n: int) -> None:
    la, lb = logged(a, key), logged(b, key)
    assert len(la) == len(lb) == n
    torch.testing.assert_close(torch.tensor(lb, dtype=torch.float64), torch.tensor(la, dtype=torch.float64),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_gdso_two_processes_match_one(tmp_path, one_process, mode):
    one = one_process("train_gdso", GDSO)
    two = tmp_path / mode
    torchrun("train_gdso", GDSO + ["--distributed", mode], 2, two)
    _assert_same_losses(one, two, "loss/total", 3)
    for key in ("plcc", "hpa", "w1"):
        assert final_metrics(two)["all"][key] == pytest.approx(final_metrics(one)["all"][key], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_three_processes_with_an_uneven_batch_match_one(tmp_path, one_process):
    """4 prompts over 3 ranks (2, 1, 1): each rank weighs its loss by its share of the batch."""
    args = GDSO_TINY + ["--steps", "2", "--batch_size", "4", "--train_prompts", "8", "--beta", "0.05",
                        "--loss_type", "bnpo"]
    one = one_process("train_gdso", args)
    three = tmp_path / "three"
    torchrun("train_gdso", args + ["--distributed", "fsdp"], 3, three)
    _assert_same_losses(one, three, "loss/total", 2)


@pytest.mark.slow
@pytest.mark.parametrize("recipe,mode,extra", [("train_sft", "ddp", []), ("train_risd", "fsdp", ["teacher"]),
                                               ("train_opd", "ddp", ["teacher"])])
def test_student_recipes_two_processes_match_one(tmp_path, one_process, teacher, recipe, mode, extra):
    args = STUDENT + (["--teacher", teacher, "--sampling.max_reasoning_tokens", "3"] if extra else [])
    one = one_process(recipe, args)
    two = tmp_path / recipe
    torchrun(recipe, args + ["--distributed", mode], 2, two)
    _assert_same_losses(one, two, "loss", 2)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_generator_two_processes_match_one(tmp_path, one_process, mode):
    args = GENERATOR_TINY + ["--arch", "flux", "--lora_rank", "2"]
    one = one_process("train_generator", args)
    two = tmp_path / mode
    torchrun("train_generator", args + ["--distributed", mode], 2, two)
    _assert_same_losses(one, two, "loss", 3)
    _assert_same_losses(one, two, "val/reward", 3)


@pytest.mark.slow
def test_killed_fsdp_run_resumes_exactly_and_with_one_process(tmp_path):
    args = GDSO + ["--distributed", "fsdp"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    torchrun("train_gdso", args, 2, full)
    proc = torchrun("train_gdso", args, 2, cut, env={"ZRCORE_STOP_AFTER_STEP": "2"}, check=False)
    assert proc.returncode != 0 and "stopped after step 2" in proc.stderr
    assert len(logged(cut, "loss/total")) == 2
    shutil.copytree(cut, tmp_path / "single")  # the same step-2 checkpoint, resumed below by one process
    torchrun("train_gdso", args, 2, cut)
    assert logged(cut, "loss/total") == logged(full, "loss/total")
    assert final_metrics(cut) == final_metrics(full)
    single = tmp_path / "single"
    proc = torchrun("train_gdso", GDSO, 1, single)  # DCP reshards the 2-rank checkpoint for one process
    assert "at step 2 (saved by 2 processes, now 1)" in proc.stdout
    _assert_same_losses(full, single, "loss/total", 3)


@pytest.mark.slow
def test_exported_fsdp_model_scores_alike_in_zrcore_and_transformers(tmp_path, one_process):
    from transformers import AutoModelForImageTextToText

    from zrcore.data import SyntheticRubric
    from zrcore.models import RewardModel
    from zrcore.ops import score_distribution_from_logits

    two = tmp_path / "fsdp"
    torchrun("train_gdso", GDSO + ["--distributed", "fsdp"], 2, two)
    rm = RewardModel.from_pretrained(two / "model")
    hf = AutoModelForImageTextToText.from_pretrained(two / "model")
    recs = SyntheticRubric(seed=5, image_size=56).records(1, 2, ("realism",))
    prompts, images = [r.prompt for r in recs], [r.image for r in recs]
    with torch.no_grad():
        q = rm.score(prompts, images, "realism")
        logits = hf(**rm.tensor_inputs(*rm.score_inputs(prompts, images, "realism")), use_cache=False).logits[:, -1]
    ref = score_distribution_from_logits(logits, rm.decoder.token_ids, rm.bins.values)
    torch.testing.assert_close(q.log_probs, ref.log_probs, atol=1e-5, rtol=1e-5)
    # the sharded run's export equals the one-process run's export up to float32 rounding of the training steps
    one = RewardModel.from_pretrained(one_process("train_gdso", GDSO) / "model")
    with torch.no_grad():
        torch.testing.assert_close(one.score(prompts, images, "realism").mean, q.mean, atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_fsdp_shards_parameters_optimizer_state_and_frozen_models(tmp_path):
    """benchmarks/tools/shard_bytes.py: each rank's local bytes are at most 1/N + 5% of the one-process totals."""
    import json
    import os
    import subprocess
    import sys

    from tests.training.runs import ROOT

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "benchmarks/tools/shard_bytes.py", "--out", str(tmp_path / "1.json")], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    one = json.loads((tmp_path / "1.json").read_text())["ranks"][0]
    assert one["optimizer_state"] == 2 * one["model_params"]  # AdamW: two moments per parameter
    for n in (2, 4):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                               "benchmarks/tools/shard_bytes.py", "--distributed", "fsdp", "--out", str(tmp_path / f"{n}.json")],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranks = json.loads((tmp_path / f"{n}.json").read_text())["ranks"]
        assert len(ranks) == n
        for row in ranks:
            trained = row["model_params"] + row["optimizer_state"]
            assert trained <= (1 / n + 0.05) * (one["model_params"] + one["optimizer_state"]), (n, row)
            for frozen in ("reference_params", "teacher_params"):
                assert 0 < row[frozen] <= (1 / n + 0.05) * one[frozen], (n, frozen, row)
