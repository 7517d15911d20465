"""Score distribution: softmax over the K score-token rows of the LM head, with its mean and variance.

    z = (W_S h + b_S) / T          W_S = weight[token_ids]  ([K, H]),  never the full [N, V] logits
    q = softmax(z),  mu = sum_k s_k q_k,  var = sum_k (s_k - mu)^2 q_k

Backward (per row, g_l = d log_q, g_mu = d mu, g_var = d var):
    d q_k   = g_mu s_k + g_var (s_k - mu)^2                       (mu's own dependence cancels: sum_k (s_k - mu) q_k = 0)
    d z_k   = [g_l_k - q_k sum_j g_l_j] / T + q_k (d q_k - sum_j q_j d q_j) / T
    d h     = d z W_S,   d W_S = d z^T h,   d b_S = sum_n d z
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from zrcore import _checks
from zrcore.bins import ScoreBins, ScoreDistribution
from zrcore.ops._dispatch import (
    HAS_TRITON,
    define_backward_op,
    define_op,
    is_tracing,
    resolve_impl,
    ticket_counters,
    tl,
    triton,
    workspace,
)


def _as_values(values, device) -> torch.Tensor:
    if isinstance(values, ScoreBins):
        values = values.values
    v = torch.as_tensor(values)
    if not v.is_floating_point():
        v = v.float()
    return v.to(device)


def validate_score_inputs(hidden, weight, token_ids, values, bias, temperature):
    """Shared argument checks; returns (values tensor on hidden's device, K)."""
    _checks.tensor("hidden", hidden, floating=True)
    if hidden.dim() < 1:
        raise ValueError(f"hidden must have at least 1 dimension [..., H], got shape {tuple(hidden.shape)}")
    _checks.tensor("weight", weight, ndim=2, floating=True)
    v = _as_values(values, hidden.device)
    _checks.tensor("values", v, ndim=1, floating=True)
    k = v.shape[0]
    if k == 0:
        raise ValueError("values must hold at least one bin")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden's last dimension ({hidden.shape[-1]}) must equal weight's columns ({weight.shape[1]})")
    if token_ids is None:
        if weight.shape[0] != k:
            raise ValueError(
                f"with token_ids=None, weight must hold exactly the K={k} score rows, got {weight.shape[0]} rows"
            )
        rows = k
    else:
        _checks.tensor("token_ids", token_ids, ndim=1, floating=False)
        if token_ids.shape[0] != k:
            raise ValueError(f"token_ids has {token_ids.shape[0]} entries but values has K={k}")
        _checks.index_vector("token_ids", token_ids, weight.shape[0], "rows of weight", distinct=True)
        rows = weight.shape[0]
    if bias is not None:
        _checks.tensor("bias", bias, ndim=1, floating=True)
        if bias.shape[0] != rows:
            raise ValueError(f"bias must have {rows} entries (one per row of weight), got {bias.shape[0]}")
    _checks.positive("temperature", temperature)
    _checks.same_device(hidden=hidden, weight=weight, token_ids=token_ids, bias=bias)
    if k > 32:
        raise ValueError(f"at most 32 score bins are supported, got K={k}")
    return v, k


def _validate(hidden, weight, token_ids, values, bias, temperature, impl) -> str:
    validate_score_inputs(hidden, weight, token_ids, values, bias, temperature)
    return resolve_impl("score_distribution", impl, hidden.dtype, hidden, weight)


_SIGNATURES = _checks.SignatureCache()


def distribution_from_score_logits(z: torch.Tensor, values: torch.Tensor) -> ScoreDistribution:
    """log q, mu, var from the K score logits z (already divided by the temperature)."""
    log_q = torch.log_softmax(z, dim=-1)
    q = log_q.exp()
    v = values.to(z.dtype)
    mean = (q * v).sum(-1)
    var = (q * (v - mean.unsqueeze(-1)) ** 2).sum(-1)
    return ScoreDistribution(log_q, mean, var)


def score_distribution_torch(hidden, weight, token_ids, values, bias=None, temperature=1.0) -> ScoreDistribution:
    """Reference path: gathers the K rows first, so the [N, V] logits are never formed."""
    compute = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    w = weight if token_ids is None else weight.index_select(0, token_ids)
    z = hidden.to(compute) @ w.to(compute).t()
    if bias is not None:
        z = z + (bias if token_ids is None else bias.index_select(0, token_ids)).to(compute)
    return distribution_from_score_logits(z / temperature, values.to(compute))


def score_distribution(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor | None,
    values,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    impl: str = "auto",
) -> ScoreDistribution:
    """Score distribution q over K bins read off the LM head's score rows (see module docstring).

    hidden [..., H]; weight [V, H] (or [K, H] with token_ids=None); token_ids [K]; values [K] (or a ScoreBins).
    Returns ScoreDistribution(log_probs [..., K], mean [...], var [...]) in fp32 (fp64 for fp64 hidden),
    differentiable w.r.t. hidden, weight and bias.
    """
    fast = isinstance(values, torch.Tensor) and values.device == hidden.device and values.is_floating_point()
    v = values if fast else _as_values(values, hidden.device)
    backend = _SIGNATURES.get(_checks.signature(hidden, weight, token_ids, v, bias, temperature, impl),
                              lambda: _validate(hidden, weight, token_ids, v, bias, temperature, impl))
    if token_ids is not None:  # a value check: per tensor version, not per signature
        _checks.index_vector("token_ids", token_ids, weight.shape[0], "rows of weight", distinct=True)
    if backend == "torch":
        return score_distribution_torch(hidden, weight, token_ids, v, bias, temperature)
    return score_distribution_triton(hidden, weight, token_ids, v, bias, temperature)


def score_distribution_from_logits(
    logits: torch.Tensor, token_ids: torch.Tensor, values, *, temperature: float = 1.0
) -> ScoreDistribution:
    """Score distribution from full logits [..., V]: gather the K score columns, then q, mu, var as above."""
    _checks.tensor("logits", logits, floating=True)
    if logits.dim() < 1:
        raise ValueError("logits must have at least 1 dimension [..., V]")
    _checks.tensor("token_ids", token_ids, ndim=1, floating=False)
    v = _as_values(values, logits.device)
    _checks.tensor("values", v, ndim=1, floating=True)
    if token_ids.shape[0] != v.shape[0]:
        raise ValueError(f"token_ids has {token_ids.shape[0]} entries but values has K={v.shape[0]}")
    if v.shape[0] == 0:
        raise ValueError("values must hold at least one bin")
    _checks.index_vector("token_ids", token_ids, logits.shape[-1], "the vocabulary of logits")
    _checks.positive("temperature", temperature)
    _checks.same_device(logits=logits, token_ids=token_ids)
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.index_select(-1, token_ids).to(compute) / temperature
    return distribution_from_score_logits(z, v.to(compute))


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels: forward (one launch), backward (dz + dh, then dW_S + db: two launches). A row block's hidden
# dimension is shared by several programs when the row blocks alone would leave the GPU's multiprocessors idle.
# ----------------------------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _weight_rows(ids_ptr, ks, kmask, HAS_IDS: tl.constexpr):
        """Row of the weight matrix for each score bin: token_ids[k], or k when the weight holds the K rows."""
        if HAS_IDS:
            return tl.load(ids_ptr + ks, mask=kmask, other=0).to(tl.int64)
        return ks.to(tl.int64)

    @triton.jit
    def _score_epilogue(acc, b_ptr, wrow, val_ptr, ks, kmask, rows, rmask, logq_ptr, mean_ptr, var_ptr, K, inv_t,
                        HAS_BIAS: tl.constexpr):
        """From the score logits acc [BLOCK_N, BLOCK_K] (bias not yet added): log q, mean and variance stored."""
        if HAS_BIAS:
            acc += tl.load(b_ptr + wrow, mask=kmask, other=0.0).to(tl.float32)[None, :]
        z = tl.where(kmask[None, :], acc * inv_t, float("-inf"))
        zmax = tl.max(z, axis=1)
        e = tl.exp(z - zmax[:, None])
        total = tl.sum(e, axis=1)
        logq = z - zmax[:, None] - tl.log(total)[:, None]
        q = e / total[:, None]
        v = tl.load(val_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        mean = tl.sum(q * v[None, :], axis=1)
        dev = v[None, :] - mean[:, None]
        var = tl.sum(q * dev * dev, axis=1)
        tl.store(logq_ptr + rows[:, None] * K + ks[None, :], logq, mask=rmask[:, None] & kmask[None, :])
        tl.store(mean_ptr + rows, mean, mask=rmask)
        tl.store(var_ptr + rows, var, mask=rmask)

    @triton.jit
    def _score_fwd_kernel(h_ptr, w_ptr, ids_ptr, b_ptr, val_ptr, logq_ptr, mean_ptr, var_ptr, part_ptr, ticket_ptr,
                          N, H, K, H_SPLIT, stride_hn, stride_hh, stride_wv, stride_wh, inv_t,
                          HAS_IDS: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          BLOCK_H: tl.constexpr):
        # grid (row blocks, hidden slices of H_SPLIT columns). With SPLIT, each program writes its partial logits
        # and the last of a row block's programs (atomic ticket, reset by it) sums them in slice order (the
        # result does not depend on which finishes last) and runs the epilogue.
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        n_split = tl.num_programs(1)
        rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        ks = tl.arange(0, BLOCK_K)
        rmask = rows < N
        kmask = ks < K
        wrow = _weight_rows(ids_ptr, ks, kmask, HAS_IDS)
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        h_lo = pid_s * H_SPLIT
        h_hi = tl.minimum(h_lo + H_SPLIT, H)
        for h0 in range(h_lo, h_hi, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            hmask = hs < h_hi
            x = tl.load(h_ptr + rows[:, None] * stride_hn + hs[None, :] * stride_hh,
                        mask=rmask[:, None] & hmask[None, :], other=0.0).to(tl.float32)
            w = tl.load(w_ptr + wrow[None, :] * stride_wv + hs[:, None] * stride_wh,
                        mask=kmask[None, :] & hmask[:, None], other=0.0).to(tl.float32)
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
        if SPLIT:
            tile = tl.arange(0, BLOCK_N)[:, None] * BLOCK_K + ks[None, :]
            block = part_ptr + pid_n.to(tl.int64) * n_split * BLOCK_N * BLOCK_K
            tl.store(block + pid_s * BLOCK_N * BLOCK_K + tile, acc)
            tl.debug_barrier()
            ticket = tl.atomic_add(ticket_ptr + pid_n, 1, sem="acq_rel")
            if ticket == n_split - 1:
                total = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
                for s in range(0, n_split):
                    total += tl.load(block + s * BLOCK_N * BLOCK_K + tile, volatile=True)
                _score_epilogue(total, b_ptr, wrow, val_ptr, ks, kmask, rows, rmask, logq_ptr, mean_ptr, var_ptr,
                                K, inv_t, HAS_BIAS)
                tl.atomic_xchg(ticket_ptr + pid_n, 0)  # ready for the next launch on this stream
        else:
            _score_epilogue(acc, b_ptr, wrow, val_ptr, ks, kmask, rows, rmask, logq_ptr, mean_ptr, var_ptr, K, inv_t,
                            HAS_BIAS)

    @triton.jit
    def _score_bwd_dz_dh_kernel(gl_ptr, gmu_ptr, gvar_ptr, logq_ptr, mean_ptr, val_ptr, w_ptr, ids_ptr,
                                dz_ptr, dh_ptr, N, H, K, H_SPLIT, stride_gln, stride_glk, stride_gmu, stride_gvar,
                                stride_wv, stride_wh, inv_t, HAS_GL: tl.constexpr, HAS_GMU: tl.constexpr,
                                HAS_GVAR: tl.constexpr, HAS_IDS: tl.constexpr, NEED_DH: tl.constexpr,
                                PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                                BLOCK_H: tl.constexpr):
        # output gradients are read with their own strides (autograd's expanded gradients have stride 0) and an
        # absent one (HAS_* False) counts as zero: no copies, no fills. Grid (row blocks, hidden slices): every
        # program of a row block recomputes its dz (K values per row), the first one stores it.
        pid_s = tl.program_id(1)
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        ks = tl.arange(0, BLOCK_K)
        rmask = rows < N
        kmask = ks < K
        m2 = rmask[:, None] & kmask[None, :]
        logq = tl.load(logq_ptr + rows[:, None] * K + ks[None, :], mask=m2, other=float("-inf"))
        q = tl.where(m2, tl.exp(logq), 0.0)
        gl = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        gmu = tl.zeros([BLOCK_N], dtype=tl.float32)
        gvar = tl.zeros([BLOCK_N], dtype=tl.float32)
        if HAS_GL:
            gl = tl.load(gl_ptr + rows[:, None] * stride_gln + ks[None, :] * stride_glk, mask=m2,
                         other=0.0).to(tl.float32)
        if HAS_GMU:
            gmu = tl.load(gmu_ptr + rows * stride_gmu, mask=rmask, other=0.0).to(tl.float32)
        if HAS_GVAR:
            gvar = tl.load(gvar_ptr + rows * stride_gvar, mask=rmask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
        v = tl.load(val_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        dev = v[None, :] - mean[:, None]
        dq = gmu[:, None] * v[None, :] + gvar[:, None] * dev * dev
        dz = (gl - q * tl.sum(gl, axis=1)[:, None]) + q * (dq - tl.sum(q * dq, axis=1)[:, None])
        dz = tl.where(m2, dz * inv_t, 0.0)
        if pid_s == 0:
            tl.store(dz_ptr + rows[:, None] * BLOCK_K + ks[None, :], dz, mask=rmask[:, None])
        if NEED_DH:
            wrow = _weight_rows(ids_ptr, ks, kmask, HAS_IDS)
            h_lo = pid_s * H_SPLIT
            h_hi = tl.minimum(h_lo + H_SPLIT, H)
            for h0 in range(h_lo, h_hi, BLOCK_H):
                hs = h0 + tl.arange(0, BLOCK_H)
                hmask = hs < h_hi
                w = tl.load(w_ptr + wrow[:, None] * stride_wv + hs[None, :] * stride_wh,
                            mask=kmask[:, None] & hmask[None, :], other=0.0).to(tl.float32)
                dh = tl.dot(dz, w, input_precision=PRECISION)
                tl.store(dh_ptr + rows[:, None] * H + hs[None, :], dh, mask=rmask[:, None] & hmask[None, :])

    @triton.jit
    def _score_bwd_dw_kernel(dz_ptr, h_ptr, ids_ptr, dw_ptr, db_ptr, N, H, K, stride_hn, stride_hh,
                             stride_dwv, HAS_IDS: tl.constexpr, NEED_DB: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
        pid = tl.program_id(0)
        hs = pid * BLOCK_H + tl.arange(0, BLOCK_H)
        ks = tl.arange(0, BLOCK_K)
        hmask = hs < H
        kmask = ks < K
        acc = tl.zeros([BLOCK_K, BLOCK_H], dtype=tl.float32)
        db = tl.zeros([BLOCK_K], dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            rows = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
            rmask = rows < N
            dz = tl.load(dz_ptr + rows[:, None] * BLOCK_K + ks[None, :], mask=rmask[:, None], other=0.0)
            x = tl.load(h_ptr + rows[:, None] * stride_hn + hs[None, :] * stride_hh,
                        mask=rmask[:, None] & hmask[None, :], other=0.0).to(tl.float32)
            acc = tl.dot(tl.trans(dz), x, acc, input_precision=PRECISION)
            if NEED_DB:
                db += tl.sum(dz, axis=0)
        wrow = _weight_rows(ids_ptr, ks, kmask, HAS_IDS)
        tl.store(dw_ptr + wrow[:, None] * stride_dwv + hs[None, :], acc, mask=kmask[:, None] & hmask[None, :])
        if NEED_DB:
            if pid == 0:
                tl.store(db_ptr + wrow, db, mask=kmask)


# Launch configuration (rows per program, hidden columns per step, warps, pipeline stages, and "split_h": how
# many programs share a row block's hidden dimension: "auto" fills the GPU's multiprocessors about twice, an int
# fixes it); benchmarks/tools/tune_score.py measures alternatives on a GPU.
LAUNCH = {"block_n": 16, "block_h": 256, "num_warps": 4, "num_stages": 3, "split_h": "auto"}

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


class LaunchPlan(NamedTuple):
    """Block sizes, grid and constexpr choices of one (N, H, K, device, dtype, LAUNCH) signature."""

    block_n: int
    block_k: int
    block_h: int
    row_blocks: int
    n_split: int  # programs sharing a row block's hidden dimension
    per: int  # hidden columns per slice (a multiple of block_h)
    precision: str  # operands are upcast to fp32; bf16/fp16 values are exact in tf32, fp32 ones need ieee
    options: dict


@functools.lru_cache(maxsize=1024)
def _plan(n: int, h: int, k: int, device: torch.device, dtype: torch.dtype, launch: tuple) -> LaunchPlan:
    cfg = dict(launch)
    bn, bh = cfg["block_n"], cfg["block_h"]
    bk = max(16, _next_pow2(k))
    row_blocks = _cdiv(max(n, 1), bn)
    steps = _cdiv(h, bh)
    n_split, per = 1, max(h, 1)
    if steps > 1:
        want = cfg["split_h"]
        if want == "auto":
            if device.type == "cuda":  # fill the multiprocessors about twice
                want = _cdiv(2 * torch.cuda.get_device_properties(device).multi_processor_count, row_blocks)
            else:  # the interpreter: split too, so that the CPU tests exercise the reduction
                want = 2
        per = _cdiv(steps, max(1, min(int(want), steps))) * bh
        n_split = _cdiv(h, per)
    return LaunchPlan(bn, bk, bh, row_blocks, n_split, per, "ieee" if dtype == torch.float32 else "tf32",
                      {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})


def launch_plan(n: int, h: int, k: int, device: torch.device, dtype: torch.dtype) -> LaunchPlan:
    """The cached plan for these sizes under the current ``LAUNCH`` settings."""
    return _plan(n, h, k, device, dtype, tuple(LAUNCH.items()))


def score_forward_launch(hidden: torch.Tensor, weight: torch.Tensor, token_ids: torch.Tensor | None,
                         values: torch.Tensor, bias: torch.Tensor | None,
                         temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the forward kernel: (log_q [N, K], mean [N], var [N]) fp32 for hidden [N, H]."""
    n, h = hidden.shape
    k = values.shape[0]
    dev = hidden.device
    logq = torch.empty(n, k, dtype=torch.float32, device=dev)
    mean = torch.empty(n, dtype=torch.float32, device=dev)
    var = torch.empty(n, dtype=torch.float32, device=dev)
    if n == 0:
        return logq, mean, var
    p = launch_plan(n, h, k, dev, hidden.dtype)
    ids = token_ids if token_ids is not None else values  # placeholder pointer when HAS_IDS is False
    if p.n_split > 1:
        part = workspace(dev, "score_part", p.row_blocks * p.n_split * p.block_n * p.block_k)
        tickets = ticket_counters(dev, p.row_blocks)
    else:
        part = tickets = mean  # unused placeholders
    _score_fwd_kernel[(p.row_blocks, p.n_split)](
        hidden, weight, ids, bias if bias is not None else values, values, logq, mean, var, part, tickets,
        n, h, k, p.per, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), 1.0 / temperature,
        HAS_IDS=token_ids is not None, HAS_BIAS=bias is not None, SPLIT=p.n_split > 1, PRECISION=p.precision,
        BLOCK_N=p.block_n, BLOCK_K=p.block_k, BLOCK_H=p.block_h, **p.options)
    return logq, mean, var


def score_backward_launch(grad_logq: torch.Tensor | None, grad_mean: torch.Tensor | None,
                          grad_var: torch.Tensor | None, hidden: torch.Tensor, weight: torch.Tensor,
                          token_ids: torch.Tensor | None, values: torch.Tensor, logq: torch.Tensor, mean: torch.Tensor,
                          temperature: float, need_h: bool, need_w: bool, need_b: bool,
                          bias_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the two backward kernels; returns (dh, dW (dense, only the K rows non-zero), db), empty when unneeded.
    Output gradients may be None (zero) or strided (read in place)."""
    n, h = hidden.shape
    k = values.shape[0]
    dev = hidden.device
    dh = torch.empty_like(hidden) if need_h else hidden.new_empty(0)
    dw = torch.zeros_like(weight) if need_w else weight.new_empty(0)
    db = torch.zeros(weight.shape[0], dtype=bias_dtype, device=dev) if need_b else weight.new_empty(0)
    if n == 0 or not (need_h or need_w or need_b):
        return dh, dw, db
    p = launch_plan(n, h, k, dev, hidden.dtype)
    dz = workspace(dev, "score_dz", n * p.block_k)
    ids = token_ids if token_ids is not None else values
    gl, gmu, gvar = (logq if grad_logq is None else grad_logq, mean if grad_mean is None else grad_mean,
                     mean if grad_var is None else grad_var)
    n_split, per = (p.n_split, p.per) if need_h else (1, h)
    _score_bwd_dz_dh_kernel[(p.row_blocks, n_split)](
        gl, gmu, gvar, logq, mean, values, weight, ids, dz, dh if need_h else dz, n, h, k, per,
        gl.stride(0), gl.stride(1), gmu.stride(0), gvar.stride(0), weight.stride(0), weight.stride(1),
        1.0 / temperature, HAS_GL=grad_logq is not None, HAS_GMU=grad_mean is not None,
        HAS_GVAR=grad_var is not None, HAS_IDS=token_ids is not None, NEED_DH=need_h, PRECISION=p.precision,
        BLOCK_N=p.block_n, BLOCK_K=p.block_k, BLOCK_H=p.block_h, **p.options)
    if need_w or need_b:
        dw_target = dw if need_w else torch.empty(weight.shape[0], h, dtype=weight.dtype, device=dev)
        db_target = db if need_b else torch.empty(weight.shape[0], dtype=torch.float32, device=dev)
        _score_bwd_dw_kernel[(_cdiv(h, p.block_h),)](
            dz, hidden, ids, dw_target, db_target, n, h, k, hidden.stride(0), hidden.stride(1),
            dw_target.stride(0), HAS_IDS=token_ids is not None, NEED_DB=need_b, PRECISION=p.precision,
            BLOCK_N=p.block_n, BLOCK_K=p.block_k, BLOCK_H=p.block_h, **p.options)
    return dh, dw, db


def _score_fake(hidden, weight, token_ids, values, bias, temperature):
    n, k = hidden.shape[0], values.shape[0]
    new = hidden.new_empty
    return new(n, k, dtype=torch.float32), new(n, dtype=torch.float32), new(n, dtype=torch.float32)


def _score_backward_fake(grad_logq, grad_mean, grad_var, hidden, weight, token_ids, values, logq, mean, temperature,
                         need_h, need_w, need_b, bias_dtype):
    dh = torch.empty_like(hidden) if need_h else hidden.new_empty(0)
    dw = torch.empty_like(weight) if need_w else weight.new_empty(0)
    db = weight.new_empty(weight.shape[0], dtype=bias_dtype) if need_b else weight.new_empty(0)
    return dh, dw, db


_score_backward_run = define_backward_op("score_distribution_backward", score_backward_launch, _score_backward_fake)


def _score_setup_context(ctx, inputs, output):
    hidden, weight, token_ids, values, bias, temperature = inputs
    logq, mean, _ = output
    ctx.set_materialize_grads(False)  # unused outputs reach the backward as None, not as zero-filled tensors
    ctx.save_for_backward(hidden, weight, token_ids, values, logq, mean)
    ctx.temperature = temperature
    ctx.bias_dtype = None if bias is None else bias.dtype


def _score_backward(ctx, grad_logq, grad_mean, grad_var):
    """The op's one backward: the launchers in eager mode, the backward op (which runs them) under torch.compile."""
    hidden, weight, token_ids, values, logq, mean = ctx.saved_tensors
    need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_b = ctx.bias_dtype is not None and ctx.needs_input_grad[4]
    dh, dw, db = _score_backward_run(grad_logq, grad_mean, grad_var, hidden, weight, token_ids, values, logq, mean,
                                     ctx.temperature, need_h, need_w, need_b, ctx.bias_dtype or weight.dtype,
                                     traced=is_tracing(hidden, logq))
    return (dh if need_h else None, dw if need_w else None, None, None, db if need_b else None, None)


_score = define_op("score_distribution", score_forward_launch, _score_fake, setup_context=_score_setup_context,
                   backward=_score_backward)


def score_distribution_triton(hidden, weight, token_ids, values, bias=None, temperature=1.0) -> ScoreDistribution:
    """Triton path: one forward launch; hidden [..., H] is flattened to rows (strided rows are read in place).
    Eager calls take the fast path; under torch.compile the registered op is traced."""
    lead = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    v = values if values.dtype == torch.float32 else values.float()
    args = (h2, weight, token_ids, v.contiguous(), bias, float(temperature))
    logq, mean, var = _score(*args)
    k = v.shape[0]
    return ScoreDistribution(logq.reshape(*lead, k), mean.reshape(lead), var.reshape(lead))


class ScoreHead(torch.nn.Module):
    """Holds the K score rows of an LM head (copied from it, or fresh) and maps hidden states to q, mu, var."""

    def __init__(self, weight: torch.Tensor, values, bias: torch.Tensor | None = None, temperature: float = 1.0):
        super().__init__()
        _checks.tensor("weight", weight, ndim=2, floating=True)
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone())
        self.register_buffer("values", _as_values(values, weight.device).float().clone())
        self.temperature = _checks.positive("temperature", temperature)

    @classmethod
    def from_lm_head(cls, lm_head: torch.nn.Linear, token_ids: torch.Tensor, values, temperature: float = 1.0):
        ids = token_ids.to(lm_head.weight.device)
        bias = None if lm_head.bias is None else lm_head.bias[ids]
        return cls(lm_head.weight[ids], values, bias, temperature)

    def forward(self, hidden: torch.Tensor, impl: str = "auto") -> ScoreDistribution:
        return score_distribution(
            hidden, self.weight, None, self.values, bias=self.bias, temperature=self.temperature, impl=impl
        )
