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


_TICKETS: dict = {}


def _current_stream_handle(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    try:
        return torch._C._cuda_getCurrentRawStream(device.index)
    except AttributeError:  # pragma: no cover - older torch
        return torch.cuda.current_stream(device).cuda_stream


def ticket_counters(device: torch.device, n: int) -> torch.Tensor:
    """At least ``n`` int32 counters, all zero, for kernels whose last-finishing program does a final reduction
    (an atomic ticket per group of programs). A kernel leaves every counter it used at zero again, so no fill is
    launched per call; one set per device and stream, since launches on one stream run one after another."""
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must share one set
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, _current_stream_handle(device))
    counters = _TICKETS.get(key)
    if counters is None or counters.numel() < n:
        counters = _TICKETS[key] = torch.zeros(max(n, 64), dtype=torch.int32, device=device)
    return counters
