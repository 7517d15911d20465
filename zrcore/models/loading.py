"""One reading of a reward-model spec string, for recipes, the CLI and the trainers.

    ""  or  "tiny"        a tiny random-init model of ``arch`` (zrcore.models.tiny)
    "tiny:ARCH"           a tiny random-init model of that architecture (qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5)
    a folder              a checkpoint written by ``RewardModel.save_pretrained`` or a recipe's ``output_dir/model``
    "org/name"            a Hugging Face hub id, passed through to transformers
"""

from __future__ import annotations

from zrcore.models.reward_model import RewardModel
from zrcore.models.tiny import ARCHS, build_tiny_reward_model


def load_reward_model(spec: str, seed: int = 0, arch: str = "qwen2_vl", preset: str = "student",
                      empty: bool = False) -> RewardModel:
    """The RewardModel a spec string names (see the module docstring), on the CPU in fp32. ``seed``, ``arch`` and
    ``preset`` apply to tiny models only. ``empty``: the structure alone, its parameters on the meta device (no
    memory, no weights read) and its buffers real (rotary frequencies are computed, not loaded): a rank that will
    receive its shards from another one (``Runtime.load_full_state``)."""
    if empty:
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            return _load(spec, seed, arch, preset, weights=False)
    return _load(spec, seed, arch, preset, weights=True)


def _load(spec: str, seed: int, arch: str, preset: str, weights: bool) -> RewardModel:
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string (a folder or 'tiny[:ARCH]'), got {type(spec).__name__}")
    if spec in ("", "tiny") or spec.startswith("tiny:"):
        arch = spec.split(":", 1)[1] if ":" in spec else arch
        if arch not in ARCHS:
            raise ValueError(f"reward model {spec!r}: unknown tiny architecture {arch!r} (one of {list(ARCHS)})")
        return build_tiny_reward_model(arch, preset, seed=seed)
    return RewardModel.from_pretrained(spec, weights=weights)
