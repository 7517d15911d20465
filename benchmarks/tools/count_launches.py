"""Counts the GPU kernel launches with torch.profiler: score_distribution (forward, backward) at the GPU shape
N=512, H=5120, V=248,320, K=9, bf16, for gradients to the hidden states alone and to hidden + LM-head weight; and
pairwise_gap (forward, backward) at P=1024, M=4, G=16 with a mask."""

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.cases import score_inputs
from zrcore.ops import pairwise_gap, score_distribution


def _kernels(fn) -> list[str]:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    for e in events:
        print(f"    {e.name[:70]:70s} {e.device_time:9.1f} us")
    return [e.name[:40] for e in events]


def main() -> None:
    dev = "cuda"
    hidden, weight, ids, values = score_inputs(dev, torch.bfloat16)
    for grad_w in (False, True):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_(grad_w)
        for _ in range(2):  # warm-up (Triton compilation), then the profiled call
            fwd = _kernels(lambda h=h, w=w: score_distribution(h, w, ids, values))
        out = score_distribution(h, w, ids, values)
        loss = out.mean.sum() + out.var.sum() + out.log_probs.sum()
        bwd = _kernels(loss.backward)
        what = "hidden+weight" if grad_w else "hidden"
        import triton.testing

        def step(h=h, w=w):
            o = score_distribution(h, w, ids, values)
            (o.mean.sum() + o.var.sum() + o.log_probs.sum()).backward()

        fwd_ms = triton.testing.do_bench(lambda h=h, w=w: score_distribution(h, w, ids, values), return_mode="median")
        step_ms = triton.testing.do_bench(step, return_mode="median")
        print(f"grad to {what}: do_bench median forward {fwd_ms * 1e3:.1f} us, forward+backward {step_ms * 1e3:.1f} us")
        print(f"grad to {what}: forward launches {len(fwd)} {fwd}")
        print(f"grad to {what}: backward launches {len(bwd)} {bwd}")
    mean = 1 + 4 * torch.rand(1024, 4, 16, device=dev)
    scores = 1 + 0.5 * torch.randint(0, 9, (1024, 4), device=dev).float()
    mask = torch.rand(1024, 4, 16, device=dev) > 0.1
    x = mean.clone().requires_grad_()
    for _ in range(2):
        fwd = _kernels(lambda: pairwise_gap(x, scores, score_range=4.0, mask=mask))
    loss = pairwise_gap(x, scores, score_range=4.0, mask=mask).loss
    bwd = _kernels(loss.backward)
    print(f"pairwise_gap: forward launches {len(fwd)} {fwd}")
    print(f"pairwise_gap: backward launches {len(bwd)} {bwd}")


if __name__ == "__main__":
    main()
