"""Host-side (Python) profile of repeated forward+backward calls on CUDA: where the time outside kernels goes."""

import cProfile
import pstats
import time

import torch

from benchmarks.cases import score_inputs
from zrcore.ops import pairwise_gap, score_distribution


def main() -> None:
    dev = "cuda"
    hidden, weight, ids, values = score_inputs(dev, torch.bfloat16)
    mean = 1 + 4 * torch.rand(1024, 4, 16, device=dev)
    scores = (1 + 0.5 * torch.randint(0, 9, (1024, 4), device=dev)).float()

    def score_step():
        h = hidden.detach().requires_grad_()
        o = score_distribution(h, weight, ids, values)
        (o.mean.sum() + o.var.sum() + o.log_probs.sum()).backward()

    def pair_step():
        x = mean.detach().requires_grad_()
        pairwise_gap(x, scores, score_range=4.0).loss.backward()

    for name, step in (("score_distribution fwd+bwd (hidden)", score_step), ("pairwise_gap fwd+bwd", pair_step)):
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            step()
        torch.cuda.synchronize()
        print(f"{name}: {(time.perf_counter() - t0) / 50 * 1e6:.1f} us per step (wall, 50 steps)")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            step()
        torch.cuda.synchronize()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
