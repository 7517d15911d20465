"""GDSOTrainer on TRL's GRPO loop with the tiny Qwen2-VL judge: two steps run on CPU with either sampler, its loss on a
fixed batch of rollouts equals zrcore.losses.gdso_loss, without the distribution terms it is TRL's GRPO loss, TRL's
generation path (transformers, and vLLM's branch with a stand-in engine) gives the same batch, rewards and losses as
RewardModel.judge for the same samples."""

import functools

import pytest
import torch

pytest.importorskip("trl", reason="the [trl] extra is part of [test]; this guards a plain install")

from datasets import Dataset  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from zrcore import losses  # noqa: E402
from zrcore.data import SyntheticRubric  # noqa: E402
from zrcore.integrations.trl import GDSOConfig, GDSOTrainer  # noqa: E402
from zrcore.models import build_tiny_reward_model  # noqa: E402
from zrcore.models.rollout import HFGenerateBackend  # noqa: E402


def _dataset(prompts=4, candidates=2):
    recs = SyntheticRubric(seed=0, image_size=56).records(prompts, candidates, ("realism",))
    return Dataset.from_dict({"prompt": [r.prompt for r in recs], "image": [r.image for r in recs],
                              "score": [r.score for r in recs], "dimension": [r.dimension for r in recs],
                              "prompt_id": [r.prompt_id for r in recs]})


def _trainer(tmp_path, **overrides):
    kw = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, num_candidates=2,
              max_completion_length=4, max_steps=2, learning_rate=1e-3, use_cpu=True, report_to=[], logging_steps=1,
              loss_type="grpo", save_strategy="no", disable_tqdm=True, bf16=False, beta=0.0)
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
    return GDSOTrainer(rm, args=GDSOConfig(**(kw | overrides)), train_dataset=_dataset()), rm


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["trl", "judge"])
def test_two_gdso_steps_run(tmp_path, sampler):
    trainer, _ = _trainer(tmp_path, sampler=sampler)
    out = trainer.train()
    assert out.global_step == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all("loss/ce" in h and "loss/pairwise" in h and "reward" in h for h in logs)


def _fixed_batch(tmp_path, **overrides):
    """(trainer, reward model, one generation batch: 2 prompts x 2 candidates x G = 2) in train mode."""
    trainer, rm = _trainer(tmp_path, **overrides)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0, 0, 1, 1, 2, 2, 3, 3)]
    return trainer, rm, trainer._generate_and_score_completions(rows)


@pytest.mark.slow
def test_loss_on_a_fixed_batch_equals_gdso_loss(tmp_path):
    trainer, rm, inputs = _fixed_batch(tmp_path, lambda_pw=0.7, alpha_pt=0.5, alpha_pw=2.0)
    loss = trainer.compute_loss(trainer.model, inputs)
    # the same rollouts through zrcore: the module's forward, then eq. 14
    seqs, att = inputs["zr_sequences"], inputs["zr_attention"]
    comp = torch.zeros_like(seqs, dtype=torch.bool)
    n_reason = inputs["completion_mask"].sum(1)
    n_suffix = len(rm.score_suffix_ids)
    for r in range(seqs.shape[0]):
        end = seqs.shape[1] - n_suffix
        comp[r, end - int(n_reason[r]):end] = True
    images = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"]}
    out = rm(seqs, att, images, comp)
    p, m, g = 2, 2, 2
    scores = inputs["zr_scores"].view(p, m, g)[..., 0]
    ref = losses.gdso_loss(out.logps, out.logps.detach(), comp, out.distribution.mean.view(p, m, g),
                           out.distribution.log_probs.view(p, m, g, -1), scores, score_range=rm.bins.range,
                           target=rm.bins.index(scores), reward_mean=inputs["zr_reward_mean"].view(p, m, g),
                           lambda_pw=0.7, alpha_pt=0.5, alpha_pw=2.0, loss_type="grpo")
    torch.testing.assert_close(loss, ref.total, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_without_distribution_terms_it_is_grpo(tmp_path):
    trainer, _, inputs = _fixed_batch(tmp_path, lambda_pw=0.0, alpha_pt=0.0, alpha_pw=0.0)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    assert torch.equal(trainer.compute_loss(trainer.model, inputs), grpo)
    # the advantages are eq. 3 over the pointwise reward of eq. 7 alone
    mean = inputs["zr_reward_mean"].view(2, 2, 2)
    r_pt = losses.pointwise_reward(mean, inputs["zr_scores"].view(2, 2, 2)[..., 0], 4.0)
    torch.testing.assert_close(inputs["advantages"], losses.group_advantages(r_pt).reshape(-1))


def test_config_and_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="must be a multiple of num_candidates \\* num_generations"):
        GDSOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2, num_candidates=2,
                   use_cpu=True)
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=0)
    args = GDSOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, use_cpu=True,
                      report_to=[])
    with pytest.raises(ValueError, match=r"train_dataset lacks the columns \['image'\]"):
        GDSOTrainer(rm, args=args, train_dataset=_dataset().remove_columns("image"))
    with pytest.raises(ValueError, match="rollout_func is not supported by GDSOTrainer"):
        GDSOTrainer(rm, args=args, train_dataset=_dataset(), rollout_func=lambda prompts, trainer: {})
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, use_cpu=True)
    with pytest.raises(ValueError, match="sampler must be one of"):
        GDSOConfig(**base, sampler="vllm")
    with pytest.raises(ValueError, match="use_vllm=True needs sampler='trl'"):
        GDSOConfig(**base, sampler="judge", use_vllm=True)
    with pytest.raises(ValueError, match="use_transformers_continuous_batching is not supported"):
        GDSOConfig(**base, use_transformers_continuous_batching=True)
    for bad, message in ((float("nan"), "must be finite"), (9.0, "9.0 outside the rubric range")):
        data = _dataset()
        scores = list(data["score"])
        scores[3] = bad
        with pytest.raises(ValueError, match=f"row 3: .*{message}"):
            GDSOTrainer(rm, args=args, train_dataset=data.remove_columns("score").add_column("score", scores))


def test_sampler_keeps_the_candidates_of_a_prompt_together():
    from zrcore.integrations._trl_gdso import PromptGroupSampler

    groups = [[0, 1, 2], [3, 4], [5, 6, 7], [8]]  # the last has too few candidates
    sampler = PromptGroupSampler(groups, prompts_per_batch=2, num_candidates=2, num_generations=3, repeat_count=2,
                                 seed=0)
    idx = list(sampler)
    assert len(idx) == len(sampler) == 1 * 2 * 2 * 3 * 2
    block = 2 * 3  # one prompt: M candidates x G repeats, contiguous
    batch = idx[: len(idx) // 2]
    assert idx[len(idx) // 2:] == batch  # reused for the next iteration
    for start in range(0, len(batch), block):
        chunk = batch[start:start + block]
        owner = {next(gi for gi, grp in enumerate(groups) if i in grp) for i in chunk}
        assert len(owner) == 1 and len(set(chunk)) == 2 and chunk[0] == chunk[2] and chunk[3] == chunk[5]


@pytest.mark.slow
def test_two_processes_keep_each_prompt_on_one_rank(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(root / "tests/integrations/trl_two_process.py"), str(tmp_path)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)}
    ranks = {r: (v["seen"], v["losses"]) for r, v in ranks.items()}
    assert sorted(ranks) == [0, 1]
    for step in range(2):
        per_rank = [ranks[r][0][step] for r in (0, 1)]
        assert all(len(set(batch)) == 1 and len(batch) == 4 for batch in per_rank)  # M x G rows of one prompt
        assert per_rank[0][0] != per_rank[1][0]  # the ranks hold different prompts
    assert ranks[0][1] == ranks[1][1]  # the logged (averaged) losses agree


# ---- TRL's generation path against RewardModel.judge, on the same samples ------------------------------------------
class _ForceTokens:
    """A logits processor that makes ``generate`` emit given continuations (one token list per row)."""

    def __init__(self, targets: list[list[int]]):
        self.targets, self.start = targets, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        out = scores.clone()
        for r, target in enumerate(self.targets):
            if step < len(target):
                out[r] = float("-inf")
                out[r, target[step]] = 0.0
        return out


def _targets(rm) -> list[list[int]]:
    """Traces for the 8 rows (max_completion_length 4): ended ones (end-of-turn sampled, also as the 4th token) and
    cut ones (the judge's tail forces the end-of-turn)."""
    eot = rm.end_of_turn_id
    return [[101, 102, eot], [103, 104, 105, 106], [eot], [107, 108, 109, 110], [111, eot], [112, 113, 114, eot],
            [115, 116, 117, 118], [119, 120, 121, 122]]


def _force_generate(rm, targets):
    """Make ``rm.model.generate`` emit ``targets`` whatever else samples (the judge's seeded sampler, TRL's sampling)."""
    from transformers import LogitsProcessorList

    generate = rm.model.generate

    def forced(*args, **kwargs):
        processors = LogitsProcessorList([_ForceTokens(targets), *(kwargs.pop("logits_processor", None) or [])])
        return generate(*args, logits_processor=processors, **kwargs)

    rm.model.generate = forced


def _judge_then_trl(tmp_path, generate_with, **overrides):
    """(trainer, judge batch, TRL-path batch) on one generation batch, one model and the same traces."""
    trainer, rm = _trainer(tmp_path, sampler="judge", **overrides)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0, 0, 1, 1, 2, 2, 3, 3)]
    _force_generate(rm, _targets(rm))
    # the judge samples through HF generate here (its default backend prefills and samples by itself), so that the
    # forced traces reach it too
    rm.judge = functools.partial(rm.judge, backend=HFGenerateBackend())
    judged = trainer._generate_and_score_completions(rows)
    del rm.judge
    trainer.args.sampler = "trl"
    generate_with(trainer, rm, _targets(rm))
    return trainer, judged, trainer._generate_and_score_completions(rows)


def _assert_same_batch_and_losses(trainer, judged, sampled, keys=(), policy=True):
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "pixel_values", "image_grid_thw",
                "mm_token_type_ids", "zr_sequences", "zr_attention", "zr_scores", *keys):
        assert torch.equal(sampled[key], judged[key]), key
    torch.testing.assert_close(sampled["zr_reward_mean"], judged["zr_reward_mean"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sampled["advantages"], judged["advantages"], atol=1e-5, rtol=1e-5)
    model = trainer.model
    for got, want in zip(trainer.distribution_losses(model, sampled), trainer.distribution_losses(model, judged)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    if not policy:
        return
    torch.testing.assert_close(GRPOTrainer._compute_loss(trainer, model, sampled),
                               GRPOTrainer._compute_loss(trainer, model, judged), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(trainer.compute_loss(model, sampled), trainer.compute_loss(model, judged),
                               atol=1e-6, rtol=1e-6)


def _spy(trainer, name: str) -> list:
    """Record the row count of each call of trainer.<name>(prompt_ids, ...)."""
    seen, method = [], getattr(trainer, name)

    def wrapped(prompt_ids, *args, **kwargs):
        seen.append(len(prompt_ids))
        return method(prompt_ids, *args, **kwargs)

    setattr(trainer, name, wrapped)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("num_iterations", [1, 2])
def test_trl_generation_gives_the_judges_rewards_and_losses(tmp_path, num_iterations):
    calls = []
    trainer, judged, sampled = _judge_then_trl(
        tmp_path, lambda tr, rm, targets: calls.append(_spy(tr, "_generate_single_turn")),
        lambda_pw=0.7, alpha_pt=0.5, alpha_pw=2.0, num_iterations=num_iterations)
    assert calls[0] == [8]  # TRL's generation ran once, on the 8 rows
    assert [[int(t) for t in c[m.bool()]] for c, m in zip(judged["completion_ids"], judged["completion_mask"])] \
        == _targets(trainer.reward_model)
    keys = ("old_per_token_logps",) if num_iterations > 1 else ()
    assert ("old_per_token_logps" in sampled) == (num_iterations > 1)
    _assert_same_batch_and_losses(trainer, judged, sampled, keys)


class _StandInVLLM:
    """Stands in for TRL's ``VLLMGeneration`` (vLLM is a CUDA wheel): returns given completions and sampling
    log-probs, and records what TRL's generation path handed it."""

    def __init__(self, completions: list[list[int]], logprobs: list[float]):
        self.completions, self.logprobs, self.calls, self.synced = completions, logprobs, [], 0

    def sync_weights(self):
        self.synced += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls.append((prompts, images, num_generations))
        logprobs = [[[lp]] * len(c) for c, lp in zip(self.completions, self.logprobs)]
        return prompts, self.completions, logprobs, None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sequence_mask", "token_truncate"])
def test_vllm_branch_of_trl_generation(tmp_path, mode):
    engine = []

    def use_vllm(trainer, rm, targets):
        # about log(1/1024) = -6.9 per token under the random-init tiny model (1,024 ids): -12 gives ratios far
        # above the clip, -2 far below, whatever the tokenizer's merges make of the targets
        engine.append(_StandInVLLM(targets, [-12.0, -2.0] * 4))
        trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, engine[0], -1
        trainer.vllm_importance_sampling_correction, trainer.vllm_importance_sampling_mode = True, mode

    trainer, judged, sampled = _judge_then_trl(tmp_path, use_vllm, lambda_pw=0.7, alpha_pt=0.5, alpha_pw=2.0)
    vllm = engine[0]
    assert vllm.synced == 1 and len(vllm.calls) == 1
    prompts, images, g = vllm.calls[0]
    assert g == 2 and len(prompts) == 8 and all(len(im) == 1 for im in images)
    for r, ids in enumerate(prompts):  # the judge's prompt, with the image placeholders expanded
        assert ids == judged["prompt_ids"][r][judged["prompt_mask"][r].bool()].tolist()
    # the behaviour log-probs are vLLM's; the old ones and the ratio follow TRL's importance-sampling correction
    mask = sampled["completion_mask"]
    want = torch.tensor([[-12.0], [-2.0]] * 4) * mask
    torch.testing.assert_close(sampled["sampling_per_token_logps"], want)
    diff = (sampled["old_per_token_logps"] - want) * mask
    if mode == "sequence_mask":
        ratio = diff.sum(-1, keepdim=True).exp()
        ratio = ratio.masked_fill(ratio > trainer.vllm_importance_sampling_clip_max, 0.0)
    else:
        ratio = diff.exp().clamp(max=trainer.vllm_importance_sampling_clip_max)
    torch.testing.assert_close(sampled["importance_sampling_ratio"], ratio)
    clipped = (ratio == 0) if mode == "sequence_mask" else (ratio == trainer.vllm_importance_sampling_clip_max)
    assert clipped[::2].any() and not clipped[1::2].any()
    # the same batch, rewards and distribution losses as the judge's; the policy loss weighs tokens by the ratio
    _assert_same_batch_and_losses(trainer, judged, sampled, policy=False)
    assert torch.isfinite(trainer.compute_loss(trainer.model, sampled))


@pytest.mark.slow
def test_a_sampled_image_placeholder_is_refused(tmp_path):
    trainer, rm = _trainer(tmp_path)
    trainer.model.train()
    completions = [[5, 6, rm.end_of_turn_id]] * 7 + [[5, rm.image_pad_id, 7]]
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, _StandInVLLM(completions, [-6.0] * 8), -1
    rows = [trainer.train_dataset[i] for i in (0, 0, 1, 1, 2, 2, 3, 3)]
    with pytest.raises(ValueError, match=r"completions of rows \[7\] contain the image placeholder"):
        trainer._generate_and_score_completions(rows)


class _StandInVLLMGeneration(_StandInVLLM):
    """Built by GRPOTrainer in place of TRL's ``VLLMGeneration``: keeps the settings it was given and answers every
    row with a short trace (ended or cut by turns)."""

    built: list = []

    def __init__(self, **settings):
        super().__init__([], [])
        self.settings, self.processing_class = settings, settings["processing_class"]
        self.vllm_client = type("Client", (), {"get_server_info": lambda _: {
            "model_config": {"logprobs_mode": "processed_logprobs"}}})()
        _StandInVLLMGeneration.built.append(self)

    def generate(self, prompts, images, num_generations, profiler=None):
        eot = self.processing_class.convert_tokens_to_ids("<|im_end|>")
        self.completions = [[101 + r, eot] if r % 2 else [101 + r, 102, 103, 104] for r in range(len(prompts))]
        self.logprobs = [-6.0] * len(prompts)
        return super().generate(prompts, images, num_generations, profiler)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_use_vllm_trains_through_trls_generation(tmp_path, monkeypatch, mode):
    import trl.trainer.grpo_trainer as grpo

    monkeypatch.setattr(grpo, "VLLMGeneration", _StandInVLLMGeneration)
    _StandInVLLMGeneration.built.clear()
    trainer, rm = _trainer(tmp_path, use_vllm=True, vllm_mode=mode, vllm_enable_sleep_mode=True,
                           vllm_gpu_memory_utilization=0.5)
    engine = _StandInVLLMGeneration.built[0]
    assert {k: engine.settings[k] for k in ("mode", "enable_sleep_mode", "gpu_memory_utilization")} == \
        {"mode": mode, "enable_sleep_mode": True, "gpu_memory_utilization": 0.5}
    assert engine.processing_class.image_token_id == rm.image_pad_id  # read by TRL's server path
    out = trainer.train()
    assert out.global_step == 2 and engine.synced == 2 and len(engine.calls) == 2
    assert all(len(prompts) == 4 and g == 2 for prompts, _, g in engine.calls)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all("loss/ce" in h and "loss/pairwise" in h for h in logs)
    assert all(h["sampling/importance_sampling_ratio/max"] >= h["sampling/importance_sampling_ratio/min"] >= 0
               and h["sampling/sampling_logp_difference/mean"] > 0 for h in logs)  # TRL's vLLM mismatch metrics
