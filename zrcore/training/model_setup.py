"""How a training config sets up a reward model it has built or loaded: the attention implementation and gradient
checkpointing. Shared by the reward trainers, the pretraining and the generator."""

from __future__ import annotations

import importlib.util

import torch


def attn_implementation(choice: str, device: torch.device) -> str:
    """"auto" -> flash_attention_2 when flash-attn is installed and the model is on CUDA, else sdpa."""
    if choice != "auto":
        if choice == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'zrcore[flash]'")
        return choice
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def configure_reward_model(rm, cfg, device: torch.device):
    """Attention implementation and gradient checkpointing as the config asks."""
    rm.set_attn_implementation(attn_implementation(cfg.attn_implementation, device))
    if cfg.gradient_checkpointing:
        rm.gradient_checkpointing_enable()
    return rm
