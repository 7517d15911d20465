"""Pairwise gap (GDSO eq. 10-11, generalised to M >= 2 candidates of one prompt with G samples each).

    D[p,m,i,m',k] = (mu[p,m,i] - mu[p,m',k]) - (s[p,m] - s[p,m'])
    pairs of prompt p: ordered (m, m'), m != m', both with >= 1 valid sample, s[m] != s[m'] (unless include_ties)
    r_pw[p,m,i]  = 1 - mean_{m' partner of m} (1 / (G_m' R)) sum_k |D[p,m,i,m',k]|          (eq. 10)
    L_p          = mean_{(m,m') pairs} (1 / (G_m G_m' R)) sum_{i,k} |D[p,m,i,m',k]|            (eq. 11)
    loss         = mean of L_p over prompts with at least one pair (0 when there is none)

G_m counts the valid samples of candidate m under ``mask``. ``reward`` is 0 where a sample is invalid or its
candidate has no partner (``has_pair`` False). d loss / d mu[p,m,i] = sum over pairs of sign(D) weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from zrcore import _checks
from zrcore.ops._dispatch import (
    HAS_TRITON,
    define_op,
    resolve_impl,
    ticket_counters,
    tl,
    triton,
    workspace,
)


class PairwiseGap(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable w.r.t. mean
    reward: torch.Tensor  # [P, M, G], no grad
    has_pair: torch.Tensor  # [P, M] bool


def validate_pairwise_inputs(mean, scores, score_range, mask):
    _checks.tensor("mean", mean, ndim=3, floating=True)
    _checks.tensor("scores", scores, ndim=2)
    if tuple(scores.shape) != tuple(mean.shape[:2]):
        raise ValueError(f"scores must have shape [P, M] = {tuple(mean.shape[:2])}, got {tuple(scores.shape)}")
    _checks.positive("score_range", score_range)
    _checks.bool_mask("mask", mask, mean.shape)
    _checks.same_device(mean=mean, scores=scores, mask=mask)


def _validate(mean, scores, score_range, mask, impl) -> str:
    validate_pairwise_inputs(mean, scores, score_range, mask)
    return resolve_impl("pairwise_gap", impl, mean.dtype, mean)


_SIGNATURES = _checks.SignatureCache()


def pair_structure(scores: torch.Tensor, valid: torch.Tensor, include_ties: bool):
    """counts [P,M] of valid samples, pair indicator [P,M,M] (ordered, m != m')."""
    counts = valid.sum(-1)
    m = scores.shape[1]
    alive = counts > 0
    pair = alive.unsqueeze(2) & alive.unsqueeze(1)
    pair &= ~torch.eye(m, dtype=torch.bool, device=scores.device)
    if not include_ties:
        pair &= scores.unsqueeze(2) != scores.unsqueeze(1)
    return counts, pair


def _partner_sums(a: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor):
    """With a = mu - s [P, M, G]: for every sample (m, i) and partner candidate m', sum_k v_k |a_mi - a_m'k| and
    sum_k v_k sign(a_mi - a_m'k), both [P, M, G, M'], from the partner's sorted values and prefix sums
    (O(P M^2 G log G) work, no [P, M, G, M, G] tensor): with L = #(a_m'k < x), E = #(a_m'k <= x) and S the prefix
    sums, sum_k |x - a_m'k| = (L x - S_L) + (S_n - S_E) - (n - E) x and sum_k sign = L - (n - E)."""
    p, m, g = a.shape
    b = a.masked_fill(~valid, float("inf")).sort(-1).values  # invalid samples sort last
    prefix = torch.nn.functional.pad(b.masked_fill(~torch.isfinite(b), 0).cumsum(-1), (1, 0))  # [P, M', G + 1]
    x = a.reshape(p, 1, m * g).expand(p, m, m * g).contiguous()  # every (m, i), once per partner m'
    n = counts.unsqueeze(-1)
    lt = torch.searchsorted(b, x).clamp_max(n)
    le = torch.searchsorted(b, x, right=True).clamp_max(n)
    total = prefix.gather(-1, n)
    gt = n - le
    abs_sum = (lt * x - prefix.gather(-1, lt)) + (total - prefix.gather(-1, le)) - gt * x
    sign_sum = (lt - gt).to(a.dtype)
    to_rows = lambda t: t.view(p, m, m, g).permute(0, 2, 3, 1)  # [P, M', M, G] -> [P, M, G, M']
    return to_rows(abs_sum), to_rows(sign_sum)


def pairwise_forward_sorted(mean, scores, mask, score_range, include_ties):
    """The op in torch ops for any device (the CPU path of impl="auto"), outputs as the Triton launcher's:
    (out = [loss, 1 / #prompts with pairs], reward, has_pair, grad_weights) with grad_weights[p,m,i] = d (sum_p L_p) / d mu[p,m,i]
    = 2 v_i sum_{m'} w[p,m,m'] sum_k v_k sign(D[p,m,i,m',k]), w = pair / (G_m G_m' R #pairs_p) (pairs are
    symmetric, so the partner side doubles the own side). D = a_mi - a_m'k with a = mu - s; no graph is built."""
    compute = torch.float64 if mean.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        mu, s = mean.to(compute), scores.to(compute)
        valid = torch.ones_like(mu, dtype=torch.bool) if mask is None else mask
        counts, pair = pair_structure(s, valid, include_ties)
        row, sign_sum = _partner_sums(mu - s.unsqueeze(-1), valid, counts)
        vf = valid.to(compute)
        cnt = counts.to(compute).clamp_min(1)
        pf = pair.to(compute)
        n_partners = pf.sum(-1)
        has_pair = n_partners > 0
        per_partner = row / (cnt[:, None, None, :] * score_range)
        mean_gap = (per_partner * pf[:, :, None, :]).sum(-1) / n_partners.clamp_min(1)[:, :, None]
        reward = torch.where(has_pair[:, :, None] & valid, 1.0 - mean_gap, torch.zeros_like(mean_gap))
        n_pairs = pf.sum((1, 2))
        w = pf / (cnt[:, :, None] * cnt[:, None, :] * score_range * n_pairs.clamp_min(1)[:, None, None])
        per_prompt = ((row * vf[..., None]).sum(2) * w).sum((1, 2))
        n_prompts = (n_pairs > 0).sum().to(compute)
        inv = torch.where(n_prompts > 0, 1.0 / n_prompts.clamp_min(1), torch.zeros_like(n_prompts))
        out = torch.stack([per_prompt.sum() * inv, inv])
        grad_weights = 2.0 * vf * (sign_sum * w[:, :, None, :]).sum(-1)
    return out, reward, has_pair, grad_weights


# ----------------------------------------------------------------------------------------------------------------
# Triton: one program per prompt walks the (M*G) x (M*G) gap block in tiles held in registers; it writes the
# reward, has_pair, the per-prompt loss and the per-sample gradient weights 2 sum_b sign(D_ab) w_ab / (pairs of p).
# The program that finishes last (an atomic ticket, reset by that program) reduces the per-prompt losses in prompt
# order (deterministic) and writes 1 / #prompts with pairs, so the forward is one launch and the backward is the
# product of the saved weights with that scale and the loss gradient (no kernel of its own).
# ----------------------------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _candidate_stats(mask_ptr, s_ptr, p, idx, MG, G, HAS_MASK: tl.constexpr, BLOCK_G: tl.constexpr):
        """For flat sample indices idx of prompt p: candidate id, its score, sample validity, valid count."""
        inb = idx < MG
        cand = idx // G
        score = tl.load(s_ptr + p * (MG // G) + cand, mask=inb, other=0.0).to(tl.float32)
        if HAS_MASK:
            valid = tl.load(mask_ptr + p * MG + idx, mask=inb, other=0).to(tl.int1)
            gs = tl.arange(0, BLOCK_G)
            rows = tl.load(mask_ptr + p * MG + cand[:, None] * G + gs[None, :],
                           mask=inb[:, None] & (gs[None, :] < G), other=0).to(tl.float32)
            count = tl.sum(rows, axis=1)
        else:
            valid = inb
            count = tl.where(inb, G * 1.0, 0.0)
        return cand, score, valid & inb, count

    @triton.jit
    def _pairwise_fwd_kernel(mu_ptr, s_ptr, mask_ptr, reward_ptr, has_ptr, gw_ptr, work_ptr, ticket_ptr, out_ptr,
                             P, MG, G, inv_r, HAS_MASK: tl.constexpr, TIES: tl.constexpr, BLOCK_A: tl.constexpr,
                             BLOCK_B: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_P: tl.constexpr):
        # work_ptr: [2, P] (per-prompt loss, per-prompt pair weight); out_ptr: [2] (loss, 1 / #prompts with pairs)
        p = tl.program_id(0).to(tl.int64)
        loss_acc = 0.0
        pair_acc = 0.0
        for a0 in range(0, MG, BLOCK_A):
            ia = a0 + tl.arange(0, BLOCK_A)
            cand_a, s_a, valid_a, cnt_a = _candidate_stats(mask_ptr, s_ptr, p, ia, MG, G, HAS_MASK, BLOCK_G)
            mu_a = tl.load(mu_ptr + p * MG + ia, mask=ia < MG, other=0.0).to(tl.float32)
            abs_sum = tl.zeros([BLOCK_A], dtype=tl.float32)
            sign_sum = tl.zeros([BLOCK_A], dtype=tl.float32)
            partners = tl.zeros([BLOCK_A], dtype=tl.float32)
            for b0 in range(0, MG, BLOCK_B):
                ib = b0 + tl.arange(0, BLOCK_B)
                cand_b, s_b, valid_b, cnt_b = _candidate_stats(mask_ptr, s_ptr, p, ib, MG, G, HAS_MASK, BLOCK_G)
                mu_b = tl.load(mu_ptr + p * MG + ib, mask=ib < MG, other=0.0).to(tl.float32)
                pair = (cand_a[:, None] != cand_b[None, :]) & (cnt_a[:, None] > 0) & valid_b[None, :]
                if not TIES:
                    pair = pair & (s_a[:, None] != s_b[None, :])
                w = tl.where(pair, 1.0 / tl.maximum(cnt_b, 1.0)[None, :], 0.0)
                gap = (mu_a[:, None] - mu_b[None, :]) - (s_a[:, None] - s_b[None, :])
                abs_sum += tl.sum(tl.abs(gap) * w, axis=1)
                sgn = tl.where(gap > 0, 1.0, tl.where(gap < 0, -1.0, 0.0))
                sign_sum += tl.sum(sgn * w, axis=1)
                partners += tl.sum(w, axis=1)
            row_w = tl.where(valid_a, 1.0 / tl.maximum(cnt_a, 1.0), 0.0)
            has = partners > 0.5
            reward = tl.where(has & valid_a, 1.0 - abs_sum * inv_r / tl.maximum(partners, 1.0), 0.0)
            tl.store(reward_ptr + p * MG + ia, reward, mask=ia < MG)
            tl.store(gw_ptr + p * MG + ia, 2.0 * row_w * sign_sum * inv_r, mask=ia < MG)
            first = (ia % G == 0) & (ia < MG)
            tl.store(has_ptr + p * (MG // G) + cand_a, has.to(tl.int8), mask=first)
            loss_acc += tl.sum(row_w * abs_sum, axis=0) * inv_r
            pair_acc += tl.sum(row_w * partners, axis=0)
        # the prompt's weights are divided by its pair weight, known only now (same layout: each thread rescales
        # what it stored)
        tl.debug_barrier()
        inv_pairs = 1.0 / tl.maximum(pair_acc, 1.0)
        for a0 in range(0, MG, BLOCK_A):
            ia = a0 + tl.arange(0, BLOCK_A)
            gw = tl.load(gw_ptr + p * MG + ia, mask=ia < MG, other=0.0)
            tl.store(gw_ptr + p * MG + ia, gw * inv_pairs, mask=ia < MG)
        tl.store(work_ptr + p, loss_acc * inv_pairs)
        tl.store(work_ptr + P + p, pair_acc)
        # every warp's stores precede the ticket; acq_rel makes them visible to the last program, which sees all
        tl.debug_barrier()
        ticket = tl.atomic_add(ticket_ptr, 1, sem="acq_rel")
        if ticket == P - 1:
            total = 0.0
            count = 0.0
            for p0 in range(0, P, BLOCK_P):
                idx = p0 + tl.arange(0, BLOCK_P)
                m = idx < P
                lp = tl.load(work_ptr + idx, mask=m, other=0.0, volatile=True)
                n = tl.load(work_ptr + P + idx, mask=m, other=0.0, volatile=True)
                has = n > 0.5
                total += tl.sum(tl.where(has, lp, 0.0), axis=0)
                count += tl.sum(tl.where(has, 1.0, 0.0), axis=0)
            inv_count = 1.0 / tl.maximum(count, 1.0)
            tl.store(out_ptr, total * inv_count)
            tl.store(out_ptr + 1, inv_count)
            tl.atomic_xchg(ticket_ptr, 0)  # ready for the next launch on this stream


def _pairwise_blocks(mg: int, g: int):
    block = min(64, max(16, triton.next_power_of_2(mg)))
    return block, block, max(2, triton.next_power_of_2(g))


def pairwise_forward_launch(mean, scores, mask, score_range, include_ties):
    """One launch. Returns (out, reward, has_pair, grad_weights): out = [loss, 1 / #prompts with pairs] (fp32),
    grad_weights [P, M, G] = d loss / d mean times #prompts with pairs."""
    p, m, g = mean.shape
    dev = mean.device
    reward = torch.empty(p, m, g, dtype=torch.float32, device=dev)
    has = torch.empty(p, m, dtype=torch.int8, device=dev)
    gw = torch.empty(p, m, g, dtype=torch.float32, device=dev)
    out = torch.empty(2, dtype=torch.float32, device=dev)
    if p == 0 or m * g == 0:
        has.zero_(), reward.zero_(), gw.zero_(), out.zero_()
        return out, reward, has.view(torch.bool), gw
    work = workspace(dev, "pairwise_work", 2 * p)
    ba, bb, bg = _pairwise_blocks(m * g, g)
    mu = mean.contiguous()
    s = scores.contiguous() if scores.dtype == torch.float32 else scores.to(torch.float32).contiguous()
    mk = mask.contiguous() if mask is not None else mu
    _pairwise_fwd_kernel[(p,)](mu, s, mk, reward, has, gw, work, ticket_counters(dev, 1), out, p, m * g, g,
                               1.0 / score_range, HAS_MASK=mask is not None, TIES=include_ties, BLOCK_A=ba,
                               BLOCK_B=bb, BLOCK_G=bg, BLOCK_P=1024)
    return out, reward, has.view(torch.bool), gw


FORWARDS = {"torch": pairwise_forward_sorted}
if HAS_TRITON:
    FORWARDS["triton"] = pairwise_forward_launch


def pairwise_forward(mean: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor | None, score_range: float,
                     include_ties: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out = [loss, 1 / #prompts with pairs], reward, has_pair, grad_weights) from the forward of ``backend``
    ("triton": the kernel; "torch": sorted partners and prefix sums in torch ops)."""
    out, reward, has, gw = FORWARDS[backend](mean, scores, mask, score_range, include_ties)
    return out, reward, has, gw


def _pairwise_fake(mean, scores, mask, score_range, include_ties, backend):
    p, m, g = mean.shape
    f = torch.float64 if backend == "torch" and mean.dtype == torch.float64 else torch.float32
    return (mean.new_empty(2, dtype=f), mean.new_empty(p, m, g, dtype=f), mean.new_empty(p, m, dtype=torch.bool),
            mean.new_empty(p, m, g, dtype=f))


def _pairwise_setup_context(ctx, inputs, output):
    out, reward, has, gw = output
    ctx.set_materialize_grads(False)  # no zero-filled gradients for reward, has_pair and grad_weights
    ctx.mark_non_differentiable(reward, has, gw)
    ctx.save_for_backward(gw, out)
    ctx.mean_dtype = inputs[0].dtype


def _pairwise_backward(ctx, grad_out, *_):
    """d loss / d mean = grad_weights * (grad_loss / #prompts with pairs): two elementwise ops, no kernel."""
    if grad_out is None:
        return None, None, None, None, None, None
    gw, out = ctx.saved_tensors
    return (gw * (grad_out[0] * out[1])).to(ctx.mean_dtype), None, None, None, None, None


_pairwise = define_op("pairwise_gap", pairwise_forward, _pairwise_fake, setup_context=_pairwise_setup_context,
                      backward=_pairwise_backward)


def pairwise_gap(
    mean: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_range: float,
    mask: torch.Tensor | None = None,
    include_ties: bool = False,
    impl: str = "auto",
) -> PairwiseGap:
    """GDSO pairwise loss and rewards for P prompts x M candidates x G samples (see module docstring).

    mean [P, M, G] (expected scores, differentiable), scores [P, M] human scores, mask [P, M, G] bool (True =
    valid sample). Returns PairwiseGap(loss scalar, reward [P, M, G] fp32 no grad, has_pair [P, M] bool).

    ``impl="auto"``: the Triton kernel on CUDA, the torch path elsewhere; ``"triton"`` forces the kernel;
    ``"torch"``: ``pairwise_forward_sorted`` (torch ops: partners sorted once, prefix sums, no gap tensor). Both
    are one registered op with one backward.
    """
    backend = _SIGNATURES.get(_checks.signature(mean, scores, mask, score_range, impl),
                              lambda: _validate(mean, scores, score_range, mask, impl))
    _checks.finite_on_host("scores", scores)  # a NaN score would give a NaN loss (a value check: per tensor version)
    args = (mean, scores, mask, float(score_range), bool(include_ties), backend)
    out, reward, has_pair, _ = _pairwise(*args)
    return PairwiseGap(out[0], reward, has_pair)
