"""LoRA adapters on a diffusers transformer through peft (diffusers' own add_adapter), for reward fine-tuning of
the generator with the base weights frozen: W x + (alpha / r) B A x on the target linear layers."""

from __future__ import annotations

import torch

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of Z-Image, SD3 and Flux blocks


def add_lora(transformer, rank: int, alpha: float | None = None,
             target_modules: list[str] | tuple[str, ...] = DEFAULT_TARGETS) -> list[torch.nn.Parameter]:
    """Freezes the transformer, adds a LoRA adapter of the given rank (alpha defaults to the rank) to the target
    modules and returns its trainable parameters. B starts at zero, so the adapted model starts equal to the base."""
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    try:
        from peft import LoraConfig
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ImportError("LoRA needs peft: pip install peft") from err
    names = [name for name, _ in transformer.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]  # peft's rule
    if missing:
        raise ValueError(f"target_modules {missing} match no module of {type(transformer).__name__}")
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank,
                                       target_modules=list(target_modules), init_lora_weights=True))
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params
