"""Tries launch configurations of the score_distribution kernels on a GPU at N=512, H=5120, V=248,320, K=9, bf16:
CUDA-graph replay time of forward and forward+backward (grad to hidden), and the error against the float64
full-logits reference, for each configuration (split_h: programs per row block along the hidden dimension)."""

import itertools
import os

import torch

from benchmarks.cases import score_inputs
from benchmarks.graph_replay import graph_time_ms
from tests.reference import score_distribution_naive
from zrcore.ops import score_distribution
from zrcore.ops.score_distribution import LAUNCH


def _config(text: str) -> tuple:
    fields = text.split("x")
    split = fields[4] if len(fields) > 4 else "auto"
    return (*(int(x) for x in fields[:4]), split if split == "auto" else int(split))


def main() -> None:
    dev = "cuda"
    hidden, weight, ids, values = score_inputs(dev, torch.bfloat16)
    ref = score_distribution_naive(hidden.double(), weight[ids].double(), torch.arange(9, device=dev), values.double())
    h_ref = hidden.double().requires_grad_()
    r = score_distribution_naive(h_ref, weight[ids].double(), torch.arange(9, device=dev), values.double())
    (r[1].sum() + r[2].sum() + r[0].sum()).backward()

    def fwd():
        return score_distribution(hidden, weight, ids, values)

    def step():
        h = hidden.detach().requires_grad_()
        o = score_distribution(h, weight, ids, values)
        (o.mean.sum() + o.var.sum() + o.log_probs.sum()).backward()
        return h.grad

    print("| block_n | block_h | warps | stages | split_h | fwd (us) | fwd+bwd (us) | rel. err mean | rel. err grad |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    # e.g. "16x256x4x3x1,16x512x4x4xauto": block_n x block_h x warps x stages [x split_h, default auto]
    spec = os.environ.get("ZRCORE_TUNE")
    configs = ([_config(c) for c in spec.split(",")] if spec
               else [(*c, "auto") for c in itertools.product((16, 32), (64, 128, 256), (4, 8), (2, 3))])
    for bn, bh, nw, ns, split in configs:
        LAUNCH.update(block_n=bn, block_h=bh, num_warps=nw, num_stages=ns, split_h=split)
        try:
            out = fwd()
            err = float((out.mean.double() - ref[1]).norm() / ref[1].norm())
            gerr = float((step().double() - h_ref.grad).norm() / h_ref.grad.norm())
            t_f = graph_time_ms(fwd) * 1e3
            t_s = graph_time_ms(step) * 1e3
            print(f"| {bn} | {bh} | {nw} | {ns} | {split} | {t_f:.1f} | {t_s:.1f} | {err:.1e} | {gerr:.1e} |")
        except Exception as e:
            print(f"| {bn} | {bh} | {nw} | {ns} | {split} | failed: {type(e).__name__} {str(e)[:80]} |")


if __name__ == "__main__":
    main()
