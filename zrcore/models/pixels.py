"""Differentiable image preprocessing for Qwen-VL vision towers: resize, rescale, normalise and patchify in torch,
producing the same ``pixel_values`` / ``image_grid_thw`` layout as the official image processors, so that gradients
reach the pixels (reward backpropagation into a generator)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionGeometry:
    """What the vision tower expects: patch and merge sizes, normalisation, and the pixel budget."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_image_processor(cls, proc) -> VisionGeometry:
        size = getattr(proc, "size", None) or {}
        get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
        return cls(patch_size=int(proc.patch_size), merge_size=int(proc.merge_size),
                   temporal_patch_size=int(proc.temporal_patch_size), mean=tuple(proc.image_mean),
                   std=tuple(proc.image_std),
                   min_pixels=int(get("shortest_edge", None) or getattr(proc, "min_pixels", 56 * 56)),
                   max_pixels=int(get("longest_edge", None) or getattr(proc, "max_pixels", 28 * 28 * 1280)))

    def tokens(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """Number of LLM image tokens per image: t * h * w / merge^2."""
        return grid_thw.prod(-1) // (self.merge_size**2)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Target size with both sides divisible by ``factor``, area within [min_pixels, max_pixels], aspect ratio
    kept as closely as possible (the rule of Qwen's image processors)."""
    if min(height, width) <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patchify(images: torch.Tensor, geom: VisionGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images [B, C, H, W] (H, W divisible by patch * merge) -> (pixel_values [B * gh * gw, C * T * p *
    p], image_grid_thw [B, 3]); each still image is repeated over the temporal patch."""
    b, c, h, w = images.shape
    p, m, t = geom.patch_size, geom.merge_size, geom.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"image size {h}x{w} must be divisible by patch_size * merge_size = {p * m}")
    gh, gw = h // p, w // p
    x = images.reshape(b, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (B, gh', gw', mh, mw, C, ph, pw)
    x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)  # (.., C, T, ph, pw)
    pixel_values = x.reshape(b * gh * gw, c * t * p * p)
    grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=images.device)
    return pixel_values, grid


def preprocess_pixels(pixels: torch.Tensor, geom: VisionGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels [B, 3, H, W] in [0, 1] -> (pixel_values, image_grid_thw), differentiable w.r.t. pixels.

    Resizing (when H, W are not already the target size) is bicubic with antialiasing in torch, which is close to
    but not bit-identical with PIL's bicubic resampling of the official processor.
    """
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be a float tensor [B, 3, H, W], got {getattr(pixels, 'shape', type(pixels))}")
    if not pixels.is_floating_point():
        raise TypeError(f"pixels must be floating point in [0, 1], got dtype {pixels.dtype}")
    _, _, h, w = pixels.shape
    th, tw = smart_resize(h, w, geom.factor, geom.min_pixels, geom.max_pixels)
    x = pixels
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(geom.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(geom.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return patchify((x - mean) / std, geom)
