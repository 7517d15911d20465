"""The native rollout path: each candidate's image through the vision tower once per rollout, each prompt prefilled
once and its cache expanded to the G samples (traces that read the same model as a full forward), batched
inverse-CDF sampling seeded per row, the static compiled decode, the sampling mode set and restored, and the
old-policy log-probs of the scoring forward."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.test_reward_model import PROMPTS, _images
from zrcore.models import ARCHS, build_tiny_reward_model
from zrcore.models.reward_model import completion_logprobs
from zrcore.models.rollout import HFGenerateBackend, NativeBackend, inverse_cdf_sample, row_uniforms


@pytest.fixture(scope="module", params=ARCHS)
def rm(request):
    return build_tiny_reward_model(request.param, "teacher", seed=0)


def _count_encoded(rm) -> tuple[list, object]:
    """Images the vision tower encodes, one entry per call (its grid rows)."""
    seen: list = []

    def hook(module, args, kwargs, out):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen.append(int(grid.shape[0]))

    return seen, rm.model.model.visual.register_forward_hook(hook, with_kwargs=True)


def test_the_vision_tower_runs_once_per_candidate_per_rollout(rm):
    """2 candidates x G = 3: the native judge encodes 2 images (prefill, then reused by the scoring forward); HF
    generate encodes each row's image (6), then the scoring forward the 2 distinct ones (before: 6 more)."""
    images = _images()[:2]
    for backend, expected in ((None, [2]), (HFGenerateBackend(), [6, 2])):
        seen, handle = _count_encoded(rm)
        try:
            rm.judge(PROMPTS[:2], images, "realism", num_samples=3, max_reasoning_tokens=4, seeds=range(6),
                     backend=backend)
        finally:
            handle.remove()
        assert seen == expected, backend


def _per_row_policy(rm, j, temperature):
    """The forward as it was: every row's image through the vision tower, the VLM computing the mrope positions."""
    inputs = rm.tensor_inputs(j.sequences, j.attention_mask, j.image_inputs)
    hidden = rm.model.model(**inputs, use_cache=False).last_hidden_state
    logps = completion_logprobs(hidden, j.sequences, j.completion_mask, rm.model.get_output_embeddings(), temperature)
    return logps, rm._distribution(hidden[:, -1])


def test_the_update_forward_shares_each_image_and_matches_one_encoding_per_row(rm):
    """policy_forward encodes each candidate's image once and repeats its tokens to the G rows: the log-probs, q and
    every parameter's gradient equal those of one encoding per row (float32: summation order only)."""
    j = rm.judge(PROMPTS[:2], _images()[:2], "realism", num_samples=3, max_reasoning_tokens=5, seeds=range(6))
    params = [p for p in rm.parameters() if p.requires_grad]
    seen, handle = _count_encoded(rm)
    try:
        out = rm.policy_forward(j, temperature=0.9)
    finally:
        handle.remove()
    assert seen == [2]
    ref_logps, ref_dist = _per_row_policy(rm, j, 0.9)
    torch.testing.assert_close(out.logps, ref_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.distribution.log_probs, ref_dist.log_probs, atol=1e-5, rtol=1e-5)
    weights = torch.linspace(0.5, 1.5, out.distribution.mean.numel())

    def grads(logps, dist):
        loss = logps.sum() + (weights * dist.mean).sum()
        return torch.autograd.grad(loss, params, allow_unused=True)

    shared = grads(out.logps, out.distribution)
    for new, old in zip(shared, grads(ref_logps, ref_dist)):
        if old is None:
            assert new is None or not new.any()
            continue
        torch.testing.assert_close(new, old, atol=1e-5, rtol=1e-4)
    vision = {id(p) for p in rm.vision_parameters()}
    assert any(id(p) in vision and g is not None and g.abs().sum() > 0 for p, g in zip(params, shared))


def test_prefilled_traces_read_what_a_full_forward_reads(rm):
    """The behaviour log-probs of the expanded-cache decode equal the full forward's log-softmax at T (suppressed
    tokens removed) on the returned sequences, for G samples of several prompts split over calls."""
    j = rm.judge(PROMPTS, _images(), ["realism", "alignment", "aesthetics"], num_samples=3, max_reasoning_tokens=6,
                 temperature=0.8, seeds=range(100, 109), rollout_batch_size=6)
    with torch.no_grad():
        logits = rm.model(**rm.tensor_inputs(j.sequences, j.attention_mask, j.image_inputs), use_cache=False).logits
    logits = logits.float()
    logits[..., rm.suppressed_ids] = float("-inf")
    ref = torch.log_softmax(logits / 0.8, -1)
    rows, cols = j.completion_mask.nonzero(as_tuple=True)
    torch.testing.assert_close(j.behaviour_logprobs[rows, cols], ref[rows, cols - 1, j.sequences[rows, cols]],
                               atol=1e-4, rtol=1e-4)
    assert len({tuple(r.tolist()) for r in j.reasoning_ids}) > 1  # the G samples of a prompt differ


def test_judge_returns_the_old_policy_logprobs_of_its_scoring_forward(rm):
    """with_logprobs: the completion's log-probs at T equal policy_forward's on the same batch, and the score
    tokens' log-probs are the full-vocabulary log-softmax at the last position."""
    with torch.no_grad():
        j = rm.judge(PROMPTS[:2], _images()[:2], "realism", num_samples=2, max_reasoning_tokens=4, seeds=range(4),
                     temperature=0.7, with_logprobs=True)
        pf = rm.policy_forward(j, temperature=0.7, with_distribution=False)
        logits = rm.model(**rm.tensor_inputs(j.sequences, j.attention_mask, j.image_inputs), use_cache=False).logits
    torch.testing.assert_close(j.logprobs, pf.logps, atol=1e-6, rtol=1e-6)
    full = torch.log_softmax(logits[:, -1].float() / 0.7, -1)[:, rm.decoder.token_ids]
    torch.testing.assert_close(j.score_logprobs, full, atol=1e-5, rtol=1e-5)
    assert rm.judge(PROMPTS[:1], _images()[:1], "realism", num_samples=1, max_reasoning_tokens=2).logprobs is None


def test_inverse_cdf_sampling_draws_from_the_tempered_softmax():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.5]]).repeat(20000, 1)
    u = row_uniforms(list(range(20000)), 1)[:, 0]
    picks, lp = inverse_cdf_sample(logits, u, 0.5, torch.tensor([3]))
    assert not (picks == 3).any()
    z = logits[0].clone()
    z[3] = float("-inf")
    p = torch.softmax(z / 0.5, -1)
    freq = torch.bincount(picks, minlength=5).double() / len(picks)
    torch.testing.assert_close(freq, p.double(), atol=0.015, rtol=0)
    torch.testing.assert_close(lp, torch.log(p)[picks], atol=1e-6, rtol=1e-6)
    # a row's draws are its seed's, whatever rows share the batch
    assert torch.equal(row_uniforms([7], 4)[0], row_uniforms([1, 7, 3], 4)[1])


def test_generating_sets_eval_and_no_checkpointing_then_restores_them():
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
    rm.train()
    rm.gradient_checkpointing_enable()
    seen = []
    real = rm.decode_step

    def spy(*args, **kwargs):
        seen.append((rm.training, rm.model.is_activation_checkpointing))
        return real(*args, **kwargs)

    rm.decode_step = spy
    rm.judge(PROMPTS[:1], _images()[:1], "realism", num_samples=2, max_reasoning_tokens=3, seeds=[1, 2])
    assert seen and all(s == (False, False) for s in seen)
    assert rm.training and rm.model.is_activation_checkpointing


@pytest.mark.slow
def test_static_compiled_decode_gives_the_dynamic_traces():
    """decode="static_compiled" (HF static cache, torch.compile on the CPU): the same tokens and behaviour log-probs
    as the dynamic cache for the same seeds."""
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
    kw = dict(num_samples=2, max_reasoning_tokens=5, seeds=range(4), temperature=0.9)
    dyn = rm.judge(PROMPTS[:2], _images()[:2], "realism", **kw)
    static = rm.judge(PROMPTS[:2], _images()[:2], "realism", decode="static_compiled", **kw)
    assert rm._compiled_decode is not None
    assert [r.tolist() for r in dyn.reasoning_ids] == [r.tolist() for r in static.reasoning_ids]
    torch.testing.assert_close(static.behaviour_logprobs, dyn.behaviour_logprobs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="decode must be one of"):
        NativeBackend("eager")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_fsdp_gathers_per_rollout_do_not_grow_with_the_tokens(tmp_path):
    """Two processes on gloo, the teacher sharded as the trainer shards it (3 decoder layers, 1 vision block, the
    root): with unshard_once the all-gathers of a rollout are the same at 4 and 12 tokens per trace (each unit
    once for the generation, the decoder layers once more for the scoring forward); without it they grow by one
    per decoder layer per token. The traces are the same either way; afterwards every unit is sharded again with
    its reshard-after-forward setting back."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gathers.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "tests/models/fsdp_gathers.py", str(out)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    once_short, once_long, each_short, each_long = (res[k] for k in ("True/4", "True/12", "False/4", "False/12"))
    assert once_short["gathers"] == once_long["gathers"] == 4 + 3
    assert each_long["gathers"] - each_short["gathers"] == 3 * (12 - 4)
    assert all(len(t) == 12 for t in once_long["traces"])
    assert once_long["traces"] == each_long["traces"] and once_short["traces"] == each_short["traces"]
    assert res["restored"] and res["sharded_after"]
