"""GPU time without host overhead: each path's forward+backward captured in a CUDA graph and timed by replay
(triton.testing.do_bench, median). Eager timings of small ops are bound by Python and launch overhead; replaying
a graph removes it for every path alike, so the ratios compare the device work."""

import torch
import triton.testing

from benchmarks.cases import build


def graph_time_ms(fn) -> float:
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


def main() -> None:
    rows = []
    for op, modes in (("score_distribution", ["fwd", "fwd+bwd: hidden", "fwd+bwd: hidden+weight"]),
                      ("pairwise_gap", ["fwd", "fwd+bwd"])):
        cases = build(op, "cuda")
        for mode in modes:
            case = cases[mode]
            base = None
            for path in ("naive", "zrcore"):
                try:
                    ms = graph_time_ms(case.paths[path])
                except Exception as err:  # report, do not hide
                    print(f"{op} {mode} {path}: graph capture failed: {type(err).__name__}: {err}"[:300])
                    continue
                base = ms if path == "naive" else base
                ratio = f"{base / ms:.1f}x" if base else "-"
                rows.append(f"| {op} | {case.shape} | {mode} | {path} | {ms * 1e3:.1f} | {ratio} |")
        del cases
        torch.cuda.empty_cache()
    print("| op | shape | mode | path | graph replay (us) | ratio naive/path |")
    print("|---|---|---|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
