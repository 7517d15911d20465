"""Patch Hugging Face Qwen-VL models, liger-kernel style, so that a forward given ``score_positions`` returns the
score distribution there through the fused op:

    from zrcore.integrations.transformers import apply_zrcore
    apply_zrcore(model, bins=ScoreBins.half_points(), score_token_ids=ids)      # one instance
    apply_zrcore(AutoModelForImageTextToText.from_pretrained("runs/gdso/model"))  # an export: bins and ids read
                                                                                  # from its config
    q = model(**inputs, score_positions=-1)                                       # ScoreDistribution [B]

q = softmax(W_S h_p / T) over the K score-token rows W_S of the LM head at position p of each row, with its mean
and variance (``zrcore.ops.score_distribution``): the base model gives the hidden states and only the K rows are
multiplied, so no [B, L, V] logits are formed. Without ``score_positions`` the forward is the original one.
``apply_zrcore_to_<arch>(model=None, ...)`` patches the class (every instance, present and future) when ``model`` is
None; ``revert_zrcore(model)`` (or ``revert_zrcore(cls)``) restores the original forward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from zrcore.bins import ScoreBins
from zrcore.ops import score_distribution

_ORIGINAL = "_zrcore_original_forward"
_STATE = "_zrcore_score_head"
_DROPPED = ("labels", "logits_to_keep", "return_dict", "output_attentions", "output_hidden_states")


@dataclass(frozen=True)
class ScoreHeadSpec:
    """What the patched forward reads: the K score-token ids, the bin values and the temperature."""

    token_ids: torch.Tensor
    values: torch.Tensor
    temperature: float = 1.0


CONFIG_KEY = "zrcore_score_head"  # what RewardModel.save_pretrained writes into the model's config.json


def _spec(bins: ScoreBins | None, score_token_ids, temperature: float, config=None) -> ScoreHeadSpec:
    """The score head from the arguments, else from ``config.zrcore_score_head`` (a model exported by zrcore)."""
    saved = getattr(config, CONFIG_KEY, None) if config is not None else None
    if score_token_ids is None and saved:
        score_token_ids = saved["score_token_ids"]
        bins = bins or ScoreBins(saved["bin_values"], saved.get("bin_labels"))
    bins = bins or ScoreBins.half_points()
    if score_token_ids is None:
        raise ValueError("score_token_ids is required: the tokenizer ids of the bin labels "
                         "(zrcore.models.ScoreDecoder(tokenizer, bins).token_ids), since the model's config has no "
                         f"{CONFIG_KEY} (a model exported by zrcore has it); pass bins too unless they are the "
                         "default half points 1, 1.5, ..., 5")
    ids = torch.as_tensor(score_token_ids, dtype=torch.long).flatten()
    if ids.numel() != len(bins):
        raise ValueError(f"score_token_ids has {ids.numel()} ids but bins has {len(bins)} bins")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return ScoreHeadSpec(ids, bins.values.float(), float(temperature))


def _positions(score_positions, batch: int, length: int, device) -> torch.Tensor:
    pos = torch.as_tensor(score_positions, dtype=torch.long, device=device)
    if pos.dim() == 0:
        pos = pos.expand(batch)
    if pos.dim() != 1 or pos.shape[0] != batch:
        raise ValueError(f"score_positions must be an int or one position per row ([{batch}]), got shape "
                         f"{tuple(pos.shape)}")
    if ((pos < -length) | (pos >= length)).any():
        bad = pos[(pos < -length) | (pos >= length)].tolist()
        raise ValueError(f"score_positions {bad} out of range for sequences of length {length}")
    return pos % length


def _score_forward(self, *args, score_positions=None, **kwargs):
    original = getattr(self, _ORIGINAL)
    if score_positions is None:
        return original(*args, **kwargs)
    spec: ScoreHeadSpec = getattr(self, _STATE)
    if args:
        raise TypeError("pass the model inputs as keywords (input_ids=..., pixel_values=...) with score_positions")
    for key in _DROPPED:
        kwargs.pop(key, None)
    kwargs.setdefault("use_cache", False)
    hidden = self.model(**kwargs).last_hidden_state  # [B, L, H]: the base model, no vocabulary projection
    pos = _positions(score_positions, hidden.shape[0], hidden.shape[1], hidden.device)
    h = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
    head = self.get_output_embeddings()
    weight = head.weight
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    return score_distribution(h, weight, spec.token_ids.to(h.device), spec.values.to(h.device),
                              bias=head.bias, temperature=spec.temperature)


def _apply(model_type: str, class_name: str, model=None, bins: ScoreBins | None = None, score_token_ids=None,
           temperature: float = 1.0):
    import transformers

    cls = getattr(transformers, class_name)
    spec = _spec(bins, score_token_ids, temperature, getattr(model, "config", None))
    if model is None:  # the class: every instance
        if _ORIGINAL not in cls.__dict__:
            original = cls.forward
            setattr(cls, _ORIGINAL, original)

            @functools.wraps(original)
            def forward(self, *args, **kwargs):
                return _score_forward(self, *args, **kwargs)

            cls.forward = forward
        setattr(cls, _STATE, spec)
        return cls
    if not isinstance(model, cls):
        raise ValueError(f"model is a {type(model).__name__}, not a {class_name} (model_type {model_type!r})")
    if _ORIGINAL not in model.__dict__:
        original = getattr(cls, _ORIGINAL, cls.forward)  # the unpatched forward, also when the class is patched
        object.__setattr__(model, _ORIGINAL, original.__get__(model))
        object.__setattr__(model, "forward", functools.partial(_score_forward, model))
    object.__setattr__(model, _STATE, spec)
    return model


def apply_zrcore_to_qwen2_vl(model=None, bins: ScoreBins | None = None, score_token_ids=None, temperature: float = 1.0):
    """Patch ``Qwen2VLForConditionalGeneration`` (the class, or the instance ``model``); see the module docstring."""
    return _apply("qwen2_vl", "Qwen2VLForConditionalGeneration", model, bins, score_token_ids, temperature)


def apply_zrcore_to_qwen2_5_vl(model=None, bins: ScoreBins | None = None, score_token_ids=None,
                               temperature: float = 1.0):
    """Patch ``Qwen2_5_VLForConditionalGeneration`` (the class, or the instance ``model``)."""
    return _apply("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", model, bins, score_token_ids, temperature)


def apply_zrcore_to_qwen3_vl(model=None, bins: ScoreBins | None = None, score_token_ids=None, temperature: float = 1.0):
    """Patch ``Qwen3VLForConditionalGeneration`` (the class, or the instance ``model``)."""
    return _apply("qwen3_vl", "Qwen3VLForConditionalGeneration", model, bins, score_token_ids, temperature)


def apply_zrcore_to_qwen3_5(model=None, bins: ScoreBins | None = None, score_token_ids=None, temperature: float = 1.0):
    """Patch ``Qwen3_5ForConditionalGeneration`` (the class, or the instance ``model``)."""
    return _apply("qwen3_5", "Qwen3_5ForConditionalGeneration", model, bins, score_token_ids, temperature)


MODEL_TYPE_TO_APPLY_ZRCORE_FN = {
    "qwen2_vl": apply_zrcore_to_qwen2_vl,
    "qwen2_5_vl": apply_zrcore_to_qwen2_5_vl,
    "qwen3_vl": apply_zrcore_to_qwen3_vl,
    "qwen3_5": apply_zrcore_to_qwen3_5,
}


def apply_zrcore(model, bins: ScoreBins | None = None, score_token_ids=None, temperature: float = 1.0):
    """Patch one model instance by its ``config.model_type`` (see MODEL_TYPE_TO_APPLY_ZRCORE_FN). ``bins`` and
    ``score_token_ids`` default to those a zrcore export wrote into the model's config (``zrcore_score_head``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_ZRCORE_FN:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: "
                         f"{sorted(MODEL_TYPE_TO_APPLY_ZRCORE_FN)}")
    return MODEL_TYPE_TO_APPLY_ZRCORE_FN[model_type](model, bins=bins, score_token_ids=score_token_ids,
                                                     temperature=temperature)


def revert_zrcore(target) -> None:
    """Undo ``apply_zrcore*`` on an instance or a class (a no-op where nothing was patched)."""
    if isinstance(target, type):
        if _ORIGINAL in target.__dict__:
            target.forward = target.__dict__[_ORIGINAL]
            delattr(target, _ORIGINAL)
            delattr(target, _STATE)
        return
    for name in (_ORIGINAL, "forward", _STATE):
        if name in target.__dict__:
            object.__delattr__(target, name)


def is_patched(model) -> bool:
    return _ORIGINAL in model.__dict__ or _ORIGINAL in type(model).__dict__
