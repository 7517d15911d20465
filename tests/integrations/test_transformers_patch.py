"""apply_zrcore: the patched forward returns RewardModel.score's q through the fused op, the LM head never runs,
revert restores the original outputs bit for bit, and a transformers.Trainer learns a score cross-entropy."""

import pytest
import torch

from zrcore import losses
from zrcore.data import SyntheticRubric
from zrcore.integrations.transformers import (
    MODEL_TYPE_TO_APPLY_ZRCORE_FN,
    apply_zrcore,
    apply_zrcore_to_qwen2_vl,
    revert_zrcore,
)
from zrcore.models import ARCHS, build_tiny_reward_model


def _batch(rm, n=3, seed=0):
    recs = SyntheticRubric(seed=seed, image_size=56).records(n, 1, ("realism",))
    prompts, images = [r.prompt for r in recs], [r.image for r in recs]
    return prompts, images, rm.tensor_inputs(*rm.score_inputs(prompts, images, "realism")), recs


@pytest.mark.parametrize("arch", ARCHS)
def test_patched_forward_equals_score_and_revert_restores(arch):
    rm = build_tiny_reward_model(arch, "student", seed=0)
    prompts, images, inputs, _ = _batch(rm)
    head = rm.model.get_output_embeddings()
    with torch.no_grad():
        before = rm.model(**inputs).logits
        apply_zrcore(rm.model, bins=rm.bins, score_token_ids=rm.decoder.token_ids)
        calls = []
        handle = head.register_forward_hook(lambda *a: calls.append(1))
        try:
            q = rm.model(**inputs, score_positions=-1)
        finally:
            handle.remove()
        ref = rm.score(prompts, images, "realism")
        revert_zrcore(rm.model)
        after = rm.model(**inputs).logits
    assert calls == []  # only the K score rows were multiplied, inside score_distribution
    torch.testing.assert_close(q.log_probs, ref.log_probs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(q.mean, ref.mean, atol=1e-6, rtol=1e-6)
    assert torch.equal(before, after)


def test_class_patch_and_per_row_positions():
    rm = build_tiny_reward_model("qwen2_vl", "student", seed=1)
    prompts, images, inputs, _ = _batch(rm, n=2)
    cls = type(rm.model)
    length = inputs["input_ids"].shape[1]
    try:
        apply_zrcore_to_qwen2_vl(bins=rm.bins, score_token_ids=rm.decoder.token_ids)
        apply_zrcore(rm.model, bins=rm.bins, score_token_ids=rm.decoder.token_ids)  # instance on a patched class
        with torch.no_grad():
            q = rm.model(**inputs, score_positions=torch.tensor([length - 1, -1]))
            plain = rm.model(**inputs)  # no score_positions: the original forward
        revert_zrcore(rm.model)
        with torch.no_grad():
            q_cls = rm.model(**inputs, score_positions=-1)
    finally:
        revert_zrcore(cls)
    torch.testing.assert_close(q.mean, q_cls.mean)
    assert plain.logits.shape[-1] == rm.model.config.get_text_config().vocab_size
    assert "_zrcore_original_forward" not in cls.__dict__


def test_bad_arguments_are_named():
    rm = build_tiny_reward_model("qwen2_vl", "student", seed=0)
    _, _, inputs, _ = _batch(rm, n=2)
    length = inputs["input_ids"].shape[1]
    apply_zrcore(rm.model, bins=rm.bins, score_token_ids=rm.decoder.token_ids)
    with pytest.raises(ValueError, match=rf"score_positions \[{length}, {length}\] out of range"):
        rm.model(**inputs, score_positions=length)
    with pytest.raises(ValueError, match="one position per row"):
        rm.model(**inputs, score_positions=[1, 2, 3])
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        apply_zrcore(type("M", (), {"config": type("C", (), {"model_type": "bert"})()})())
    with pytest.raises(ValueError, match="score_token_ids has 3 ids but bins has 9"):
        apply_zrcore(rm.model, bins=rm.bins, score_token_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="score_token_ids is required"):
        apply_zrcore(rm.model, bins=rm.bins)
    assert sorted(MODEL_TYPE_TO_APPLY_ZRCORE_FN) == sorted(ARCHS)


def test_an_exported_model_needs_no_other_argument(tmp_path):
    """RewardModel.save_pretrained writes the bins and the score token ids into config.json: apply_zrcore on the
    folder loaded with AutoModelForImageTextToText reads them; the patched forward equals RewardModel.score."""
    from transformers import AutoModelForImageTextToText

    from zrcore.bins import ScoreBins

    rm = build_tiny_reward_model("qwen2_vl", "student", seed=0, bins=ScoreBins([1, 2, 3, 4, 5]))
    rm.save_pretrained(tmp_path / "model")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    apply_zrcore(model)
    prompts, images, inputs, _ = _batch(rm)
    with torch.no_grad():
        q = model(**inputs, score_positions=-1)
        ref = rm.score(prompts, images, "realism")
    assert q.log_probs.shape[-1] == 5
    torch.testing.assert_close(q.mean, ref.mean, atol=1e-6, rtol=1e-6)
    fresh = build_tiny_reward_model("qwen2_vl", "student", seed=0)  # never exported: no score head in its config
    with pytest.raises(ValueError, match="score_token_ids is required.*zrcore_score_head"):
        apply_zrcore(fresh.model)


@pytest.mark.slow
def test_transformers_trainer_learns_a_score_cross_entropy(tmp_path):
    """Two steps of transformers.Trainer with the patch and a compute_loss over q lower the loss on a fixed batch."""
    from transformers import Trainer, TrainingArguments

    rm = build_tiny_reward_model("qwen2_vl", "student", seed=0)
    apply_zrcore(rm.model, bins=rm.bins, score_token_ids=rm.decoder.token_ids)
    prompts, images, inputs, recs = _batch(rm, n=4, seed=3)
    target = rm.bins.index(torch.tensor([r.score for r in recs]))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(recs)

        def __getitem__(self, i):
            return {"prompt": prompts[i], "image": images[i], "target": target[i]}

    def collate(rows):  # the RewardModel as the processor: rubric prompt, image tokens, left padding
        batch = rm.tensor_inputs(*rm.score_inputs([r["prompt"] for r in rows], [r["image"] for r in rows], "realism"))
        return batch | {"target": torch.stack([r["target"] for r in rows])}

    class ScoreTrainer(Trainer):
        def compute_loss(self, model, batch, return_outputs=False, num_items_in_batch=None):
            target = batch.pop("target")
            q = model(**batch, score_positions=-1)
            return losses.pointwise_ce(q.log_probs, target)

    def loss_now():
        with torch.no_grad():
            return float(losses.pointwise_ce(rm.model(**inputs, score_positions=-1).log_probs, target))

    before = loss_now()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=3e-3,
                             use_cpu=True, report_to=[], remove_unused_columns=False, save_strategy="no",
                             logging_steps=1, disable_tqdm=True)
    ScoreTrainer(model=rm.model, args=args, train_dataset=Rows(), data_collator=collate).train()
    assert loss_now() < before
