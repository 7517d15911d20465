"""Argument validation shared by every public function: errors name the offending argument."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch


def tensor(name: str, x, *, ndim: int | Sequence[int] | None = None, floating: bool | None = None) -> torch.Tensor:
    """Check that ``x`` is a tensor (optionally of given rank / floating kind) and return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be an integer or bool tensor, got dtype {x.dtype}")
    return x


def shape(name: str, x: torch.Tensor, expected: Sequence[int], what: str = "") -> None:
    if tuple(x.shape) != tuple(expected):
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{extra}, got {tuple(x.shape)}")


def same_device(**tensors: torch.Tensor | None) -> None:
    items = [(k, v) for k, v in tensors.items() if v is not None]
    if not items:
        return
    ref_name, ref = items[0]
    for name, t in items[1:]:
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move them to one device")


def bool_mask(name: str, mask: torch.Tensor | None, expected_shape: Sequence[int]) -> torch.Tensor | None:
    if mask is None:
        return None
    tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    shape(name, mask, expected_shape)
    return mask


def choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


_CHECKED_INDEX: dict = {}


def index_vector(name: str, ids: torch.Tensor, upper: int, what: str, distinct: bool = False) -> None:
    """Range (and optionally distinctness) check of a small index vector; names the argument.

    Reading a CUDA tensor's values synchronises with the device, so an accelerator tensor that passed the check
    is remembered (by identity and version counter) and not read again until it is modified or replaced."""
    if torch.compiler.is_compiling() or ids.numel() == 0:  # reading values would break the trace
        return
    key = None
    if ids.device.type != "cpu":
        key = (id(ids), upper, distinct)
        hit = _CHECKED_INDEX.get(key)
        if hit is not None and hit[0]() is ids and hit[1] == ids._version:
            return
    vals = ids.tolist()
    if min(vals) < 0 or max(vals) >= upper:
        raise ValueError(f"{name} must lie in [0, {upper}) ({what}), got values in [{min(vals)}, {max(vals)}]")
    if distinct and len(set(vals)) != len(vals):
        raise ValueError(f"{name} must hold distinct ids, got {vals}")
    if key is not None:
        if len(_CHECKED_INDEX) > 256:
            _CHECKED_INDEX.clear()
        _CHECKED_INDEX[key] = (weakref.ref(ids), ids._version)
