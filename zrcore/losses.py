"""The Z-Reward losses in plain torch: GDSO (teacher), GRPO, RISD and OPD (student), Bradley-Terry.

Equation numbers refer to the Z-Reward paper. Shapes: P prompts, M candidates per prompt, G samples per
candidate, K score bins, B rollouts (sequences), T tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from zrcore import _checks
from zrcore.ops.pairwise_gap import PairwiseGap, pairwise_gap

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
ADVANTAGE_SCALES = ("group", "batch", "none")


def _broadcast_scores(mean: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Human scores [...] against predictions [..., G]: add the sample axis when it is missing."""
    scores = torch.as_tensor(scores, dtype=mean.dtype, device=mean.device)
    if scores.dim() == mean.dim() - 1:
        scores = scores.unsqueeze(-1)
    try:
        torch.broadcast_shapes(scores.shape, mean.shape)
    except RuntimeError as err:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not broadcast to mean {tuple(mean.shape)}") from err
    return scores


def pointwise_reward(mean: torch.Tensor, scores: torch.Tensor, score_range: float) -> torch.Tensor:
    """Eq. 7: r_pt = 1 - |mu - s_hat| / R. ``scores`` may lack the trailing sample axis of ``mean``."""
    _checks.tensor("mean", mean, floating=True)
    _checks.positive("score_range", score_range)
    return 1.0 - (mean - _broadcast_scores(mean, scores)).abs() / score_range


def pointwise_ce(log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: mean over rows of -log q(bin of s_hat), or -sum_k t_k log q_k for a soft target [..., K].

    log_probs [..., K]. target: bin indices (integer) with shape log_probs.shape[:-1] or missing its last
    (sample) axis; or a soft target [..., K] likewise. mask (bool, log_probs.shape[:-1]) drops rows.
    """
    _checks.tensor("log_probs", log_probs, floating=True)
    _checks.tensor("target", target)
    if log_probs.dim() < 1:
        raise ValueError("log_probs must have a trailing bin axis [..., K]")
    rows = log_probs.shape[:-1]
    k = log_probs.shape[-1]
    _checks.same_device(log_probs=log_probs, target=target, mask=mask)
    if target.is_floating_point():
        if target.shape[-1] != k:
            raise ValueError(f"soft target must have K={k} entries in its last dimension, got {target.shape[-1]}")
        if target.dim() == log_probs.dim() - 1:
            target = target.unsqueeze(-2)
        t = target.to(log_probs.dtype).expand(*rows, k)
        per_row = -torch.where(t > 0, t * log_probs, torch.zeros_like(log_probs)).sum(-1)
    else:
        if target.dim() == log_probs.dim() - 2:
            target = target.unsqueeze(-1)
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(f"target bin indices must lie in [0, {k})")
        idx = target.long().expand(*rows)
        per_row = -log_probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    if mask is None:
        return per_row.mean() if per_row.numel() else per_row.sum()
    _checks.bool_mask("mask", mask, rows)
    m = mask.to(per_row.dtype)
    return (per_row * m).sum() / m.sum().clamp_min(1)


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-4, scale: str = "group"
) -> torch.Tensor:
    """Eq. 3: A = (r - mean_group(r)) / (std + eps), per group of the last axis (G samples).

    std uses Bessel's correction over the valid samples (0 for a group with fewer than 2); ``scale="batch"``
    divides by the std of all valid rewards, ``"none"`` does not divide. ``eps`` (Algorithm 1's epsilon, default
    1e-4 as TRL's) bounds the scale of a group whose rewards barely differ: |A| <= |r - mean| / eps. Masked samples,
    and with ``eps=0`` a group of equal rewards (0 / 0), get advantage 0.
    """
    _checks.tensor("rewards", rewards, floating=True)
    if rewards.dim() < 1:
        raise ValueError("rewards must have a trailing group axis [..., G]")
    _checks.choice("scale", scale, ADVANTAGE_SCALES)
    _checks.non_negative("eps", eps)
    valid = torch.ones_like(rewards, dtype=torch.bool) if mask is None else _checks.bool_mask("mask", mask, rewards.shape)
    v = valid.to(rewards.dtype)
    r = rewards.detach() * v
    n = v.sum(-1, keepdim=True)
    group_mean = r.sum(-1, keepdim=True) / n.clamp_min(1)
    centred = (rewards.detach() - group_mean) * v
    if scale == "none":
        return centred
    if scale == "group":
        var = (centred**2).sum(-1, keepdim=True) / (n - 1).clamp_min(1)
        std = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    else:
        total = v.sum()
        all_mean = r.sum() / total.clamp_min(1)
        var = (((rewards.detach() - all_mean) * v) ** 2).sum() / (total - 1).clamp_min(1)
        std = torch.where(total > 1, var.sqrt(), torch.zeros_like(var))
    scale_by = std + eps
    return torch.where(scale_by > 0, centred / torch.where(scale_by > 0, scale_by, torch.ones_like(scale_by)),
                       torch.zeros_like(centred))


def gdso_rewards(
    mean: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_range: float,
    lambda_pt: float = 1.0,
    lambda_pw: float = 1.0,
    mask: torch.Tensor | None = None,
    include_ties: bool = False,
    pairwise: PairwiseGap | None = None,
) -> torch.Tensor:
    """Eq. 13: r = lambda_pt r_pt + lambda_pw r_pw for mean [P, M, G]; a candidate without partners gets
    lambda_pt r_pt alone. Returned without gradient; masked samples get 0. ``pairwise``: the ``pairwise_gap`` of
    these means when the caller has it already (it is not launched again)."""
    with torch.no_grad():
        r_pt = pointwise_reward(mean.detach(), scores, score_range)
        r = lambda_pt * r_pt
        if lambda_pw != 0:
            pw = pairwise if pairwise is not None else pairwise_gap(
                mean.detach(), scores, score_range=score_range, mask=mask, include_ties=include_ties)
            r = r + lambda_pw * pw.reward.to(r.dtype) * pw.has_pair.unsqueeze(-1).to(r.dtype)
        if mask is not None:
            r = r * mask.to(r.dtype)
    return r


def grpo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 4, PPO-clipped token policy gradient with k3 KL to a reference policy (TRL GRPOTrainer semantics).

    ratio = exp(logp - old_logp); l_t = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)
            + beta (exp(ref - logp) - (ref - logp) - 1)
    "grpo": mean over sequences of the per-sequence token mean; "bnpo": sum / number of valid tokens;
    "dr_grpo": sum / (B * max_completion_length); "dapo": sum / num_items_in_batch (valid tokens across all
    processes; defaults to this batch's). old_logps=None means one update per rollout (ratio 1, value-wise).
    """
    _checks.tensor("logps", logps, ndim=2, floating=True)
    b, t = logps.shape
    if old_logps is None:
        old_logps = logps.detach()
    _checks.tensor("old_logps", old_logps, ndim=2, floating=True)
    _checks.shape("old_logps", old_logps, (b, t))
    _checks.tensor("advantages", advantages, ndim=1, floating=True)
    _checks.shape("advantages", advantages, (b,), "one per sequence")
    _checks.bool_mask("mask", mask, (b, t))
    _checks.choice("loss_type", loss_type, LOSS_TYPES)
    _checks.non_negative("beta", beta)
    _checks.non_negative("eps_low", eps_low)
    _checks.non_negative("eps_high", eps_high)
    if ref_logps is not None:
        _checks.tensor("ref_logps", ref_logps, ndim=2, floating=True)
        _checks.shape("ref_logps", ref_logps, (b, t))
    elif beta != 0:
        raise ValueError("ref_logps is required when beta != 0")
    _checks.same_device(logps=logps, old_logps=old_logps, advantages=advantages, mask=mask, ref_logps=ref_logps)
    m = mask.to(logps.dtype)
    adv = advantages.detach().unsqueeze(1)
    ratio = torch.exp(logps - old_logps.detach())
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta != 0:
        delta = ref_logps.detach() - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    total = (per_token * m).sum()
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp_min(1)).mean() if b else total
    elif loss_type == "bnpo":
        loss = total / m.sum().clamp_min(1)
    elif loss_type == "dr_grpo":
        length = t if max_completion_length is None else int(max_completion_length)
        if length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}")
        loss = total / max(b * length, 1)
    else:
        denom = m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=m.dtype)
        loss = total / torch.as_tensor(denom, dtype=m.dtype, device=m.device).clamp_min(1)
    with torch.no_grad():
        n_tok = m.sum().clamp_min(1)
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        metrics = {
            "clip_ratio/low": (low.to(m.dtype) * m).sum() / n_tok,
            "clip_ratio/high": (high.to(m.dtype) * m).sum() / n_tok,
            "clip_ratio/region": ((low | high).to(m.dtype) * m).sum() / n_tok,
            "ratio/mean": (ratio * m).sum() / n_tok,
        }
        if kl is not None:
            metrics["kl"] = (kl * m).sum() / n_tok
    return loss, metrics


class GDSOLoss(NamedTuple):
    total: torch.Tensor  # the sum of ``terms``
    policy: torch.Tensor  # L_GRPO, unweighted
    ce: torch.Tensor  # L_ce, unweighted
    pairwise: torch.Tensor  # L_pw, unweighted
    metrics: dict
    terms: dict  # "policy", "ce", "pairwise": each term times its alpha and its share of the batch


def gdso_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    completion_mask: torch.Tensor,
    mean: torch.Tensor,
    log_probs: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_range: float,
    target: torch.Tensor | None = None,
    sample_mask: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    reward_mean: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    loss_type: str = "grpo",
    lambda_pt: float = 1.0,
    lambda_pw: float = 1.0,
    alpha_pt: float = 1.0,
    alpha_pw: float = 1.0,
    adv_eps: float = 1e-4,
    adv_scale: str = "group",
    include_ties: bool = False,
    max_completion_length: int | None = None,
    share: Callable[[float, str], float] | None = None,
) -> GDSOLoss:
    """Eq. 14: L_GDSO = L_GRPO + alpha_pt L_ce + alpha_pw L_pw for one batch of rollouts.

    Rollouts are ordered (prompt, candidate, sample): logps/old_logps/ref_logps/completion_mask are [P*M*G, T];
    mean [P, M, G] and log_probs [P, M, G, K] are the score distributions read after each rollout (with grad);
    scores [P, M] the human scores; target the CE target (bin indices [P, M] or soft [P, M, K]; required when
    alpha_pt != 0). Rewards (eq. 13) use ``reward_mean`` when given (e.g. scores parsed from sampled text, the
    "reward from text" ablation) and ``mean`` otherwise; advantages are eq. 3 per (prompt, candidate),
    A = (r - mean(r)) / (std(r) + adv_eps) (``group_advantages`` with ``scale=adv_scale``).
    GRPO baseline: lambda_pw = alpha_pt = alpha_pw = 0.

    ``share`` (a batch split over processes or micro-batches): each term is multiplied by ``share(units, term)``
    of its units in this part of the batch (``term``: "policy", "ce" or "pairwise"), so that the sum or average of
    the parts' gradients is the whole batch's gradient. The units: rollouts for the policy term (completion tokens
    for bnpo / dapo), samples for the CE term, prompts with a pair for the pairwise term. ``pairwise_gap`` runs
    once: its rewards feed eq. 13 and its loss the pairwise term.
    """
    _checks.tensor("mean", mean, ndim=3, floating=True)
    p, m, g = mean.shape
    _checks.tensor("log_probs", log_probs, ndim=4, floating=True)
    if tuple(log_probs.shape[:3]) != (p, m, g):
        raise ValueError(f"log_probs must have shape [P, M, G, K] with P, M, G = {(p, m, g)}, got {tuple(log_probs.shape)}")
    _checks.tensor("logps", logps, ndim=2, floating=True)
    if logps.shape[0] != p * m * g:
        raise ValueError(f"logps must have P*M*G = {p * m * g} rows (one per rollout), got {logps.shape[0]}")
    source = mean if reward_mean is None else reward_mean
    if reward_mean is not None:
        _checks.tensor("reward_mean", reward_mean, ndim=3, floating=True)
        _checks.shape("reward_mean", reward_mean, (p, m, g))
    pw_out = (pairwise_gap(mean, scores, score_range=score_range, mask=sample_mask, include_ties=include_ties)
              if alpha_pw != 0 else None)
    rewards = gdso_rewards(source.detach(), scores, score_range=score_range, lambda_pt=lambda_pt,
                           lambda_pw=lambda_pw, mask=sample_mask, include_ties=include_ties,
                           pairwise=pw_out if reward_mean is None else None)
    adv = group_advantages(rewards, mask=sample_mask, eps=adv_eps, scale=adv_scale)
    comp_mask = completion_mask
    if sample_mask is not None:
        comp_mask = completion_mask & sample_mask.reshape(-1, 1)
    policy, metrics = grpo_policy_loss(logps, old_logps, adv.reshape(-1).to(logps.dtype), comp_mask,
                                       ref_logps=ref_logps, beta=beta, eps_low=eps_low, eps_high=eps_high,
                                       loss_type=loss_type, max_completion_length=max_completion_length)
    zero = mean.sum() * 0.0
    if alpha_pt != 0:
        if target is None:
            raise ValueError("target (bin indices [P, M] or soft [P, M, K]) is required when alpha_pt != 0")
        ce = pointwise_ce(log_probs, target, mask=sample_mask)
    else:
        ce = zero
    pw = pw_out.loss if pw_out is not None else zero
    if share is None:
        w_policy = w_ce = w_pw = 1.0
    else:
        policy_units = int(comp_mask.sum()) if loss_type in ("bnpo", "dapo") else p * m * g
        w_policy = share(policy_units, "policy")
        w_ce = share(p * m * g if sample_mask is None else int(sample_mask.sum()), "ce")
        w_pw = share(int(pw_out.has_pair.any(-1).sum()), "pairwise") if pw_out is not None else 1.0
    terms = {"policy": w_policy * policy, "ce": alpha_pt * w_ce * ce, "pairwise": alpha_pw * w_pw * pw}
    total = terms["policy"] + terms["ce"] + terms["pairwise"]
    with torch.no_grad():
        valid = torch.ones_like(rewards, dtype=torch.bool) if sample_mask is None else sample_mask
        metrics = dict(metrics)
        metrics["reward/mean"] = rewards[valid].mean() if valid.any() else rewards.sum() * 0
        metrics["loss/policy"] = policy.detach()
        metrics["loss/ce"] = ce.detach()
        metrics["loss/pairwise"] = pw.detach()
    return GDSOLoss(total, policy, ce, pw, metrics, terms)


def risd_loss(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 15: mean over samples of KL(q_T || q_S) = sum_k q_T,k (log q_T,k - log q_S,k) (0 log 0 = 0)."""
    _checks.tensor("student_log_probs", student_log_probs, floating=True)
    _checks.tensor("teacher_probs", teacher_probs, floating=True)
    if teacher_probs.shape != student_log_probs.shape:
        raise ValueError(f"teacher_probs must have the shape of student_log_probs {tuple(student_log_probs.shape)}, "
                         f"got {tuple(teacher_probs.shape)}")
    _checks.same_device(student_log_probs=student_log_probs, teacher_probs=teacher_probs, mask=mask)
    t = teacher_probs.detach().to(student_log_probs.dtype)
    if t.numel() and (t < 0).any():
        raise ValueError("teacher_probs must be non-negative")
    kl = torch.where(t > 0, t * (torch.log(t.clamp_min(torch.finfo(t.dtype).tiny)) - student_log_probs),
                     torch.zeros_like(t)).sum(-1)
    if mask is None:
        return kl.mean() if kl.numel() else kl.sum()
    _checks.bool_mask("mask", mask, kl.shape)
    w = mask.to(kl.dtype)
    return (kl * w).sum() / w.sum().clamp_min(1)


def opd_advantages(teacher_logps: torch.Tensor, student_logps: torch.Tensor) -> torch.Tensor:
    """Eq. 18: A_t = log pi_T(y_t) - log pi_S_old(y_t), without gradient."""
    _checks.tensor("teacher_logps", teacher_logps, floating=True)
    _checks.tensor("student_logps", student_logps, floating=True)
    if teacher_logps.shape != student_logps.shape:
        raise ValueError(f"teacher_logps {tuple(teacher_logps.shape)} and student_logps "
                         f"{tuple(student_logps.shape)} must have one shape")
    return (teacher_logps - student_logps).detach()


OPD_NORMALIZATIONS = ("trajectory", "token")


def opd_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
             normalize: str = "trajectory") -> torch.Tensor:
    """Eq. 19: for each trajectory b with T_b valid tokens, L_b = -(1/T_b) sum_t A_t log pi_S(y_t); the loss is the
    mean of L_b over trajectories with at least one valid token (``normalize="trajectory"``, the paper's form).
    ``normalize="token"``: -sum_{b,t} A_t log pi_S(y_t) / sum_b T_b, the mean over all valid tokens of the batch,
    which weights long trajectories more."""
    _checks.tensor("logps", logps, ndim=2, floating=True)
    if advantages.shape != logps.shape:
        raise ValueError(f"advantages must have the shape of logps {tuple(logps.shape)}, got {tuple(advantages.shape)}")
    _checks.bool_mask("mask", mask, logps.shape)
    _checks.choice("normalize", normalize, OPD_NORMALIZATIONS)
    m = mask.to(logps.dtype)
    per_token = -(advantages.detach() * logps * m)
    if normalize == "token":
        return per_token.sum() / m.sum().clamp_min(1)
    lengths = m.sum(-1)
    valid = lengths > 0
    per_trajectory = per_token.sum(-1) / lengths.clamp_min(1)
    return (per_trajectory * valid).sum() / valid.sum().clamp_min(1)


def bradley_terry_loss(mean_w: torch.Tensor, mean_l: torch.Tensor) -> torch.Tensor:
    """Eq. 12: mean of -log sigmoid(mu_w - mu_l)."""
    _checks.tensor("mean_w", mean_w, floating=True)
    _checks.tensor("mean_l", mean_l, floating=True)
    if mean_w.shape != mean_l.shape:
        raise ValueError(f"mean_w {tuple(mean_w.shape)} and mean_l {tuple(mean_l.shape)} must have one shape")
    loss = torch.nn.functional.softplus(-(mean_w - mean_l))
    return loss.mean() if loss.numel() else loss.sum()
