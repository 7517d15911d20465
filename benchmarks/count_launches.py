"""Counts the GPU kernel launches of score_distribution (forward, backward) with torch.profiler at the GPU shape
N=512, H=5120, V=248,320, K=9, bf16, for gradients to the hidden states alone and to hidden + LM-head weight."""

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.cases import score_inputs
from zrcore.ops import score_distribution


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


if __name__ == "__main__":
    main()
