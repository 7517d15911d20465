"""GDSOTrainer on TRL's GRPO loop with the tiny Qwen2-VL judge: two steps run on CPU, its loss on a fixed batch of
rollouts equals zrcore.losses.gdso_loss, and without the distribution terms it is TRL's GRPO loss."""

import pytest
import torch

pytest.importorskip("trl", reason="the [trl] extra is part of [test]; this guards a plain install")

from datasets import Dataset  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from zrcore import losses  # noqa: E402
from zrcore.data import SyntheticRubric  # noqa: E402
from zrcore.integrations.trl import GDSOConfig, GDSOTrainer  # noqa: E402
from zrcore.models import build_tiny_reward_model  # noqa: E402


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
def test_two_gdso_steps_run(tmp_path):
    trainer, _ = _trainer(tmp_path)
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
