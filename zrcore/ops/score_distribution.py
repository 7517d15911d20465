"""Score distribution: softmax over the K score-token rows of the LM head, with its mean and variance.

    z = (W_S h + b_S) / T          W_S = weight[token_ids]  ([K, H]),  never the full [N, V] logits
    q = softmax(z),  mu = sum_k s_k q_k,  var = sum_k (s_k - mu)^2 q_k

Backward (per row, g_l = d log_q, g_mu = d mu, g_var = d var):
    d q_k   = g_mu s_k + g_var (s_k - mu)^2                       (mu's own dependence cancels: sum_k (s_k - mu) q_k = 0)
    d z_k   = [g_l_k - q_k sum_j g_l_j] / T + q_k (d q_k - sum_j q_j d q_j) / T
    d h     = d z W_S,   d W_S = d z^T h,   d b_S = sum_n d z
"""

from __future__ import annotations

import torch

from zrcore import _checks
from zrcore.bins import ScoreBins, ScoreDistribution
from zrcore.ops._dispatch import resolve_impl


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
        if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= weight.shape[0]):
            raise ValueError(f"token_ids must lie in [0, {weight.shape[0]}) (rows of weight)")
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
    v, _ = validate_score_inputs(hidden, weight, token_ids, values, bias, temperature)
    which = resolve_impl(impl, hidden, weight)
    if which == "torch":
        return score_distribution_torch(hidden, weight, token_ids, v, bias, temperature)
    from zrcore.ops import _score_distribution_triton as tk

    return tk.score_distribution_triton(hidden, weight, token_ids, v, bias, temperature)


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
    if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= logits.shape[-1]):
        raise ValueError(f"token_ids must lie in [0, {logits.shape[-1]}) (the vocabulary of logits)")
    _checks.positive("temperature", temperature)
    _checks.same_device(logits=logits, token_ids=token_ids)
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.index_select(-1, token_ids).to(compute) / temperature
    return distribution_from_score_logits(z, v.to(compute))


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
