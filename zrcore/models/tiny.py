"""Tiny random-init reward models over the real Hugging Face VLM classes, built offline from configs.

A small byte-level BPE tokenizer is trained once per process on a bundled corpus and wrapped in
``Qwen2Tokenizer``; the rubric score labels are added as single tokens. Used by the tests and as the embedded
default of the recipes (no download anywhere).
"""

from __future__ import annotations

import functools
from importlib import resources

import torch

from zrcore.bins import ScoreBins

ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
PRESETS = {
    "student": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vision_depth": 1,
                "vision_width": 32},
    "teacher": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3, "vision_depth": 1,
                "vision_width": 32},
}
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
VOCAB_SIZE = 1024


@functools.lru_cache(maxsize=4)
def _bpe_vocab_and_merges(vocab_size: int) -> tuple[dict, list]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    corpus = resources.files("zrcore.models").joinpath("corpus.txt").read_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus] * 4, trainer=trainer)
    data = tok.to_str()
    import json

    model = json.loads(data)["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def build_tiny_tokenizer(bins: ScoreBins | None = None):
    """A Qwen2Tokenizer with a small trained BPE vocabulary, the chat/vision special tokens and the bin labels
    as single tokens; at most VOCAB_SIZE ids in all."""
    from transformers import Qwen2Tokenizer

    bins = bins or ScoreBins.half_points()
    budget = VOCAB_SIZE - len(SPECIAL_TOKENS) - len(bins) - 8
    vocab, merges = _bpe_vocab_and_merges(budget)
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges))
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.add_tokens(list(bins.labels))
    tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"
    if len(tok) > VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer has {len(tok)} ids, more than the model's {VOCAB_SIZE}")
    return tok


def _text_config(arch: str, preset: dict) -> dict:
    cfg = dict(vocab_size=VOCAB_SIZE, num_attention_heads=preset["hidden_size"] // 16, num_key_value_heads=2,
               max_position_embeddings=2048, **{k: preset[k] for k in TEXT_KEYS})
    if arch in ("qwen2_vl", "qwen2_5_vl"):
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}
    elif arch == "qwen3_vl":
        cfg.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                 "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    else:  # qwen3_5: hybrid gated-DeltaNet + full attention
        cfg.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                 "partial_rotary_factor": 0.25, "mrope_section": [1, 1, 0],
                                                 "mrope_interleaved": True},
                   layer_types=(["linear_attention", "full_attention"] * 4)[: preset["num_hidden_layers"]],
                   linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                   linear_num_value_heads=4)
    return cfg


def _vision_config(arch: str, out_hidden: int, depth: int = 1, width: int = 32) -> dict:
    heads = max(2, width // 16)
    if arch == "qwen2_vl":
        return dict(depth=depth, embed_dim=width, hidden_size=out_hidden, num_heads=heads, mlp_ratio=2,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if arch == "qwen2_5_vl":
        return dict(depth=depth, hidden_size=width, out_hidden_size=out_hidden, intermediate_size=2 * width,
                    num_heads=heads, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                    fullatt_block_indexes=list(range(depth)))
    cfg = dict(depth=depth, hidden_size=width, out_hidden_size=out_hidden, intermediate_size=2 * width,
               num_heads=heads, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
               num_position_embeddings=256)
    if arch == "qwen3_vl":
        cfg["deepstack_visual_indexes"] = [0]
    return cfg


def tiny_model_config(arch: str, preset: str = "student", tokenizer=None):
    """The transformers config of a tiny ``arch`` model (see ARCHS, PRESETS)."""
    import transformers

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    tok = tokenizer or build_tiny_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    p = PRESETS[preset]
    text = _text_config(arch, p)
    vision = _vision_config(arch, p["hidden_size"], p["vision_depth"], p["vision_width"])
    cls = {"qwen2_vl": transformers.Qwen2VLConfig, "qwen2_5_vl": transformers.Qwen2_5_VLConfig,
           "qwen3_vl": transformers.Qwen3VLConfig, "qwen3_5": transformers.Qwen3_5Config}[arch]
    text.update(eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                bos_token_id=None)
    return cls(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def tiny_image_processor(arch: str, max_side: int = 112):
    """The official (PIL) Qwen image processor with the tiny models' small pixel budget."""
    from transformers import Qwen2VLImageProcessorPil

    patch = 14 if arch in ("qwen2_vl", "qwen2_5_vl") else 16
    factor = 2 * patch
    side = max(factor, (max_side // factor) * factor)
    extra = {} if patch == 14 else {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=factor * factor,
                                    max_pixels=side * side, **extra)


def build_tiny_reward_model(arch: str = "qwen2_vl", preset: str = "student", seed: int = 0,
                            bins: ScoreBins | None = None, templates=None):
    """A random-init RewardModel of architecture ``arch`` built offline (see the module docstring)."""
    import transformers

    from zrcore.models.reward_model import RewardModel

    bins = bins or ScoreBins.half_points()
    tok = build_tiny_tokenizer(bins)
    config = tiny_model_config(arch, preset, tok)
    cls = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
           "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
           "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
           "qwen3_5": transformers.Qwen3_5ForConditionalGeneration}[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        model.eval()
    return RewardModel(model, tok, tiny_image_processor(arch), bins=bins, templates=templates)
