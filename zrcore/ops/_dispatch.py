"""Choice between the Triton kernels and the torch reference paths (``impl="auto" | "triton" | "torch"``)."""

from __future__ import annotations

import os

import torch

try:  # Triton is a Linux dependency; elsewhere only the torch paths exist
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # pragma: no cover
    triton = tl = None
    HAS_TRITON = False

IMPLS = ("auto", "triton", "torch")


def triton_available() -> bool:
    return HAS_TRITON


def interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor | None) -> str:
    """``auto``: Triton for CUDA tensors (when Triton imports), torch otherwise. ``triton`` on CPU tensors needs
    ``TRITON_INTERPRET=1`` (set before Triton is first imported)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if impl == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' needs the triton package, which failed to import")
        if not on_cuda and not interpret_mode():
            raise RuntimeError("impl='triton' on CPU tensors needs TRITON_INTERPRET=1 in the environment")
    return impl

