"""Warm-up of the vision tower before the descriptions: the tower learns to tell the rendered attributes apart.

A real VLM's vision encoder comes pretrained (CLIP, SigLIP) before the language model learns to talk about its
tokens. The tiny models start from random init, and a description loss alone teaches the language model to name
the objects but not to read blur, noise or position from the image tokens: it lowers the loss faster from the
words before (docs/RESULTS.md). So the pretraining stage first trains the vision tower V (with its merger) and one
linear head W_a per attribute a of ``zrcore.data.captions.ATTRIBUTES`` (blur, noise and clutter levels, count,
floating objects, overlap, centring, colour, shape, background) on the pretraining images:

    L = sum_a CE(W_a flatten(V(x)), y_a(x))

mean over a batch of images x; the language model is not touched and the heads are dropped afterwards. The labels
are what the image's description names, as classes: no score and no rubric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from zrcore.data.captions import ATTRIBUTES


def stack_images(pixels: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Image inputs of a batch from each image's (pixel rows, grid_thw row) of ``RewardModel.image_inputs``."""
    return {"pixel_values": torch.cat([p for p, _ in pixels]), "image_grid_thw": torch.stack([g for _, g in pixels])}


def warm_up_vision(rm, pixels: list[tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor, steps: int,
                   lr: float, batch_size: int, seed: int,
                   held_out: tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None = None,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                   ) -> dict[str, float]:
    """Train ``rm``'s vision tower for ``steps`` AdamW steps of ``batch_size`` images drawn with ``seed`` on L above.

    ``pixels``: per image its (pixel rows, grid_thw row) of ``rm.image_inputs``; ``labels``: [N, len(ATTRIBUTES)]
    classes. Returns the last step's loss and, with ``held_out`` (pixels, labels), the held-out accuracy per
    attribute (``acc/<attribute>``) beside the share of its most common class (``majority/<attribute>``).
    ``autocast``: the context of the run's compute dtype (the runtime's ``autocast``; parameters stay as they are)."""
    if len(pixels) != labels.shape[0] or labels.shape[1:] != (len(ATTRIBUTES),):
        raise ValueError(f"labels: need [{len(pixels)}, {len(ATTRIBUTES)}] classes, got {tuple(labels.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = rm.device

    def features(rows: list) -> torch.Tensor:
        with autocast():
            return rm.image_features(stack_images(rows)).flatten(1).float()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width = features(pixels[:1]).shape[1]
        heads = torch.nn.ModuleList(torch.nn.Linear(width, n) for n in ATTRIBUTES.values()).to(device)
    tower = [p for p in rm.vision_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(tower + list(heads.parameters()), lr=lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    labels = labels.to(device)
    was = rm.training
    rm.train()
    for _ in range(steps):
        idx = torch.randint(len(pixels), (batch_size,), generator=order).tolist()
        feats = features([pixels[i] for i in idx])
        loss = sum(F.cross_entropy(h(feats), labels[idx, k]) for k, h in enumerate(heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out = {"loss": float(loss.detach())}
    if held_out is not None:
        rm.eval()
        rows, truth = held_out
        with torch.no_grad():
            feats = torch.cat([features(rows[i:i + 256]) for i in range(0, len(rows), 256)])
        truth = truth.to(device)
        for k, (name, h) in enumerate(zip(ATTRIBUTES, heads)):
            out[f"acc/{name}"] = float((h(feats).argmax(-1) == truth[:, k]).float().mean())
            out[f"majority/{name}"] = float(truth[:, k].bincount().max() / len(truth))
    rm.train(was)
    return out
