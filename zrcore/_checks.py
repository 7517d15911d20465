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


def signature(*items) -> tuple:
    """What shape-only checks depend on: (shape, dtype, device) of each tensor, other arguments as they are."""
    return tuple((x.shape, x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in items)


class SignatureCache:
    """Results of the checks that read no tensor values, kept per argument signature (see ``signature``): a call
    with a signature seen before skips them. A failing check raises and is not kept."""

    def __init__(self, maxsize: int = 512):
        self._results: dict = {}
        self._maxsize = maxsize

    def get(self, key: tuple, check):
        hit = self._results.get(key)
        if hit is None:
            hit = check()
            if len(self._results) >= self._maxsize:
                self._results.clear()
            self._results[key] = hit
        return hit


_CHECKED_VALUES: dict = {}


def _values_checked(x: torch.Tensor, what: tuple) -> bool:
    """Whether tensor ``x`` passed the value check ``what`` and was not modified or replaced since."""
    hit = _CHECKED_VALUES.get((id(x), what))
    return hit is not None and hit[0]() is x and hit[1] == x._version


def _remember_checked(x: torch.Tensor, what: tuple) -> None:
    if len(_CHECKED_VALUES) > 256:
        _CHECKED_VALUES.clear()
    _CHECKED_VALUES[(id(x), what)] = (weakref.ref(x), x._version)


def index_vector(name: str, ids: torch.Tensor, upper: int, what: str, distinct: bool = False) -> None:
    """Range (and optionally distinctness) check of a small index vector; names the argument.

    Reading a tensor's values costs a host read (on an accelerator, a synchronisation), so a tensor that passed
    the check is remembered (by identity and version counter) and not read again until it is modified or
    replaced."""
    if torch.compiler.is_compiling() or ids.numel() == 0:  # reading values would break the trace
        return
    key = ("index", upper, distinct)
    if _values_checked(ids, key):
        return
    vals = ids.tolist()
    if min(vals) < 0 or max(vals) >= upper:
        raise ValueError(f"{name} must lie in [0, {upper}) ({what}), got values in [{min(vals)}, {max(vals)}]")
    if distinct and len(set(vals)) != len(vals):
        raise ValueError(f"{name} must hold distinct ids, got {vals}")
    _remember_checked(ids, key)


def finite_on_host(name: str, x: torch.Tensor) -> None:
    """All values finite, checked for CPU tensors only (on an accelerator it would synchronise) and once per
    tensor version (see ``index_vector``)."""
    if torch.compiler.is_compiling() or x.device.type != "cpu" or x.numel() == 0 or _values_checked(x, ("finite",)):
        return
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    _remember_checked(x, ("finite",))
