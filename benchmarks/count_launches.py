"""Counts the GPU kernel launches of score_distribution (forward, backward) with torch.profiler at the GPU shape
N=512, H=5120, V=248,320, K=9, bf16, for gradients to the hidden states alone and to hidden + LM-head weight."""

import torch
from torch.profiler import ProfilerActivity, profile

from zrcore import ScoreBins
from zrcore.ops import score_distribution


def _kernels(fn) -> list[str]:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(512, 5120, generator=g, device=dev).to(torch.bfloat16)
    weight = (torch.randn(248_320, 5120, generator=g, device=dev) / 70).to(torch.bfloat16)
    ids = torch.randperm(248_320)[:9].to(dev)
    values = ScoreBins.half_points().values.to(dev)
    for grad_w in (False, True):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_(grad_w)
        for _ in range(2):  # warm-up (Triton compilation), then the profiled call
            fwd = _kernels(lambda h=h, w=w: score_distribution(h, w, ids, values))
        out = score_distribution(h, w, ids, values)
        loss = out.mean.sum() + out.var.sum() + out.log_probs.sum()
        bwd = _kernels(loss.backward)
        what = "hidden+weight" if grad_w else "hidden"
        print(f"grad to {what}: forward launches {len(fwd)} {fwd}")
        print(f"grad to {what}: backward launches {len(bwd)} {bwd}")


if __name__ == "__main__":
    main()
