"""Token log-probabilities of sampled completions without the [B, T, V] logits tensor.

On CUDA this uses liger-kernel's chunked fused linear + cross-entropy (``LigerFusedLinearCrossEntropyLoss`` with
reduction="none" gives -log p per token, never materialising the full logits); elsewhere a torch loop projects
chunks of the selected positions onto the vocabulary, each chunk recomputed in the backward (one [chunk, V] block
alive at a time).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


IMPLS = ("auto", "liger", "torch")


def _chunk_logprobs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    logits = (h @ weight.t()).float()
    if bias is not None:
        logits = logits + bias.float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)


def selected_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                            temperature: float = 1.0, bias: torch.Tensor | None = None, chunk: int = 1024,
                            impl: str = "auto") -> torch.Tensor:
    """log softmax(W h / T)[target] for rows of hidden [N, H] and targets [N]; differentiable w.r.t. hidden/weight.

    ``impl="liger"`` (the default on CUDA without a bias): liger-kernel's chunked fused linear + cross-entropy.
    ``impl="torch"``: ``chunk`` rows at a time, each chunk under ``torch.utils.checkpoint``, so autograd keeps no
    [chunk, V] tensor: the backward recomputes one chunk's logits at a time."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)} for the selected-token log-probs, got {impl!r}")
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but targets has {targets.shape[0]}")
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
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    out = []
    for start in range(0, hidden.shape[0], chunk):
        args = (hidden[start:start + chunk], weight, bias, targets[start:start + chunk], temperature)
        out.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False) if grad else _chunk_logprobs(*args))
    return torch.cat(out)


def completion_logprobs(hidden: torch.Tensor, sequences: torch.Tensor, completion_mask: torch.Tensor, head,
                        temperature: float = 1.0) -> torch.Tensor:
    """[B, L] log-probs of the completion tokens (0 elsewhere) from the hidden states [B, L, H]: token t is
    predicted from position t - 1, and only those positions are projected onto the vocabulary by ``head``."""
    target = completion_mask.clone()
    target[:, 0] = False
    rows, cols = target.nonzero(as_tuple=True)
    lp = selected_token_logprobs(hidden[rows, cols - 1], head.weight, sequences[rows, cols], temperature, head.bias)
    return torch.zeros(sequences.shape, dtype=lp.dtype, device=sequences.device).index_put((rows, cols), lp)
