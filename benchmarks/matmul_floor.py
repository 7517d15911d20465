"""fused_linear_kl against its matmul floor: the time of the four GEMMs a forward + backward cannot avoid (student
logits, teacher logits, dL/dh, dL/dW: 4 x 2 N H V flops) at the rate ``torch.mm`` reaches in the same process, at the
full shape and at the kernel's chunk shapes, beside the kernel's own time and peak memory growth.

    python benchmarks/matmul_floor.py                 # GPU: N=8192 H=4096 V=151,936 bf16; CPU: a small shape
    python benchmarks/matmul_floor.py --scale small   # toy shape, any device
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness import bench_device, median_time, peak_memory_growth
from benchmarks.results import Table, note
from zrcore.ops import fused_linear_kl
from zrcore.ops._dispatch import resolve_impl
from zrcore.ops.fused_linear_kl import default_chunk_rows, triton_chunk_rows

SHAPES = {"cuda": (8192, 4096, 151_936, torch.bfloat16), "cpu": (1024, 256, 32_768, torch.float32),
          "small": (256, 64, 4096, torch.float32)}


def gemm_seconds(m: int, k: int, n: int, dtype: torch.dtype, device: str, accumulate: bool = False) -> float:
    """Median time of one [m, k] @ [k, n] product (``accumulate``: added into an existing [m, n] output)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.zeros(m, n, device=device, dtype=dtype)
    if accumulate:
        return median_time(lambda: out.addmm_(a, b))
    return median_time(lambda: torch.mm(a, b, out=out))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["issue", "small"], default="issue")
    parser.add_argument("--chunks", default="auto,512,256", help="chunk rows to measure (auto: the op's default)")
    args = parser.parse_args(argv)
    device = bench_device()
    n, h, v, dtype = SHAPES["small" if args.scale == "small" else device]
    shape = f"N={n} H={h} V={v:,} {str(dtype).replace('torch.', '')}"
    flops = 2 * n * h * v
    full = gemm_seconds(n, h, v, dtype, device)
    note(f"\ntorch.mm [{n}, {h}] @ [{h}, {v}] ({shape}): {full * 1e3:.3f} ms, {flops / full / 1e12:.1f} TFLOP/s; "
         f"floor of the four GEMMs at that rate: {4 * full * 1e3:.3f} ms")
    g = torch.Generator(device=device).manual_seed(0)
    hs = torch.randn(n, h, generator=g, device=device).to(dtype)
    ws = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    ht = torch.randn(n, h, generator=g, device=device).to(dtype)
    wt = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    backend = resolve_impl("fused_linear_kl", "auto", dtype, hs)
    auto = (default_chunk_rows if backend == "torch" else triton_chunk_rows)(n, h, v)
    table = Table("shape", "backend", "chunk rows:", "GEMM TFLOP/s at the chunk shapes:", "chunk floor (ms):",
                  "full-size floor (ms):", "zrcore fwd+bwd (ms):", "zrcore / chunk floor:", "zrcore / full floor:",
                  "zrcore peak growth (MiB):")
    chunks_done = set()
    for spec in args.chunks.split(","):
        chunk = auto if spec == "auto" else min(n, int(spec))
        if chunk in chunks_done:
            continue
        chunks_done.add(chunk)
        per_chunk = (2 * gemm_seconds(chunk, h, v, dtype, device)  # student and teacher logits
                     + gemm_seconds(chunk, v, h, dtype, device)  # dL/dh = dz W
                     + gemm_seconds(v, chunk, h, dtype, device, accumulate=True))  # dL/dW += dz^T h
        chunks = -(-n // chunk)
        floor = chunks * per_chunk
        rate = 4 * 2 * chunk * h * v / per_chunk

        def step(chunk=chunk):
            a, b = hs.detach().requires_grad_(), ws.detach().requires_grad_()
            fused_linear_kl(a, b, ht, teacher_weight=wt, chunk_size=chunk).backward()

        seconds = median_time(step)
        peak = peak_memory_growth(step)
        label = f"{chunk} (auto)" if spec == "auto" else str(chunk)
        table.row(shape, backend, label, f"{rate / 1e12:.1f}", f"{floor * 1e3:.3f}", f"{4 * full * 1e3:.3f}",
                  f"{seconds * 1e3:.3f}", f"{seconds / floor:.2f}x", f"{seconds / (4 * full):.2f}x",
                  f"{peak / 2**20:.1f}")


if __name__ == "__main__":
    main()
