"""Reward functions for diffusion RL code bases (DDPO / flow-GRPO style):

    from zrcore.integrations.diffusion import reward_fn
    fn = reward_fn(student, dimensions=("realism", "aesthetics"), aggregation="pessimistic", kappa=1.0)
    rewards, info = fn(images, prompts, metadata)

R(p, I) = A({q_d(p, I)}_d) aggregated over rubric dimensions (``zrcore.diffusion.reward.aggregate_reward``: mean,
weighted, min, or mean_d (mu_d - kappa sigma_d)). ``images`` may be uint8 arrays or tensors [B, H, W, 3] /
[B, 3, H, W], a list of PIL images, or a float tensor [B, 3, H, W] in [0, 1] (other ranges, such as a VAE's
[-1, 1], are refused with the mapping to use); every form goes through the same
differentiable pixel path (``RewardModel.score_pixels``), so the forms give equal rewards and a float tensor that
requires grad gets a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from zrcore.diffusion.reward import AGGREGATIONS, aggregate_reward


def images_to_tensor(images) -> torch.Tensor:
    """uint8 [B, H, W, 3] / [B, 3, H, W] arrays or tensors, PIL lists, or float [B, 3, H, W] in [0, 1] -> float
    [B, 3, H, W] in [0, 1] (float inputs are returned as they are, keeping their graph)."""
    from PIL import Image

    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty")
        if all(isinstance(im, Image.Image) for im in images):
            images = np.stack([np.asarray(im.convert("RGB")) for im in images])
        elif all(isinstance(im, (np.ndarray, torch.Tensor)) for im in images):
            images = torch.stack([torch.as_tensor(im) for im in images])
        else:
            raise TypeError("images: a list must hold PIL images or arrays, got "
                            f"{sorted({type(im).__name__ for im in images})}")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be uint8 arrays, PIL images or a float tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have 4 dimensions ([B, 3, H, W] or [B, H, W, 3]), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] == 3 and images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"images: integer images must be uint8, got {images.dtype}")
    if images.shape[1] != 3:
        raise ValueError(f"images: float images must be [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
    check_unit_range(images)
    return images


def check_unit_range(images: torch.Tensor, tol: float = 0.02) -> None:
    """Float images must lie in [0, 1] (up to ``tol``): a VAE's [-1, 1] output or [0, 255] values would be scored
    as other images without a word. The error says how to map them."""
    with torch.no_grad():
        lo, hi = float(images.min()), float(images.max())
    if lo != lo or hi != hi:
        raise ValueError("images: float images hold NaN")
    if lo < -tol or hi > 1 + tol:
        hint = ("[-1, 1] (a VAE's decoded output): pass (images + 1) / 2" if lo >= -1 - tol and hi <= 1 + tol
                else "[0, 255]: pass images / 255, or uint8 images" if lo >= -tol and hi <= 255 + tol else
                "clamp or rescale them to [0, 1]")
        raise ValueError(f"images: float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; for {hint}")


class DistributionReward:
    """The callable ``reward_fn`` returns; see the module docstring."""

    def __init__(self, reward_model, dimensions: Sequence[str] = ("realism", "aesthetics", "plausibility", "alignment"),
                 aggregation: str = "mean", kappa: float | None = None, weights: dict | None = None):
        if kappa is None:  # as the TRL reward function: pessimistic means kappa 1 unless told
            kappa = 1.0 if aggregation == "pessimistic" else 0.0
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
        unknown = [d for d in dimensions if d not in reward_model.dimensions]
        if unknown or not dimensions:
            raise ValueError(f"dimensions {list(unknown) or '[]'} are not rubric dimensions of the reward model "
                             f"({list(reward_model.dimensions)})")
        self.rm, self.dimensions = reward_model, tuple(dimensions)
        self.aggregation, self.kappa, self.weights = aggregation, kappa, weights
        self.__name__ = f"zrcore_{aggregation}"

    def __call__(self, images, prompts: Sequence[str], metadata=None):
        pixels = images_to_tensor(images).to(self.rm.device)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"prompts: got {len(prompts)} prompts for {pixels.shape[0]} images")
        dists = {d: self.rm.score_pixels(prompts, pixels, d) for d in self.dimensions}
        rewards = aggregate_reward(dists, self.aggregation, weights=self.weights, kappa=self.kappa)
        info = {f"{d}/mean": q.mean.detach() for d, q in dists.items()}
        info |= {f"{d}/std": q.std.detach() for d, q in dists.items()}
        return rewards, info


def reward_fn(reward_model, dimensions: Sequence[str] = ("realism", "aesthetics", "plausibility", "alignment"),
              aggregation: str = "mean", kappa: float | None = None, weights: dict | None = None
              ) -> DistributionReward:
    """A ``fn(images, prompts, metadata) -> (rewards [B], info)`` over a (student) ``RewardModel``. ``kappa``:
    the pessimistic aggregation's mean - kappa * std (default 1.0 with ``aggregation="pessimistic"``, as
    ``ZRewardFunction``; other aggregations take none). Float images must be in [0, 1]."""
    return DistributionReward(reward_model, dimensions, aggregation, kappa, weights)


def score_pipeline_output(output, prompts: Sequence[str], fn: DistributionReward):
    """Rewards of a diffusers pipeline's output (``.images`` as PIL, numpy in [0, 1] or a tensor in [0, 1])."""
    images = getattr(output, "images", output)
    if isinstance(images, np.ndarray) and images.dtype != np.uint8:  # output_type="np": float [B, H, W, 3]
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return fn(images, prompts)
