"""Host (Python) time per eager call of the Triton-backed ops, on CPU, with the launch cost taken out.

Every Triton launch is replaced by a stub that only counts it (the kernels' outputs stay uninitialised), so the
time left per fwd+bwd call is the Python work of zrcore's wrappers and of autograd: argument checks, dispatch,
allocation, launch planning. What a GPU adds on top is the launches themselves (counted here, per call) and
Triton's launcher; the device time is separate (benchmarks/test_ops_bench.py). The same call through the
registered op (the path torch.compile traces, called eagerly) is timed beside the eager fast path, and a bare
autograd.Function with one empty output is the floor.

    TRITON_INTERPRET=1 python -m benchmarks.tools.host_time [--label after] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from zrcore.ops import pairwise_gap, score_distribution  # noqa: E402

LAUNCHES = [0]


def _stub_run(self, *args, grid, warmup, **kwargs):
    LAUNCHES[0] += 1


class _Floor(torch.autograd.Function):
    """Python autograd's own cost: one output allocated, the gradient passed through."""

    @staticmethod
    def forward(ctx, x):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _cases():
    """Each case: a forward with gradients and a backward fed with fixed output gradients (no extra ops)."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(512, 64, generator=g)
    weight = torch.randn(256, 64, generator=g) / 8
    ids = torch.arange(10, 19)
    values = torch.linspace(1.0, 5.0, 9)
    g_logq, g_row = torch.randn(512, 9, generator=g), torch.randn(512, generator=g)
    mean = 1 + 4 * torch.rand(64, 4, 16, generator=g)
    scores = 1 + 0.5 * torch.randint(0, 9, (64, 4), generator=g).float()
    one = torch.ones(())

    def score_eager():
        out = score_distribution(hidden.detach().requires_grad_(), weight, ids, values, impl="triton")
        torch.autograd.backward((out.log_probs, out.mean, out.var), (g_logq, g_row, g_row))

    def score_registered():
        outs = torch.ops.zrcore.score_distribution(hidden.detach().requires_grad_(), weight, ids, values, None, 1.0)
        torch.autograd.backward(outs, (g_logq, g_row, g_row))

    def score_forward():
        with torch.no_grad():
            score_distribution(hidden, weight, ids, values, impl="triton")

    def pairwise_eager():
        torch.autograd.backward(pairwise_gap(mean.detach().requires_grad_(), scores, score_range=4.0,
                                             impl="triton").loss, one)

    def floor():
        torch.autograd.backward(_Floor.apply(hidden.detach().requires_grad_()), hidden)

    return [("score_distribution fwd+bwd, eager (N=512, K=9)", score_eager),
            ("score_distribution fwd+bwd, registered op", score_registered),
            ("score_distribution fwd only, eager, no grad", score_forward),
            ("pairwise_gap fwd+bwd, eager (P=64, M=4, G=16)", pairwise_eager),
            ("floor: autograd.Function with one output, fwd+bwd", floor)]


def measure(cases, repeats: int, calls: int = 200) -> list[tuple[str, float, float]]:
    """Per case: (name, fastest round's microseconds per call, launches per call). Rounds go round-robin over the
    cases with the garbage collector off, so that drift on the machine touches every case alike; the fastest round
    is the least disturbed one."""
    for _, fn in cases:
        for _ in range(100):
            fn()
    best = {name: float("inf") for name, _ in cases}
    launches = dict.fromkeys(best, 0)
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in cases:
                LAUNCHES[0] = 0
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / calls * 1e6)
                launches[name] = LAUNCHES[0] / calls
    finally:
        gc.enable()
    return [(name, best[name], launches[name]) for name, _ in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    InterpretedFunction.run = _stub_run
    print(f"| case {args.label} | host us / call | launches / call |")
    print("|---|---|---|")
    for name, us, launches in measure(_cases(), args.repeats):
        print(f"| {name} | {us:.1f} | {launches:g} |")


if __name__ == "__main__":
    main()
