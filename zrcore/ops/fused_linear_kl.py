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
from zrcore.ops._dispatch import resolve_impl

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


def _log_probs(z: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(z, dim=-1)


def kl_rows_and_dz(log_qs: torch.Tensor, log_qt: torch.Tensor, forward: bool, temperature: float):
    """Per-row KL and its gradient w.r.t. the student logits z_S (before division by T)."""
    qs = log_qs.exp()
    if forward:
        qt = log_qt.exp()
        terms = torch.where(qt > 0, qt * (log_qt - log_qs), torch.zeros_like(qt))
        kl = terms.sum(-1)
        dz = (qs - qt) / temperature
    else:
        diff = log_qs - log_qt
        kl = torch.where(qs > 0, qs * diff, torch.zeros_like(qs)).sum(-1)
        dz = qs * (diff - kl.unsqueeze(-1)) / temperature
        dz = torch.where(qs > 0, dz, torch.zeros_like(dz))
    return kl, dz


class _Problem:
    """Everything about one call that the chunk loop needs."""

    def __init__(self, h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward, temperature, compute):
        self.compute = compute
        self.h_s, self.teacher = h_s, teacher
        ids = token_ids
        self.ids = ids
        self.w_s = (w_s if ids is None else w_s.index_select(0, ids)).to(compute)
        self.b_s = None if b_s is None else (b_s if ids is None else b_s.index_select(0, ids)).to(compute)
        self.teacher_is_hidden = w_t is not None
        if self.teacher_is_hidden:
            self.w_t = (w_t if ids is None else w_t.index_select(0, ids)).to(compute)
            self.b_t = None if b_t is None else (b_t if ids is None else b_t.index_select(0, ids)).to(compute)
        self.forward = forward
        self.temperature = temperature

    def chunk(self, start: int, stop: int):
        h = self.h_s[start:stop].to(self.compute)
        z = h @ self.w_s.t()
        if self.b_s is not None:
            z = z + self.b_s
        log_qs = _log_probs(z / self.temperature)
        t = self.teacher[start:stop].to(self.compute)
        if self.teacher_is_hidden:
            zt = t @ self.w_t.t()
            if self.b_t is not None:
                zt = zt + self.b_t
            log_qt = _log_probs(zt / self.temperature)
        else:
            log_qt = _log_probs(t / self.temperature)
        kl, dz = kl_rows_and_dz(log_qs, log_qt, self.forward, self.temperature)
        return h, kl, dz


def _run_chunks(prob: _Problem, n: int, chunk: int, row_weight, want_grads: tuple[bool, bool, bool]):
    """Loop over row chunks; returns per-row KL [N] and the gradients (weighted by row_weight [N] or scalar)."""
    kls = []
    need_h, need_w, need_b = want_grads
    grad_h = torch.empty_like(prob.h_s) if need_h else None
    grad_w = torch.zeros_like(prob.w_s) if need_w else None
    grad_b = torch.zeros(prob.w_s.shape[0], dtype=prob.compute, device=prob.w_s.device) if need_b else None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        h, kl, dz = prob.chunk(start, stop)
        kls.append(kl)
        if not any(want_grads):
            continue
        rw = row_weight if not torch.is_tensor(row_weight) or row_weight.dim() == 0 else row_weight[start:stop, None]
        dz = dz * rw
        if need_h:
            grad_h[start:stop] = (dz @ prob.w_s).to(grad_h.dtype)
        if need_w:
            grad_w.addmm_(dz.t(), h)
        if need_b:
            grad_b += dz.sum(0)
    kl = torch.cat(kls) if kls else prob.h_s.new_zeros(0, dtype=prob.compute)
    return kl, grad_h, grad_w, grad_b


def _reduce(kl: torch.Tensor, reduction: str, n: int):
    if reduction == "none":
        return kl
    total = kl.sum()
    return total / max(n, 1) if reduction == "batchmean" else total


class _ChunkedLinearKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward_kl, temperature, reduction, chunk):
        compute = torch.float64 if h_s.dtype == torch.float64 else torch.float32
        n = h_s.shape[0]
        prob = _Problem(h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward_kl, temperature, compute)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], b_s is not None and ctx.needs_input_grad[2])
        scale = 1.0 if reduction != "batchmean" else 1.0 / max(n, 1)
        early = reduction != "none" and any(needs)
        kl, gh, gw, gb = _run_chunks(prob, n, chunk, scale, needs if early else (False, False, False))
        ctx.reduction, ctx.needs, ctx.chunk = reduction, needs, chunk
        ctx.meta = (forward_kl, temperature, token_ids, w_s.shape[0])
        ctx.dtypes = (w_s.dtype, None if b_s is None else b_s.dtype)
        if early:
            ctx.save_for_backward(gh, gw, gb)
        elif reduction == "none":
            ctx.save_for_backward(h_s, w_s, b_s, teacher, w_t, b_t)
        return _reduce(kl, reduction, n).to(compute)

    @staticmethod
    def backward(ctx, grad_out):
        forward_kl, temperature, token_ids, v_rows = ctx.meta
        w_dtype, b_dtype = ctx.dtypes
        if ctx.reduction != "none":
            gh, gw, gb = ctx.saved_tensors
            gh = None if gh is None else gh * grad_out.to(gh.dtype)
            gw = None if gw is None else gw * grad_out.to(gw.dtype)
            gb = None if gb is None else gb * grad_out.to(gb.dtype)
        else:
            h_s, w_s, b_s, teacher, w_t, b_t = ctx.saved_tensors
            compute = torch.float64 if h_s.dtype == torch.float64 else torch.float32
            prob = _Problem(h_s, w_s, b_s, teacher, w_t, b_t, token_ids, forward_kl, temperature, compute)
            _, gh, gw, gb = _run_chunks(prob, h_s.shape[0], ctx.chunk, grad_out.to(compute), ctx.needs)
        return (
            gh,
            scatter_rows(gw, token_ids, v_rows, w_dtype),
            scatter_rows(gb, token_ids, v_rows, b_dtype),
            *([None] * 8),
        )


def scatter_rows(grad_sub: torch.Tensor | None, token_ids, v_rows: int, dtype) -> torch.Tensor | None:
    """Gradient of the K selected rows placed into a zero gradient of all V rows (identity without token_ids)."""
    if grad_sub is None:
        return None
    if token_ids is None:
        return grad_sub.to(dtype)
    full = torch.zeros((v_rows,) + tuple(grad_sub.shape[1:]), dtype=dtype, device=grad_sub.device)
    return full.index_add_(0, token_ids, grad_sub.to(dtype))


def fused_linear_kl_torch(h_s, w_s, teacher, w_t, b_s, b_t, direction, temperature, token_ids, reduction, chunk):
    out = _ChunkedLinearKL.apply(
        h_s, w_s, b_s, teacher, w_t, b_t, token_ids, direction == "forward", float(temperature), reduction, chunk
    )
    return out


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
        if int(token_ids.min()) < 0 or int(token_ids.max()) >= v:
            raise ValueError(f"token_ids must lie in [0, {v}) (rows of student_weight)")
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
    if b_s is not None:
        _checks.tensor("student_bias", b_s, ndim=1, floating=True)
        if b_s.shape[0] != v:
            raise ValueError(f"student_bias must have {v} entries, got {b_s.shape[0]}")
    if b_t is not None:
        _checks.tensor("teacher_bias", b_t, ndim=1, floating=True)
        if b_t.shape[0] != v:
            raise ValueError(f"teacher_bias must have {v} entries, got {b_t.shape[0]}")
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
    which = resolve_impl(impl, student_hidden, student_weight)
    if which == "torch":
        chunk = chunk_size or default_chunk_rows(n, h, width)
        return fused_linear_kl_torch(student_hidden, student_weight, teacher, teacher_weight, student_bias,
                                     teacher_bias, direction, temperature, token_ids, reduction, chunk)
    from zrcore.ops import _fused_linear_kl_triton as tk

    return tk.fused_linear_kl_triton(student_hidden, student_weight, teacher, teacher_weight, student_bias,
                                     teacher_bias, direction, float(temperature), token_ids, reduction, chunk_size)


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
