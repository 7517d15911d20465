"""Peak resident-set growth of one forward + backward in a fresh process with glibc's default malloc (nothing
tuned), for the chunked CPU paths against the materialised ones:

    python benchmarks/tools/chunk_memory.py                 # fused_linear_kl and token_logprobs, the CPU shapes

fused_linear_kl: N=2048, H=256, V=32,768 fp32, teacher as hidden + weight, forward KL (zrcore's torch path against
the [N, V] materialised path of tests/reference.py). token_logprobs: the same N, H, V, log softmax(W h)[y] of every
row (zrcore's chunked recompute against the full-vocabulary log-softmax). Each (op, path) runs in its own process:
growth = VmHWM after the call - VmRSS before it; time = the median of 3 further calls.
"""

from __future__ import annotations

import json
import subprocess
import sys

N, H, V = 2048, 256, 32_768

CHILD = r"""
import json, statistics, sys, time
import torch
torch.manual_seed(0)
op, path = sys.argv[1], sys.argv[2]
N, H, V = {n}, {h}, {v}
hs, ws = torch.randn(N, H), torch.randn(V, H) / H**0.5
if op == "fused_linear_kl":
    from tests.reference import kl_materialised
    from zrcore.ops import fused_linear_kl
    ht, wt = torch.randn(N, H), torch.randn(V, H) / H**0.5
    fn = (lambda a, b: fused_linear_kl(a, b, ht, teacher_weight=wt, impl="torch")) if path == "zrcore" else \
         (lambda a, b: kl_materialised(a, b, ht, wt, direction="forward"))
else:
    from zrcore.ops.token_logprobs import token_logprobs
    y = torch.randint(0, V, (N,))
    fn = (lambda a, b: token_logprobs(a, b, y, impl="torch").sum()) if path == "zrcore" else \
         (lambda a, b: torch.log_softmax(a @ b.t(), -1).gather(-1, y[:, None]).sum())
def run():
    a, b = hs.detach().requires_grad_(), ws.detach().requires_grad_()
    fn(a, b).backward()
    return a.grad, b.grad
def field(name):
    for line in open("/proc/self/status"):
        if line.startswith(name):
            return int(line.split()[1]) * 1024
before = field("VmRSS")
run()
growth = field("VmHWM") - before
times = []
for _ in range(3):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps({{"growth": growth, "time": statistics.median(times)}}))
"""


def measure(op: str, path: str) -> dict:
    code = CHILD.format(n=N, h=H, v=V)
    out = subprocess.run([sys.executable, "-c", code, op, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"N={N} H={H} V={V:,} fp32, fwd+bwd (hidden + weight), fresh process per row, default malloc")
    print("| op | path | peak growth (MB) | time (ms) | memory ratio materialised/zrcore | time ratio zrcore/materialised |")
    print("|---|---|---:|---:|---:|---:|")
    for op in ("fused_linear_kl", "token_logprobs"):
        naive, fused = measure(op, "materialised"), measure(op, "zrcore")
        for path, r in (("materialised", naive), ("zrcore", fused)):
            mem = f"{naive['growth'] / fused['growth']:.1f}x" if path == "zrcore" else ""
            tim = f"{fused['time'] / naive['time']:.2f}x" if path == "zrcore" else ""
            print(f"| {op} | {path} | {r['growth'] / 1e6:.0f} | {r['time'] * 1e3:.1f} | {mem} | {tim} |")


if __name__ == "__main__":
    main()
