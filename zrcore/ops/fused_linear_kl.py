"""Fused linear + KL divergence between a student head and a teacher, chunked over rows.

    z_S = (h_S W_S^T + b_S) / T,   log q_S = log_softmax(z_S)         (restricted to token_ids when given)
    log q_T = log_softmax((h_T W_T^T + b_T) / T)  or  log_softmax(teacher_log_probs / T)
    forward KL (direction="forward"):  KL(q_T || q_S) = sum_v q_T (log q_T - log q_S),  dL/dz_S = (q_S - q_T) / T
    reverse KL (direction="reverse"):  KL(q_S || q_T) = sum_v q_S (log q_S - log q_T),
                                       dL/dz_S = q_S (log q_S - log q_T - KL) / T
    reduction: "batchmean" (sum / N), "sum", or "none" (per row [N]).

Rows are processed in chunks: at most one chunk of [rows, V] logits exists at a time. For scalar reductions the
gradients w.r.t. the student's hidden, weight and bias are computed chunk by chunk during the forward (no logits
kept for backward); for reduction="none" the backward recomputes each chunk. The teacher gets no gradient.
"""

from __future__ import annotations

import torch

from zrcore import _checks
from zrcore.ops._dispatch import HAS_TRITON, define_op, is_tracing, resolve_impl, tl, triton

DIRECTIONS = ("forward", "reverse")
REDUCTIONS = ("batchmean", "sum", "none")


def default_chunk_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk so that one chunk of logits holds about as many elements as 4x the hidden rows (>= 16 rows,
    at most 2^23 logits)."""
    if n == 0:
        return 1
    target = max(16, (4 * n * h) // max(v, 1))
    target = min(target, max(1, (1 << 23) // max(v, 1)))
    rows = 1 << max(0, int(target).bit_length() - 1)
    return max(1, min(n, rows))


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_j a[i, j] b[i, j] per row, without an [n, V] product tensor."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _Problem:
    """Everything about one call that the chunk loop needs: the selected rows, cast once to the compute dtype."""

    def __init__(self, h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward, temperature, compute):
        sel = lambda x: None if x is None else (x if token_ids is None else x.index_select(0, token_ids)).to(compute)
        self.compute, self.h_s, self.teacher = compute, h_s, teacher
        self.w_s, self.b_s, self.w_t, self.b_t = sel(w_s), sel(b_s), sel(w_t), sel(b_t)
        self.forward, self.temperature = forward, temperature

    def log_probs_into(self, z: torch.Tensor, src: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None):
        """z <- log softmax((src w^T + b) / T) in place (src holds logits / log-probs already when w is None)."""
        if w is not None:
            torch.mm(src.to(self.compute), w.t(), out=z)
        else:
            z.copy_(src)
        if b is not None:
            z.add_(b)
        if self.temperature != 1.0:
            z.div_(self.temperature)
        z.sub_(torch.logsumexp(z, -1, keepdim=True))
        # a -inf log-probability (a token the teacher excludes) times a zero probability must give 0, not NaN
        return z.clamp_(min=torch.finfo(z.dtype).min)

    def chunk_into(self, start: int, stop: int, zs: torch.Tensor, zt: torch.Tensor, p: torch.Tensor):
        """(h, KL per row, dL/dz_S) of rows [start, stop) using the buffers zs, zt, p ([rows, V]); dz is a view
        into one of them, valid until the next chunk.

        forward KL(q_T || q_S) = sum q_T (log q_T - log q_S), dz = (q_S - q_T) / T;
        reverse KL(q_S || q_T) = sum q_S (log q_S - log q_T), dz = q_S (log q_S - log q_T - KL) / T."""
        h = self.h_s[start:stop].to(self.compute)
        log_qs = self.log_probs_into(zs, h, self.w_s, self.b_s)
        log_qt = self.log_probs_into(zt, self.teacher[start:stop], self.w_t, self.b_t)
        if self.forward:
            q_t = torch.exp(log_qt, out=p)
            kl = _row_dot(q_t, log_qt) - _row_dot(q_t, log_qs)
            dz = torch.exp(log_qs, out=zs).sub_(q_t)
        else:
            q_s = torch.exp(log_qs, out=p)
            diff = torch.sub(log_qs, log_qt, out=zt)
            kl = _row_dot(q_s, diff)
            dz = diff.sub_(kl.unsqueeze(-1)).mul_(q_s)
        if self.temperature != 1.0:
            dz.div_(self.temperature)
        return h, kl, dz


def _run_chunks(prob: _Problem, n: int, chunk: int, row_weight, want_grads: tuple[bool, bool, bool]):
    """Loop over row chunks with one set of [chunk, V] buffers for the whole call (matmuls write into them, every
    elementwise step is in place); returns per-row KL [N] and the gradients (weighted by row_weight [N] or scalar)."""
    need_h, need_w, need_b = want_grads
    v = prob.w_s.shape[0]
    rows = min(chunk, n)
    zs, zt, p = (torch.empty((rows, v), dtype=prob.compute, device=prob.h_s.device) for _ in range(3))
    kl = torch.empty(n, dtype=prob.compute, device=prob.h_s.device)
    grad_h = torch.empty_like(prob.h_s) if need_h else None
    grad_w = torch.zeros_like(prob.w_s) if need_w else None
    grad_b = torch.zeros(v, dtype=prob.compute, device=prob.w_s.device) if need_b else None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        c = stop - start
        h, kl[start:stop], dz = prob.chunk_into(start, stop, zs[:c], zt[:c], p[:c])
        if not any(want_grads):
            continue
        if torch.is_tensor(row_weight) and row_weight.dim() > 0:
            dz.mul_(row_weight[start:stop, None])
        elif not (isinstance(row_weight, float) and row_weight == 1.0):
            dz.mul_(row_weight)
        if need_h:
            if grad_h.dtype == prob.compute:
                torch.mm(dz, prob.w_s, out=grad_h[start:stop])
            else:
                grad_h[start:stop] = (dz @ prob.w_s).to(grad_h.dtype)
        if need_w:
            grad_w.addmm_(dz.t(), h)
        if need_b:
            grad_b += dz.sum(0)
    return kl, grad_h, grad_w, grad_b


def scatter_rows(grad_sub: torch.Tensor | None, token_ids, v_rows: int, dtype) -> torch.Tensor | None:
    """Gradient of the K selected rows placed into a zero gradient of all V rows (identity without token_ids)."""
    if grad_sub is None:
        return None
    if token_ids is None:
        return grad_sub.to(dtype)
    full = torch.zeros((v_rows,) + tuple(grad_sub.shape[1:]), dtype=dtype, device=grad_sub.device)
    return full.index_add_(0, token_ids, grad_sub.to(dtype))


def torch_kl_launch(h_s, w_s, teacher, w_t, b_s, b_t, token_ids, row_weight, forward_kl, temperature, scale, chunk,
                    need_h, need_w, need_b):
    """The torch backend of the op, with the Triton launcher's contract (see ``kl_launch``)."""
    compute = torch.float64 if h_s.dtype == torch.float64 else torch.float32
    prob = _Problem(h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward_kl, temperature, compute)
    weights = scale if row_weight is None else row_weight.to(compute) * scale
    kl, gh, gw, gb = _run_chunks(prob, h_s.shape[0], chunk, weights, (need_h, need_w, need_b))
    loss = kl.sum() * scale if row_weight is None else (kl * weights).sum()
    return (loss, kl, gh if gh is not None else h_s.new_empty(0),
            scatter_rows(gw, token_ids, w_s.shape[0], w_s.dtype) if gw is not None else h_s.new_empty(0),
            scatter_rows(gb, token_ids, w_s.shape[0], b_s.dtype) if gb is not None else h_s.new_empty(0))


# ----------------------------------------------------------------------------------------------------------------
# Triton path: per row chunk, the two logit blocks come from cuBLAS matmuls; one Triton launch per chunk reads both
# (bias and temperature fused), does the online log-sum-exp of each side over vocabulary tiles, the KL, and writes
# dL/dz_S in place of the student logits; dh and dW then come from two more matmuls (dW accumulated in place).
# ----------------------------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _lse_pass(ptr, b_ptr, V, inv_t, HAS_BIAS: tl.constexpr, BLOCK_V: tl.constexpr):
        m = -1e30
        acc = 0.0
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            cm = cols < V
            x = tl.load(ptr + cols, mask=cm, other=float("-inf")).to(tl.float32)
            if HAS_BIAS:
                x += tl.load(b_ptr + cols, mask=cm, other=0.0).to(tl.float32)
            x = x * inv_t
            m_new = tl.maximum(m, tl.max(x, axis=0))
            acc = acc * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
            m = m_new
        return m + tl.log(acc)

    @triton.jit
    def _tile_log_probs(zs_row, zt_row, bs_ptr, bt_ptr, v0, V, inv_t, lse_s, lse_t, HAS_BS: tl.constexpr,
                        HAS_BT: tl.constexpr, BLOCK_V: tl.constexpr):
        """One vocabulary tile: (columns, in-range mask, log q_S, log q_T)."""
        cols = v0 + tl.arange(0, BLOCK_V)
        cm = cols < V
        xs = tl.load(zs_row + cols, mask=cm, other=0.0).to(tl.float32)
        xt = tl.load(zt_row + cols, mask=cm, other=0.0).to(tl.float32)
        if HAS_BS:
            xs += tl.load(bs_ptr + cols, mask=cm, other=0.0).to(tl.float32)
        if HAS_BT:
            xt += tl.load(bt_ptr + cols, mask=cm, other=0.0).to(tl.float32)
        return cols, cm, xs * inv_t - lse_s, xt * inv_t - lse_t

    @triton.jit
    def _kl_rows_kernel(zs_ptr, zt_ptr, bs_ptr, bt_ptr, kl_ptr, rw_ptr, V, stride_s, stride_t, inv_t, scale,
                        FORWARD: tl.constexpr, HAS_BS: tl.constexpr, HAS_BT: tl.constexpr, HAS_RW: tl.constexpr,
                        WANT_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        zs_row = zs_ptr + row * stride_s
        zt_row = zt_ptr + row * stride_t
        lse_s = _lse_pass(zs_row, bs_ptr, V, inv_t, HAS_BS, BLOCK_V)
        lse_t = _lse_pass(zt_row, bt_ptr, V, inv_t, HAS_BT, BLOCK_V)
        w = scale
        if HAS_RW:
            w = w * tl.load(rw_ptr + row)
        kl = 0.0
        for v0 in range(0, V, BLOCK_V):
            cols, cm, ls, lt = _tile_log_probs(zs_row, zt_row, bs_ptr, bt_ptr, v0, V, inv_t, lse_s, lse_t, HAS_BS,
                                               HAS_BT, BLOCK_V)
            qs = tl.where(cm, tl.exp(ls), 0.0)
            qt = tl.where(cm, tl.exp(lt), 0.0)
            if FORWARD:
                kl += tl.sum(tl.where(qt > 0, qt * (lt - ls), 0.0), axis=0)
                if WANT_GRAD:
                    tl.store(zs_row + cols, (qs - qt) * (inv_t * w), mask=cm)
            else:
                kl += tl.sum(tl.where(qs > 0, qs * (ls - lt), 0.0), axis=0)
        if not FORWARD:
            if WANT_GRAD:  # the reverse-KL gradient needs the row's KL: a second pass
                for v0 in range(0, V, BLOCK_V):
                    cols, cm, ls, lt = _tile_log_probs(zs_row, zt_row, bs_ptr, bt_ptr, v0, V, inv_t, lse_s, lse_t,
                                                       HAS_BS, HAS_BT, BLOCK_V)
                    qs = tl.where(cm, tl.exp(ls), 0.0)
                    dz = tl.where(qs > 0, qs * (ls - lt - kl), 0.0) * (inv_t * w)
                    tl.store(zs_row + cols, dz, mask=cm)
        tl.store(kl_ptr + row, kl)


def triton_chunk_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk for the Triton path: 4 x next_pow2(N / ceil(V / H)), at least 16, at most N (two chunks of
    logits, student and teacher, then hold about 8 x the hidden rows' elements)."""
    if n == 0:
        return 1
    inc = max(1, -(-v // max(h, 1)))
    rows = 4 * triton.next_power_of_2(max(1, -(-n // inc)))
    return max(1, min(n, max(16, rows)))


def _select(t, ids):
    return None if t is None else (t if ids is None else t.index_select(0, ids))


def _kl_chunks(h_s, w_s, teacher, w_t, b_s, b_t, forward_kl: bool, temperature: float, chunk: int,
               row_weight, scale: float, need_h: bool, need_w: bool, need_b: bool):
    """One pass over row chunks. Returns per-row KL [N] (fp32) and the gradients of sum_n w_n KL_n (w_n =
    scale * row_weight[n]) w.r.t. h_s, the (selected) student rows and their bias; None where not needed."""
    n = h_s.shape[0]
    v = w_s.shape[0]
    dev = h_s.device
    kl = torch.empty(n, dtype=torch.float32, device=dev)
    want = need_h or need_w or need_b
    gh = torch.empty_like(h_s) if need_h else None
    gw = torch.zeros_like(w_s) if need_w else None
    gb = torch.zeros(v, dtype=torch.float32, device=dev) if need_b else None
    block_v = min(4096 if h_s.is_cuda else 256, triton.next_power_of_2(max(v, 16)))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        h = h_s[start:stop]
        zs = h @ w_s.t()
        zt = teacher[start:stop] @ w_t.t() if w_t is not None else teacher[start:stop]
        rw = None if row_weight is None else row_weight[start:stop].float().contiguous()
        _kl_rows_kernel[(stop - start,)](
            zs, zt, b_s if b_s is not None else zs, b_t if b_t is not None else zt, kl[start:stop],
            rw if rw is not None else kl, v, zs.stride(0), zt.stride(0), 1.0 / temperature, scale,
            FORWARD=forward_kl, HAS_BS=b_s is not None, HAS_BT=b_t is not None, HAS_RW=rw is not None,
            WANT_GRAD=want, BLOCK_V=block_v, num_warps=8 if h_s.is_cuda else 1)
        if not want:
            continue
        if need_h:
            torch.matmul(zs, w_s, out=gh[start:stop])
        if need_w:
            gw.addmm_(zs.t(), h)
        if need_b:
            gb += zs.float().sum(0)
    return kl, gh, gw, gb


def kl_launch(h_s, w_s, teacher, w_t, b_s, b_t, token_ids, row_weight, forward_kl, temperature, scale, chunk,
              need_h, need_w, need_b):
    """Returns (sum_n scale * KL_n, KL rows [N], grad_h, grad_w, grad_b) with the gradients of the first output
    (empty tensors where not requested)."""
    ws, bs = _select(w_s, token_ids), _select(b_s, token_ids)
    wt, bt = _select(w_t, token_ids), _select(b_t, token_ids)
    kl, gh, gw, gb = _kl_chunks(h_s.contiguous(), ws.contiguous(), teacher.contiguous(),
                                None if wt is None else wt.contiguous(), bs, bt, forward_kl, temperature, chunk,
                                row_weight, scale, need_h, need_w, need_b)
    if gw is not None and token_ids is not None:
        gw = torch.zeros_like(w_s).index_add_(0, token_ids, gw)
    if gb is not None:
        if token_ids is not None:
            gb = torch.zeros(w_s.shape[0], dtype=torch.float32, device=gb.device).index_add_(0, token_ids, gb)
        gb = gb.to(b_s.dtype)
    loss = (kl * scale).sum()
    return (loss, kl, gh if gh is not None else h_s.new_empty(0), gw if gw is not None else h_s.new_empty(0),
            gb if gb is not None else h_s.new_empty(0))


LAUNCHERS = {"torch": torch_kl_launch}
if HAS_TRITON:
    LAUNCHERS["triton"] = kl_launch


def kl_forward(h_s: torch.Tensor, w_s: torch.Tensor, teacher: torch.Tensor, w_t: torch.Tensor | None,
               b_s: torch.Tensor | None, b_t: torch.Tensor | None, token_ids: torch.Tensor | None,
               row_weight: torch.Tensor | None, forward_kl: bool, temperature: float, scale: float, chunk: int,
               need_h: bool, need_w: bool, need_b: bool, backend: str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum_n w_n KL_n, KL rows [N], and where asked the gradients of the first w.r.t. h_s, w_s, b_s), w_n = scale
    (times row_weight[n] when given), from ``backend``'s chunk loop."""
    return LAUNCHERS[backend](h_s, w_s, teacher, w_t, b_s, b_t, token_ids, row_weight, forward_kl, temperature,
                              scale, chunk, need_h, need_w, need_b)


def _kl_fake(h_s, w_s, teacher, w_t, b_s, b_t, token_ids, row_weight, forward_kl, temperature, scale, chunk, need_h,
      need_w, need_b, backend):
    f = torch.float64 if h_s.dtype == torch.float64 else torch.float32
    return (h_s.new_empty((), dtype=f), h_s.new_empty(h_s.shape[0], dtype=f),
            torch.empty_like(h_s) if need_h else h_s.new_empty(0),
            torch.empty_like(w_s) if need_w else h_s.new_empty(0),
            b_s.new_empty(w_s.shape[0]) if need_b else h_s.new_empty(0))


def _kl_setup_context(ctx, inputs, output):
    h_s, w_s, teacher, w_t, b_s, b_t, token_ids, _, forward_kl, temperature, _, chunk, need_h, need_w, need_b, \
        backend = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[2:])
    ctx.precomputed = (need_h, need_w, need_b)
    if any(ctx.precomputed):  # a scalar reduction: the gradients came with the forward, no input is kept
        ctx.save_for_backward(*output[2:])
    else:  # per-row KL: the backward recomputes each chunk with the incoming row weights
        ctx.save_for_backward(h_s, w_s, teacher, w_t, b_s, b_t, token_ids)
    ctx.meta = (forward_kl, temperature, chunk, backend)
    ctx.used = False


def _kl_backward(ctx, grad_loss, grad_rows, *_):
    """The op's one backward. Scalar reductions: the forward's gradients times the loss gradient (the Triton
    backend scales them in place in eager mode, so no second [V, H] buffer: then once per forward). Per-row KL:
    a recomputing pass with the row gradients as weights (the launcher in eager mode, the op when traced)."""
    grads = [None, None, None]
    forward_kl, temperature, chunk, backend = ctx.meta
    if any(ctx.precomputed) and grad_loss is not None:
        if backend == "triton" and ctx.used:  # (before the saved tensors are read: they were scaled in place)
            raise RuntimeError("fused_linear_kl computes its gradients in the forward and scales them in place: "
                               "its backward runs once per forward (no retain_graph re-use)")
        saved = ctx.saved_tensors
        in_place = backend == "triton" and not is_tracing(*saved)
        ctx.used = in_place
        for i, (need, grad) in enumerate(zip(ctx.precomputed, saved)):
            if need:
                g = grad_loss.to(grad.dtype)
                grads[i] = grad.mul_(g) if in_place else grad * g
    elif grad_rows is not None:
        h_s, w_s, teacher, w_t, b_s, b_t, token_ids = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], b_s is not None and ctx.needs_input_grad[4])
        run = _kl.op if is_tracing(h_s, grad_rows) else kl_forward
        _, _, *out = run(h_s, w_s, teacher, w_t, b_s, b_t, token_ids, grad_rows.contiguous(), forward_kl,
                         temperature, 1.0, chunk, *needs, backend)
        grads = [g if need else None for g, need in zip(out, needs)]
    return grads[0], grads[1], None, None, grads[2], *([None] * 11)


_kl = define_op("fused_linear_kl", kl_forward, _kl_fake, setup_context=_kl_setup_context, backward=_kl_backward)


def fused_linear_kl_op(h_s, w_s, teacher, w_t, b_s, b_t, direction, temperature, token_ids, reduction, chunk,
                       backend):
    """The registered op for one call: per-row KL for reduction="none", else the reduced loss with its gradients
    computed during the forward."""
    n = h_s.shape[0]
    forward_kl = direction == "forward"
    if reduction == "none":
        needs, scale = (False, False, False), 1.0
    else:
        grad_on = torch.is_grad_enabled()
        needs = (grad_on and h_s.requires_grad, grad_on and w_s.requires_grad,
                 grad_on and b_s is not None and b_s.requires_grad)
        scale = 1.0 / max(n, 1) if reduction == "batchmean" else 1.0
    args = (h_s, w_s, teacher, w_t, b_s, b_t, token_ids, None, forward_kl, float(temperature), scale, chunk, *needs,
            backend)
    loss, rows, *_ = _kl(*args)
    return rows if reduction == "none" else loss


def validate_kl_inputs(h_s, w_s, teacher, w_t, b_s, b_t, direction, temperature, token_ids, reduction):
    _checks.tensor("student_hidden", h_s, ndim=2, floating=True)
    _checks.tensor("student_weight", w_s, ndim=2, floating=True)
    _checks.tensor("teacher", teacher, ndim=2, floating=True)
    _checks.choice("direction", direction, DIRECTIONS)
    _checks.choice("reduction", reduction, REDUCTIONS)
    _checks.positive("temperature", temperature)
    n, h = h_s.shape
    v = w_s.shape[0]
    if w_s.shape[1] != h:
        raise ValueError(f"student_weight must have {h} columns (student_hidden's size), got {w_s.shape[1]}")
    if token_ids is not None:
        _checks.tensor("token_ids", token_ids, ndim=1, floating=False)
        if token_ids.numel() == 0:
            raise ValueError("token_ids must not be empty")
        _checks.index_vector("token_ids", token_ids, v, "rows of student_weight", distinct=True)
    width = v if token_ids is None else token_ids.shape[0]
    if teacher.shape[0] != n:
        raise ValueError(f"teacher must have {n} rows (one per student row), got {teacher.shape[0]}")
    if w_t is not None:
        _checks.tensor("teacher_weight", w_t, ndim=2, floating=True)
        if w_t.shape[0] != v:
            raise ValueError(f"teacher_weight must have {v} rows (the student's vocabulary), got {w_t.shape[0]}")
        if w_t.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"teacher_weight must have {teacher.shape[1]} columns (teacher hidden size), got {w_t.shape[1]}"
            )
    else:
        if teacher.shape[1] != width:
            raise ValueError(
                f"teacher log-probs must have {width} columns ({'K = len(token_ids)' if token_ids is not None else 'V'})"
                f", got {teacher.shape[1]}; pass teacher_weight to give the teacher as hidden states"
            )
        if b_t is not None:
            raise ValueError("teacher_bias needs teacher_weight (teacher given as hidden states)")
    for name, bias in (("student_bias", b_s), ("teacher_bias", b_t)):
        if bias is not None:
            _checks.tensor(name, bias, ndim=1, floating=True)
            if bias.shape[0] != v:
                raise ValueError(f"{name} must have {v} entries, got {bias.shape[0]}")
    _checks.same_device(
        student_hidden=h_s, student_weight=w_s, teacher=teacher, teacher_weight=w_t, student_bias=b_s,
        teacher_bias=b_t, token_ids=token_ids,
    )


def fused_linear_kl(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher: torch.Tensor,
    *,
    teacher_weight: torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    direction: str = "forward",
    temperature: float = 1.0,
    token_ids: torch.Tensor | None = None,
    reduction: str = "batchmean",
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """KL between teacher and student distributions over the vocabulary (or ``token_ids``), never forming [N, V].

    teacher: teacher hidden states [N, Ht] with ``teacher_weight`` [V, Ht], or teacher log-probs [N, V]
    ([N, K] with ``token_ids``). Gradients flow to student_hidden, student_weight and student_bias only.
    """
    validate_kl_inputs(student_hidden, student_weight, teacher, teacher_weight, student_bias, teacher_bias,
                       direction, temperature, token_ids, reduction)
    teacher = teacher.detach()
    teacher_weight = None if teacher_weight is None else teacher_weight.detach()
    teacher_bias = None if teacher_bias is None else teacher_bias.detach()
    n, h = student_hidden.shape
    width = student_weight.shape[0] if token_ids is None else token_ids.shape[0]
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    backend = resolve_impl("fused_linear_kl", impl, student_hidden.dtype, student_hidden, student_weight)
    chunk = chunk_size or (default_chunk_rows if backend == "torch" else triton_chunk_rows)(n, h, width)
    return fused_linear_kl_op(student_hidden, student_weight, teacher, teacher_weight, student_bias, teacher_bias,
                              direction, temperature, token_ids, reduction, chunk, backend)


class FusedLinearKLLoss(torch.nn.Module):
    """Module form of :func:`fused_linear_kl` (options fixed at construction)."""

    def __init__(self, direction: str = "forward", temperature: float = 1.0, reduction: str = "batchmean",
                 impl: str = "auto"):
        super().__init__()
        self.direction = _checks.choice("direction", direction, DIRECTIONS)
        self.reduction = _checks.choice("reduction", reduction, REDUCTIONS)
        self.temperature = _checks.positive("temperature", temperature)
        self.impl = impl

    def forward(self, student_hidden, student_weight, teacher, teacher_weight=None, student_bias=None,
                teacher_bias=None, token_ids=None):
        return fused_linear_kl(student_hidden, student_weight, teacher, teacher_weight=teacher_weight,
                               student_bias=student_bias, teacher_bias=teacher_bias, direction=self.direction,
                               temperature=self.temperature, token_ids=token_ids, reduction=self.reduction,
                               impl=self.impl)
