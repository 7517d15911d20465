"""Device time without host overhead: each path's forward(+backward) captured in a CUDA graph and timed by replay
(triton.testing.do_bench, median). Eager timings of small ops are bound by Python and launch overhead; replaying
a graph removes it for every path alike, so the ratios compare the device work. Without CUDA (``--scale small`` on
a CPU, the suite's smoke run) the same table times the eager calls, marked "cpu wall".

    python benchmarks/graph_replay.py                 # on a GPU, at the RESULTS shapes
    python benchmarks/graph_replay.py --scale small   # toy shapes, any device
"""

import argparse

import torch

from benchmarks.cases import MODES, build
from benchmarks.harness import bench_device, median_time
from benchmarks.results import Table


def graph_time_ms(fn) -> float:
    import triton.testing

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return triton.testing.do_bench(graph.replay, warmup=25, rep=200, return_mode="median")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["issue", "small"], default="issue")
    args = parser.parse_args(argv)
    device = bench_device()
    timing = "graph replay" if device == "cuda" else "cpu wall"
    table = Table("op", "shape", "mode", "path", f"{timing} (us):", "ratio naive/path:")
    for op in ("score_distribution", "pairwise_gap"):
        cases = build(op, device, args.scale)
        for mode in MODES[op]:
            case = cases[mode]
            base = None
            for path in ("naive", "zrcore"):
                try:
                    ms = graph_time_ms(case.paths[path]) if device == "cuda" else median_time(case.paths[path]) * 1e3
                except Exception as err:  # report, do not hide
                    table.row(op, case.shape, mode, path, f"failed: {type(err).__name__}: {err}"[:200], "-")
                    continue
                base = ms if path == "naive" else base
                table.row(op, case.shape, mode, path, f"{ms * 1e3:.1f}", f"{base / ms:.1f}x" if base else "-")
        del cases
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
