"""Token log-probabilities of sampled completions without the [B, T, V] logits tensor.

On CUDA this uses liger-kernel's chunked fused linear + cross-entropy (``LigerFusedLinearCrossEntropyLoss`` with
reduction="none" gives -log p per token, never materialising the full logits); elsewhere a torch loop projects
chunks of the selected positions onto the vocabulary in one reused buffer, each chunk recomputed in the backward
(one [chunk, V] block alive at a time).
"""

from __future__ import annotations

import torch

from zrcore.ops._dispatch import define_backward_op, define_op, is_tracing, resolve_impl


def token_logprobs_forward(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           targets: torch.Tensor, temperature: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(y) [N], logsumexp(z) [N]) with z = (W h + b) / T, a chunk of rows at a time in one reused [chunk, V]
    buffer (fp32, fp64 for fp64 hidden)."""
    compute = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    n, v = hidden.shape[0], weight.shape[0]
    w = weight.to(compute)
    b = None if bias is None else bias.to(compute)
    buf = torch.empty((min(chunk, n), v), dtype=compute, device=hidden.device)
    out = torch.empty(n, dtype=compute, device=hidden.device)
    lse = torch.empty(n, dtype=compute, device=hidden.device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        z = _logits_into(buf[:stop - start], hidden[start:stop], w, b, temperature, compute)
        torch.logsumexp(z, -1, out=lse[start:stop])
        out[start:stop] = z.gather(-1, targets[start:stop, None]).squeeze(-1) - lse[start:stop]
    return out, lse


def token_logprobs_backward(grad: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None, targets: torch.Tensor, lse: torch.Tensor, temperature: float,
                            chunk: int, need_h: bool, need_w: bool, need_b: bool
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. hidden, weight and bias (empty where not needed), each chunk's logits recomputed into one
    reused buffer: d log p(y) / dz = onehot(y) - softmax(z), dz / d(W h + b) = 1 / T."""
    compute, t = lse.dtype, temperature
    n, v = hidden.shape[0], weight.shape[0]
    w = weight.to(compute)
    b = None if bias is None else bias.to(compute)
    buf = torch.empty((min(chunk, n), v), dtype=compute, device=hidden.device)
    grad_h = torch.empty(hidden.shape, dtype=compute, device=hidden.device) if need_h else None
    grad_w = torch.zeros_like(w) if need_w else None
    grad_b = torch.zeros(v, dtype=compute, device=hidden.device) if need_b else None
    g = grad.to(compute)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        h = hidden[start:stop].to(compute)
        z = _logits_into(buf[:stop - start], h, w, b, t, compute)
        dz = z.sub_(lse[start:stop, None]).exp_()  # softmax
        dz.scatter_add_(-1, targets[start:stop, None], torch.full_like(lse[start:stop, None], -1.0))
        dz.mul_((-g[start:stop] / t)[:, None])  # d L / d (W h + b)
        if need_h:
            torch.mm(dz, w, out=grad_h[start:stop])
        if need_w:
            grad_w.addmm_(dz.t(), h)
        if need_b:
            grad_b += dz.sum(0)
    empty = hidden.new_empty
    return (empty(0) if grad_h is None else grad_h.to(hidden.dtype),
            empty(0) if grad_w is None else grad_w.to(weight.dtype), empty(0) if grad_b is None else grad_b.to(bias.dtype))


def _token_fake(hidden, weight, bias, targets, temperature, chunk):
    compute = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    out = hidden.new_empty(hidden.shape[0], dtype=compute)
    return out, torch.empty_like(out)


def _token_backward_fake(grad, hidden, weight, bias, targets, lse, temperature, chunk, need_h, need_w, need_b):
    empty = hidden.new_empty
    return (torch.empty_like(hidden) if need_h else empty(0), torch.empty_like(weight) if need_w else empty(0),
            torch.empty_like(bias) if need_b else empty(0))


_token_backward_run = define_backward_op("token_logprobs_backward", token_logprobs_backward, _token_backward_fake)


def _token_setup_context(ctx, inputs, output):
    hidden, weight, bias, targets, temperature, chunk = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(hidden, weight, bias, targets, output[1])
    ctx.meta = (temperature, chunk)


def _token_backward(ctx, grad, _):
    if grad is None:
        return None, None, None, None, None, None
    hidden, weight, bias, targets, lse = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
    out = _token_backward_run(grad, hidden, weight, bias, targets, lse, *ctx.meta, *needs,
                              traced=is_tracing(hidden, lse))
    gh, gw, gb = (g if need else None for g, need in zip(out, needs))
    return gh, gw, gb, None, None, None


_token = define_op("token_logprobs", token_logprobs_forward, _token_fake, setup_context=_token_setup_context,
                   backward=_token_backward)


def _logits_into(z: torch.Tensor, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, temperature: float,
                 compute: torch.dtype) -> torch.Tensor:
    torch.mm(h.to(compute), w.t(), out=z)
    if b is not None:
        z.add_(b)
    if temperature != 1.0:
        z.div_(temperature)
    return z


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                            temperature: float = 1.0, bias: torch.Tensor | None = None, chunk: int | None = None,
                            impl: str = "auto") -> torch.Tensor:
    """log softmax(W h / T)[target] for rows of hidden [N, H] and targets [N]; differentiable w.r.t. hidden/weight.

    ``impl="triton"`` (the default on CUDA without a bias): liger-kernel's chunked fused linear + cross-entropy.
    ``impl="torch"``: the registered op ``torch.ops.zrcore.token_logprobs``, ``chunk`` rows at a time (default:
    fused_linear_kl's choice, about 4 N H logits per chunk) in one reused [chunk, V] buffer; autograd keeps no
    [chunk, V] tensor: the backward recomputes one chunk's logits at a time into the same buffer."""
    backend = resolve_impl("token_logprobs", impl, hidden.dtype, hidden, weight,
                           unsupported=None if bias is None else "an LM-head bias")
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but targets has {targets.shape[0]}")
    if chunk is None:
        from zrcore.ops.fused_linear_kl import default_chunk_rows

        chunk = default_chunk_rows(hidden.shape[0], hidden.shape[1], weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if backend == "triton":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        loss = LigerFusedLinearCrossEntropyLoss(reduction="none")
        return -loss(weight, hidden / temperature, targets).float()
    args = (hidden, weight, bias, targets, float(temperature), int(chunk))
    return _token(*args)[0]
