"""Token log-probabilities of sampled completions without the [B, T, V] logits tensor.

On CUDA this uses liger-kernel's chunked fused linear + cross-entropy (``LigerFusedLinearCrossEntropyLoss`` with
reduction="none" gives -log p per token, never materialising the full logits); elsewhere a torch loop projects
chunks of the selected positions onto the vocabulary in one reused buffer, each chunk recomputed in the backward
(one [chunk, V] block alive at a time).
"""

from __future__ import annotations

import torch

IMPLS = ("auto", "liger", "torch")


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log p(y) = z_y - logsumexp(z), z = (W h + b) / T, a chunk of rows at a time in one reused [chunk, V] buffer;
    the backward recomputes each chunk into the same buffer: d log p(y) / dz = (onehot(y) - softmax(z)) / T."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int):
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
            lse[start:stop] = torch.logsumexp(z, -1)
            out[start:stop] = z.gather(-1, targets[start:stop, None]).squeeze(-1) - lse[start:stop]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out.float() if compute == torch.float32 else out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        compute, t, chunk = lse.dtype, ctx.temperature, ctx.chunk
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        n, v = hidden.shape[0], weight.shape[0]
        w = weight.to(compute)
        b = None if bias is None else bias.to(compute)
        buf = torch.empty((min(chunk, n), v), dtype=compute, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=compute, device=hidden.device) if need_h else None
        grad_w = torch.zeros_like(w) if need_w else None
        grad_b = torch.zeros(v, dtype=compute, device=hidden.device) if need_b else None
        g = grad_out.to(compute)
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
        cast = lambda x, like: None if x is None else x.to(like.dtype)
        return cast(grad_h, hidden), cast(grad_w, weight), cast(grad_b, bias), None, None, None


def _logits_into(z: torch.Tensor, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, temperature: float,
                 compute: torch.dtype) -> torch.Tensor:
    torch.mm(h.to(compute), w.t(), out=z)
    if b is not None:
        z.add_(b)
    if temperature != 1.0:
        z.div_(temperature)
    return z


def selected_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                            temperature: float = 1.0, bias: torch.Tensor | None = None, chunk: int | None = None,
                            impl: str = "auto") -> torch.Tensor:
    """log softmax(W h / T)[target] for rows of hidden [N, H] and targets [N]; differentiable w.r.t. hidden/weight.

    ``impl="liger"`` (the default on CUDA without a bias): liger-kernel's chunked fused linear + cross-entropy.
    ``impl="torch"``: ``chunk`` rows at a time (default: fused_linear_kl's choice, about 4 N H logits per chunk) in
    one reused [chunk, V] buffer; autograd keeps no [chunk, V] tensor: the backward recomputes one chunk's logits
    at a time into the same buffer."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)} for the selected-token log-probs, got {impl!r}")
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but targets has {targets.shape[0]}")
    if chunk is None:
        from zrcore.ops.fused_linear_kl import default_chunk_rows

        chunk = default_chunk_rows(hidden.shape[0], hidden.shape[1], weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    use_liger = impl == "liger" or (impl == "auto" and hidden.is_cuda and bias is None)
    if use_liger:
        if bias is not None:
            raise ValueError("impl='liger' has no LM-head bias; use impl='torch' for a head with a bias")
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        loss = LigerFusedLinearCrossEntropyLoss(reduction="none")
        return -loss(weight, hidden / temperature, targets).float()
    return _ChunkedTokenLogprobs.apply(hidden, weight, bias, targets, float(temperature), int(chunk))


def completion_logprobs(hidden: torch.Tensor, sequences: torch.Tensor, completion_mask: torch.Tensor, head,
                        temperature: float = 1.0) -> torch.Tensor:
    """[B, L] log-probs of the completion tokens (0 elsewhere) from the hidden states [B, L, H]: token t is
    predicted from position t - 1, and only those positions are projected onto the vocabulary by ``head``."""
    target = completion_mask.clone()
    target[:, 0] = False
    rows, cols = target.nonzero(as_tuple=True)
    lp = selected_token_logprobs(hidden[rows, cols - 1], head.weight, sequences[rows, cols], temperature, head.bias)
    return torch.zeros(sequences.shape, dtype=lp.dtype, device=sequences.device).index_put((rows, cols), lp)
