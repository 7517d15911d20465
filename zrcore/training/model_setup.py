"""How a training config sets up a reward model it has built or loaded: the attention implementation and gradient
checkpointing. Shared by the reward trainers, the pretraining and the generator."""

from __future__ import annotations

import importlib.util

import torch

from zrcore.training.optim import MASTER_DTYPES


def attn_implementation(choice: str, device: torch.device) -> str:
    """"auto" -> flash_attention_2 when flash-attn is installed and the model is on CUDA, else sdpa."""
    if choice != "auto":
        if choice == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'zrcore[flash]'")
        return choice
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def configure_reward_model(rm, cfg, device: torch.device, trainable: bool = True):
    """Set a reward model up as the config asks, whether the trainer built it or was given it: the attention
    implementation; for a trained model the master dtype of its weights (``master_dtype``: fp32 by default, whatever
    dtype a checkpoint was saved in) and gradient checkpointing. A frozen model keeps its dtype here
    (``Runtime.prepare`` casts it to ``ref_dtype``)."""
    rm.set_attn_implementation(attn_implementation(cfg.attn_implementation, device))
    if trainable:
        rm.to(MASTER_DTYPES[getattr(cfg, "master_dtype", "fp32")])
        if cfg.gradient_checkpointing:
            rm.gradient_checkpointing_enable()
    return rm
