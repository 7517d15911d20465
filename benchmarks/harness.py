"""Measurement helpers shared by the benchmarks: device choice, peak-memory growth, timing per call."""

from __future__ import annotations

import gc
import os
import statistics
import time

import torch

# Smallest CPU peak the resident-set measurement resolves (allocations below it come from the reused heap).
CPU_MEMORY_RESOLUTION = 64 * 1024


def _mmap_threshold(nbytes: int) -> None:
    """glibc's M_MMAP_THRESHOLD: allocations of at least nbytes are served by mmap and returned on free. A small
    threshold while measuring makes the resident-set high-water mark follow the tensors' own peak (otherwise freed
    heap memory is reused without growing the resident set); a large one while timing avoids page-fault costs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)
    except (OSError, AttributeError):  # not glibc: keep the default allocator behaviour
        pass


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


if not torch.cuda.is_available():
    _mmap_threshold(32 * 2**20)


def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory_growth(fn) -> int:
    """Bytes by which one call of fn raises the peak above what was allocated before it.

    CUDA: torch.cuda.max_memory_allocated over the call minus memory_allocated before. CPU (Linux): the process's
    resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) minus the resident set before.
    """
    gc.collect()
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - before
    _mmap_threshold(CPU_MEMORY_RESOLUTION)
    try:
        fn()  # once more, so that the new threshold's allocation pattern is in place
        gc.collect()
        _malloc_trim()  # free heap memory would otherwise be reused without raising the resident set
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _rss_kib("VmRSS")
        fn()
        return max(0, (_rss_kib("VmHWM") - before) * 1024)
    finally:
        _mmap_threshold(32 * 2**20)


def tensor_peak_growth(fn) -> int:
    """Bytes by which one call of fn raises the peak of live tensor allocations above what was allocated before it.

    CUDA: the same as peak_memory_growth (the caching allocator counts tensor bytes). CPU: replays the allocation
    and free events of torch's CPU allocator recorded by the profiler during the call, so that heap fragmentation
    and allocator caching (which the resident set includes) do not blur small differences.
    """
    if torch.cuda.is_available():
        return peak_memory_growth(fn)
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def median_time(fn, *, warmup: int = 1, repeats: int = 5) -> float:
    """Median wall time of one call in seconds (CUDA: synchronised; do_bench's median when Triton is there)."""
    if torch.cuda.is_available():
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def env_info() -> dict:
    info = {"torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["cpu_count"] = os.cpu_count()
    return info
