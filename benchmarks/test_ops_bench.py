"""pytest-benchmark runs of every op against the naive eager path, torch.compile of it, and liger-kernel where it
has a peer (fused_linear_kl). CPU runs time the torch paths, CUDA runs the Triton kernels.

    python -m pytest benchmarks --benchmark-enable            # acceptance shapes
    python -m pytest benchmarks --benchmark-enable --bench-scale small
"""

import pytest
import torch

from benchmarks.cases import MODES, PATHS
from benchmarks.harness import peak_memory_growth, sync

GRID = [(op, mode, path) for op, modes in MODES.items() for mode in modes for path in PATHS]


@pytest.mark.parametrize("op,mode,path", GRID, ids=[f"{o}-{m.replace(' ', '')}-{p}" for o, m, p in GRID])
def test_op(benchmark, cases, record, op, mode, path):
    case = cases(op)[mode]
    if path not in case.paths:
        pytest.skip(f"no {path} path for {op} on this machine (liger: fused_linear_kl on CUDA only)")
    fn = case.paths[path]

    def call():
        fn()
        sync()

    call()  # warm-up: compilation and autotuning stay out of the numbers
    peak = peak_memory_growth(call)
    if torch.cuda.is_available():
        inner = 20 if op == "pairwise_gap" else 3

        def many():
            for _ in range(inner):
                fn()
            sync()

        benchmark.pedantic(many, rounds=10, warmup_rounds=1)
        per_call = benchmark.stats.stats.median / inner
    else:
        benchmark.pedantic(call, rounds=3 if op != "pairwise_gap" else 10, warmup_rounds=0)
        per_call = benchmark.stats.stats.median
    benchmark.extra_info.update(peak_bytes=peak, per_call_s=per_call)
    record(op=op, shape=case.shape, mode=mode, path=path, time_s=per_call, peak_bytes=peak)
