"""Benchmark cases: for each op, the paths to compare (naive eager, torch.compile of it, zrcore, liger), each a
callable doing forward (+ backward). The naive paths are the test references (tests/reference.py)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from tests.reference import kl_materialised, pairwise_gap_materialised, score_distribution_naive
from zrcore import ScoreBins
from zrcore.ops import fused_linear_kl, pairwise_gap, score_distribution


@dataclass
class Case:
    op: str
    shape: str
    mode: str  # "fwd" or "fwd+bwd" (with what gets gradients)
    paths: dict = field(default_factory=dict)  # path name -> callable


def _compiled(fn):
    return torch.compile(fn, dynamic=False)


def _leaf(t: torch.Tensor, grad: bool) -> torch.Tensor:
    return t.detach().requires_grad_(grad)


def score_inputs(device: str, dtype: torch.dtype, n: int = 512, h: int = 5120, v: int = 248_320, k: int = 9):
    """(hidden [N, H], LM-head weight [V, H], token_ids [K], values [K]); the default is the GPU target shape."""
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(n, h, generator=g, device=device).to(dtype)
    weight = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    ids = torch.randperm(v, generator=torch.Generator().manual_seed(0))[:k].to(device)
    values = ScoreBins.half_points().values.to(device) if k == 9 else torch.linspace(1, 5, k, device=device)
    return hidden, weight, ids, values


def score_distribution_cases(device: str, dtype: torch.dtype, n: int, h: int, v: int, k: int = 9) -> list[Case]:
    hidden, weight, ids, values = score_inputs(device, dtype, n, h, v, k)
    shape = f"N={n} H={h} V={v:,} K={k} {str(dtype).replace('torch.', '')}"

    def naive(hh, ww):
        return score_distribution_naive(hh, ww, ids, values.to(dtype))

    def fused(hh, ww):
        return tuple(score_distribution(hh, ww, ids, values))

    compiled_naive = _compiled(naive)
    cases = []
    for mode, grad_w in (("fwd", None), ("fwd+bwd: hidden", False), ("fwd+bwd: hidden+weight", True)):
        def make(fn, grad_w=grad_w):
            def run():
                if grad_w is None:
                    with torch.no_grad():
                        return fn(hidden, weight)
                hh, ww = _leaf(hidden, True), _leaf(weight, grad_w)
                out = fn(hh, ww)
                (out[1].float().sum() + out[2].float().sum() + out[0].float().sum()).backward()
                return hh.grad
            return run
        cases.append(Case("score_distribution", shape, mode,
                          {"naive": make(naive), "compile": make(compiled_naive), "zrcore": make(fused)}))
    return cases


def pairwise_gap_cases(device: str, p: int, m: int, g_: int) -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    mean = (1 + 4 * torch.rand(p, m, g_, generator=gen)).to(device)
    scores = (1 + 0.5 * torch.randint(0, 9, (p, m), generator=gen)).float().to(device)
    mask = (torch.rand(p, m, g_, generator=gen) > 0.1).to(device)
    shape = f"P={p} M={m} G={g_} fp32 masked"

    def naive(x):
        return pairwise_gap_materialised(x, scores, 4.0, mask, False)

    def fused(x):
        return pairwise_gap(x, scores, score_range=4.0, mask=mask)

    compiled_naive = _compiled(naive)
    cases = []
    for mode in ("fwd", "fwd+bwd"):
        def make(fn, mode=mode):
            def run():
                if mode == "fwd":
                    with torch.no_grad():
                        return fn(mean)
                x = _leaf(mean, True)
                fn(x).loss.backward()
                return x.grad
            return run
        cases.append(Case("pairwise_gap", shape, mode,
                          {"naive": make(naive), "compile": make(compiled_naive), "zrcore": make(fused)}))
    return cases


def fused_linear_kl_cases(device: str, dtype: torch.dtype, n: int, h: int, v: int, liger: bool) -> list[Case]:
    g = torch.Generator(device=device).manual_seed(0)
    hs = torch.randn(n, h, generator=g, device=device).to(dtype)
    ws = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    ht = torch.randn(n, h, generator=g, device=device).to(dtype)
    wt = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    shape = f"N={n} H={h} V={v:,} {str(dtype).replace('torch.', '')}"
    cases = []
    for direction in ("forward", "reverse"):
        naive = functools.partial(kl_materialised, direction=direction)
        fused = lambda a, b, c, d, direction=direction: fused_linear_kl(a, b, c, teacher_weight=d, direction=direction)
        paths = {"naive": naive, "compile": _compiled(naive), "zrcore": fused}
        if liger:
            from liger_kernel.transformers import LigerFusedLinearJSD

            jsd = LigerFusedLinearJSD(jsd_beta=0.0 if direction == "forward" else 1.0)
            paths["liger"] = lambda a, b, c, d, jsd=jsd: jsd(a, b, c, d, None)

        def make(fn):
            def run():
                a, b = _leaf(hs, True), _leaf(ws, True)
                fn(a, b, ht, wt).backward()
                return a.grad
            return run
        cases.append(Case("fused_linear_kl", shape + f" {direction} KL", "fwd+bwd: hidden+weight",
                          {name: make(fn) for name, fn in paths.items()}))
    return cases


def token_logprobs_cases(device: str, dtype: torch.dtype, n: int, h: int, v: int, liger: bool) -> list[Case]:
    """Selected-token log-probs log softmax(W h)[y] of N rows (the policy loss's input): the full-vocabulary
    log-softmax (naive), its compile, zrcore's own path (``impl="torch"``: the chunked recompute, which ``auto``
    falls back to where liger-kernel is missing) and liger-kernel (``impl="triton"``, what ``auto`` runs on CUDA)."""
    from zrcore.ops.token_logprobs import token_logprobs

    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(n, h, generator=g, device=device).to(dtype)
    weight = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g, device=device)

    def naive(hh, ww):
        return torch.log_softmax((hh @ ww.t()).float(), -1).gather(-1, targets[:, None]).squeeze(-1)

    paths = {"naive": naive, "compile": _compiled(naive),
             "zrcore": lambda hh, ww: token_logprobs(hh, ww, targets, impl="torch")}
    if liger:
        paths["liger"] = lambda hh, ww: token_logprobs(hh, ww, targets, impl="triton")

    def make(fn):
        def run():
            hh, ww = _leaf(hidden, True), _leaf(weight, True)
            fn(hh, ww).sum().backward()
            return hh.grad
        return run
    shape = f"N={n} H={h} V={v:,} {str(dtype).replace('torch.', '')}"
    return [Case("token_logprobs", shape, "fwd+bwd: hidden+weight", {k: make(f) for k, f in paths.items()})]


MODES = {
    "score_distribution": ["fwd", "fwd+bwd: hidden", "fwd+bwd: hidden+weight"],
    "pairwise_gap": ["fwd", "fwd+bwd"],
    "fused_linear_kl": ["fwd+bwd: forward KL", "fwd+bwd: reverse KL"],
    "token_logprobs": ["fwd+bwd: hidden+weight"],
}
PATHS = ["naive", "compile", "zrcore", "liger"]


def has_liger() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build(op: str, device: str, scale: str = "issue") -> dict[str, Case]:
    """The cases of one op, keyed by mode. scale="issue": the acceptance shapes (CPU shapes on CPU, GPU shapes on
    CUDA); scale="small": a quick smoke run."""
    cuda = device == "cuda"
    small = scale == "small"
    if op == "score_distribution":
        if cuda:
            cases = score_distribution_cases(device, torch.bfloat16, 512, 5120, 248_320)
        elif small:
            cases = score_distribution_cases(device, torch.float32, 16, 64, 4096)
        else:
            cases = score_distribution_cases(device, torch.float32, 256, 1024, 151_936)
    elif op == "pairwise_gap":
        cases = pairwise_gap_cases(device, 16, 4, 8) if small else pairwise_gap_cases(device, 1024, 4, 16)
    elif op in ("fused_linear_kl", "token_logprobs"):  # the same (N, H, V) shapes: GPU target, CPU, smoke
        make = fused_linear_kl_cases if op == "fused_linear_kl" else token_logprobs_cases
        if cuda:
            cases = make(device, torch.bfloat16, 8192, 4096, 151_936, has_liger())
        else:
            cases = make(device, torch.float32, *((64, 32, 1024) if small else (2048, 256, 32_768)), False)
    else:
        raise ValueError(f"unknown op {op!r}")
    if op == "fused_linear_kl":
        for c in cases:
            c.mode = "fwd+bwd: " + c.shape.rsplit(" ", 2)[-2] + " KL"
            c.shape = c.shape.rsplit(" ", 3)[0]
    return {c.mode: c for c in cases}
