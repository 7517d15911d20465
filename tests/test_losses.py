import math

import pytest
import torch

from tests.reference import pairwise_gap_loops
from zrcore import losses

D = torch.float64


def test_pointwise_reward_eq7(gen):
    mean = 1 + 4 * torch.rand(3, 2, 5, generator=gen, dtype=D)
    scores = 1 + 4 * torch.rand(3, 2, generator=gen, dtype=D)
    r = losses.pointwise_reward(mean, scores, 4.0)
    for p in range(3):
        for m in range(2):
            for i in range(5):
                assert math.isclose(float(r[p, m, i]), 1 - abs(float(mean[p, m, i] - scores[p, m])) / 4, abs_tol=1e-14)


def _ce_loop(log_probs, target):
    rows = log_probs.reshape(-1, log_probs.shape[-1])
    if target.is_floating_point():
        t = target.reshape(-1, log_probs.shape[-1])
        return sum(-(t[r] * rows[r]).sum() for r in range(rows.shape[0])) / rows.shape[0]
    t = target.reshape(-1)
    return sum(-rows[r, t[r]] for r in range(rows.shape[0])) / rows.shape[0]


def test_pointwise_ce_hard_and_soft(gen):
    lp = torch.log_softmax(torch.randn(4, 3, 9, generator=gen, dtype=D), -1).requires_grad_()
    idx = torch.randint(0, 9, (4, 3), generator=gen)
    torch.testing.assert_close(losses.pointwise_ce(lp, idx), _ce_loop(lp, idx))
    # target without the sample axis broadcasts over samples
    idx_pm = torch.randint(0, 9, (4,), generator=gen)
    torch.testing.assert_close(losses.pointwise_ce(lp, idx_pm), _ce_loop(lp, idx_pm[:, None].expand(4, 3)))
    soft = torch.softmax(torch.randn(4, 3, 9, generator=gen, dtype=D), -1)
    torch.testing.assert_close(losses.pointwise_ce(lp, soft), _ce_loop(lp, soft))
    assert torch.autograd.gradcheck(lambda x: losses.pointwise_ce(x, idx), (lp,))
    assert torch.autograd.gradcheck(lambda x: losses.pointwise_ce(x, soft), (lp,))


def test_pointwise_ce_mask_and_bad_target(gen):
    lp = torch.log_softmax(torch.randn(2, 3, 9, generator=gen, dtype=D), -1)
    idx = torch.randint(0, 9, (2, 3), generator=gen)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    expected = -(lp[0, 0, idx[0, 0]] + lp[0, 2, idx[0, 2]]) / 2
    torch.testing.assert_close(losses.pointwise_ce(lp, idx, mask=mask), expected)
    with pytest.raises(ValueError, match="target"):
        losses.pointwise_ce(lp, torch.full((2, 3), 9))
    with pytest.raises(ValueError, match="soft target"):
        losses.pointwise_ce(lp, torch.rand(2, 3, 5, dtype=D))


def _adv_loop(r, valid, eps):
    out = torch.zeros_like(r)
    for idx in range(r.shape[0]):
        vals = [float(r[idx, j]) for j in range(r.shape[1]) if valid[idx, j]]
        n = len(vals)
        mu = sum(vals) / n if n else 0.0
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        for j in range(r.shape[1]):
            if valid[idx, j]:
                out[idx, j] = (float(r[idx, j]) - mu) / (sd + eps)
    return out


def test_group_advantages_eq3(gen):
    r = torch.rand(6, 5, generator=gen, dtype=D)
    valid = torch.rand(6, 5, generator=gen) > 0.3
    valid[0] = False  # an empty group
    valid[1] = torch.tensor([True, False, False, False, False])  # a group of one
    torch.testing.assert_close(losses.group_advantages(r, valid), _adv_loop(r, valid, 1e-4))
    torch.testing.assert_close(losses.group_advantages(r), _adv_loop(r, torch.ones_like(valid), 1e-4))


def test_group_advantages_edge_cases():
    a = losses.group_advantages(torch.rand(4, 1, dtype=D))  # G = 1
    assert torch.equal(a, torch.zeros(4, 1, dtype=D))
    a = losses.group_advantages(torch.full((3, 6), 0.7, dtype=D))  # all equal: 0 up to the rounding of the mean
    assert torch.isfinite(a).all() and a.abs().max() < 1e-9
    r = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=D)
    batch = losses.group_advantages(r, scale="batch", eps=0.0)
    torch.testing.assert_close(batch, (r - r.mean(-1, keepdim=True)) / r.std())
    torch.testing.assert_close(losses.group_advantages(r, scale="none"), r - r.mean(-1, keepdim=True))
    with pytest.raises(ValueError, match="scale"):
        losses.group_advantages(r, scale="global")


def test_paper_eq10_eq11_two_candidates():
    # M = 2, G = 2, R = 4: winner w (score 4.0) and loser l (score 2.5)
    mean = torch.tensor([[[3.5, 4.5], [2.0, 3.0]]], dtype=D)
    scores = torch.tensor([[4.0, 2.5]], dtype=D)
    # D_ik = (mu_w,i - mu_l,k) - 1.5: i=0: (1.5-1.5, 0.5-1.5) -> |0|,|-1|; i=1: (2.5-1.5, 1.5-1.5) -> 1, 0
    pw = losses.pairwise_gap(mean, scores, score_range=4.0)
    torch.testing.assert_close(pw.loss, torch.tensor((0 + 1 + 1 + 0) / (2 * 2 * 4.0), dtype=D))
    expected_w = torch.tensor([1 - (0 + 1) / (2 * 4.0), 1 - (1 + 0) / (2 * 4.0)], dtype=D)
    torch.testing.assert_close(pw.reward[0, 0].double(), expected_w)
    # loser j: D_jk from the loser's side: (mu_l,j - mu_w,k) + 1.5
    expected_l = torch.tensor([1 - (0 + 1) / 8.0, 1 - (1 + 0) / 8.0], dtype=D)
    torch.testing.assert_close(pw.reward[0, 1].double(), expected_l)
    r = losses.gdso_rewards(mean, scores, score_range=4.0, lambda_pt=1.0, lambda_pw=0.5)
    r_pt = 1 - (mean - scores[..., None]).abs() / 4.0
    torch.testing.assert_close(r, r_pt + 0.5 * torch.stack([expected_w, expected_l])[None])


def test_gdso_rewards_without_partner_uses_pointwise(gen):
    mean = 1 + 4 * torch.rand(2, 3, 4, generator=gen, dtype=D)
    scores = torch.tensor([[3.0, 3.0, 3.0], [2.0, 4.0, 4.0]], dtype=D)
    r = losses.gdso_rewards(mean, scores, score_range=4.0, lambda_pt=0.7, lambda_pw=1.0)
    _, reward, has_pair = pairwise_gap_loops(mean, scores, 4.0)
    r_pt = 1 - (mean - scores[..., None]).abs() / 4.0
    assert not has_pair[0].any() and has_pair[1].all()
    torch.testing.assert_close(r[0], 0.7 * r_pt[0])
    torch.testing.assert_close(r[1], 0.7 * r_pt[1] + reward[1])


def _trl_grpo_reference(logps, old, adv, mask, ref, beta, eps_low, eps_high, loss_type, max_len=None):
    """Straightforward per-token implementation of TRL GRPOTrainer's loss."""
    b, t = logps.shape
    per_tok = [[None] * t for _ in range(b)]
    for i in range(b):
        for j in range(t):
            ratio = torch.exp(logps[i, j] - old[i, j])
            clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
            loss = -torch.minimum(ratio * adv[i], clipped * adv[i])
            if beta != 0:
                x = ref[i, j] - logps[i, j]
                loss = loss + beta * (torch.exp(x) - x - 1)
            per_tok[i][j] = loss
    if loss_type == "grpo":
        seq = []
        for i in range(b):
            toks = [per_tok[i][j] for j in range(t) if mask[i, j]]
            seq.append(sum(toks) / max(len(toks), 1) if toks else logps.sum() * 0)
        return sum(seq) / b
    total = sum(per_tok[i][j] for i in range(b) for j in range(t) if mask[i, j])
    n_tok = int(mask.sum())
    if loss_type in ("bnpo", "dapo"):
        return total / max(n_tok, 1)
    return total / (b * (max_len or t))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_policy_loss_matches_trl_formulas(gen, loss_type, beta):
    b, t = 5, 7
    logps = (-torch.rand(b, t, generator=gen, dtype=D) * 3).requires_grad_()
    old = logps.detach() + 0.4 * torch.randn(b, t, generator=gen, dtype=D)  # ratios outside the clip range too
    ref = logps.detach() + 0.3 * torch.randn(b, t, generator=gen, dtype=D)
    adv = torch.randn(b, generator=gen, dtype=D)
    mask = torch.rand(b, t, generator=gen) > 0.3
    mask[0] = False
    mask[1, 0] = True
    loss, metrics = losses.grpo_policy_loss(logps, old, adv, mask, ref_logps=ref, beta=beta, eps_low=0.2,
                                            eps_high=0.28, loss_type=loss_type, max_completion_length=9)
    expected = _trl_grpo_reference(logps, old, adv, mask, ref, beta, 0.2, 0.28, loss_type, max_len=9)
    torch.testing.assert_close(loss, expected)
    g1 = torch.autograd.grad(loss, logps)[0]
    g2 = torch.autograd.grad(expected, logps)[0]
    torch.testing.assert_close(g1, g2)
    assert 0 <= float(metrics["clip_ratio/region"]) <= 1
    f = lambda x: losses.grpo_policy_loss(x, old, adv, mask, ref_logps=ref, beta=beta, loss_type=loss_type)[0]
    assert torch.autograd.gradcheck(f, (logps,))


def test_grpo_policy_loss_bad_input():
    logps = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        losses.grpo_policy_loss(logps, None, torch.zeros(3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        losses.grpo_policy_loss(logps, None, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="ref_logps"):
        losses.grpo_policy_loss(logps, None, torch.zeros(2), torch.ones(2, 3, dtype=torch.bool), beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        losses.grpo_policy_loss(logps, None, torch.zeros(2), torch.ones(2, 3, dtype=torch.bool), loss_type="ppo")


def test_gdso_loss_total_is_sum_of_parts(gen):
    p, m, g, t, k = 2, 3, 4, 6, 9
    logits = torch.randn(p, m, g, k, generator=gen, dtype=D, requires_grad=True)
    lp = torch.log_softmax(logits, -1)
    values = torch.arange(1.0, 5.01, 0.5, dtype=D)
    mean = (lp.exp() * values).sum(-1)
    scores = torch.tensor([[4.0, 2.5, 3.0], [3.0, 3.0, 1.5]], dtype=D)
    target = ((scores - 1) / 0.5).round().long()
    logps = (-torch.rand(p * m * g, t, generator=gen, dtype=D)).requires_grad_()
    cmask = torch.rand(p * m * g, t, generator=gen) > 0.2
    sample_mask = torch.rand(p, m, g, generator=gen) > 0.2
    out = losses.gdso_loss(logps, None, cmask, mean, lp, scores, score_range=4.0, target=target,
                           sample_mask=sample_mask, alpha_pt=0.3, alpha_pw=0.6, lambda_pw=0.5)
    rewards = losses.gdso_rewards(mean, scores, score_range=4.0, lambda_pw=0.5, mask=sample_mask)
    adv = losses.group_advantages(rewards, mask=sample_mask)
    policy, _ = losses.grpo_policy_loss(logps, None, adv.reshape(-1), cmask & sample_mask.reshape(-1, 1))
    ce = losses.pointwise_ce(lp, target, mask=sample_mask)
    pw = losses.pairwise_gap(mean, scores, score_range=4.0, mask=sample_mask).loss
    torch.testing.assert_close(out.total, policy + 0.3 * ce + 0.6 * pw)
    out.total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # GRPO baseline: no pairwise reward, no direct supervision
    base = losses.gdso_loss(logps, None, cmask, mean, lp, scores, score_range=4.0, lambda_pw=0.0, alpha_pt=0.0,
                            alpha_pw=0.0)
    torch.testing.assert_close(base.total, base.policy)
    with pytest.raises(ValueError, match="target"):
        losses.gdso_loss(logps, None, cmask, mean, lp, scores, score_range=4.0)


def test_gdso_loss_launches_pairwise_gap_once_and_weighs_terms_by_share(gen, monkeypatch):
    """One pairwise_gap per loss (its rewards feed eq. 13, its loss the pairwise term); with ``share`` each term is
    scaled by share(its units) and the total is the sum of the scaled terms."""
    p, m, g, t, k = 2, 3, 4, 5, 9
    lp = torch.log_softmax(torch.randn(p, m, g, k, generator=gen, dtype=D), -1).requires_grad_()
    mean = (lp.exp() * torch.arange(1.0, 5.01, 0.5, dtype=D)).sum(-1)
    scores = torch.tensor([[4.0, 2.5, 3.0], [3.0, 3.0, 3.0]], dtype=D)  # the second prompt has no pair
    target = ((scores - 1) / 0.5).round().long()
    logps = (-torch.rand(p * m * g, t, generator=gen, dtype=D)).requires_grad_()
    cmask = torch.rand(p * m * g, t, generator=gen) > 0.2
    calls, real = [], losses.pairwise_gap
    monkeypatch.setattr(losses, "pairwise_gap", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    plain = losses.gdso_loss(logps, None, cmask, mean, lp, scores, score_range=4.0, target=target, alpha_pt=0.3,
                             alpha_pw=0.6)
    assert len(calls) == 1
    units = []
    share = lambda n, term: units.append((term, n)) or 0.5 * n  # noqa: E731
    out = losses.gdso_loss(logps, None, cmask, mean, lp, scores, score_range=4.0, target=target, alpha_pt=0.3,
                           alpha_pw=0.6, share=share)
    assert units == [("policy", p * m * g), ("ce", p * m * g), ("pairwise", 1)]  # rollouts, samples, prompts w. pair
    torch.testing.assert_close(out.terms["policy"], 0.5 * p * m * g * plain.policy)
    torch.testing.assert_close(out.terms["ce"], 0.3 * 0.5 * p * m * g * plain.ce)
    torch.testing.assert_close(out.terms["pairwise"], 0.6 * 0.5 * plain.pairwise)
    torch.testing.assert_close(out.total, sum(out.terms.values()))
    torch.testing.assert_close(plain.total, plain.policy + 0.3 * plain.ce + 0.6 * plain.pairwise)


def test_risd_loss_eq15(gen):
    s = torch.log_softmax(torch.randn(7, 9, generator=gen, dtype=D), -1).requires_grad_()
    t = torch.softmax(torch.randn(7, 9, generator=gen, dtype=D), -1)
    t[0] = 0.0
    t[0, 3] = 1.0  # a one-hot teacher (0 log 0 = 0)
    expected = sum(sum(float(t[n, k]) * (math.log(t[n, k]) - s[n, k]) for k in range(9) if t[n, k] > 0)
                   for n in range(7)) / 7
    torch.testing.assert_close(losses.risd_loss(s, t), expected)
    assert torch.autograd.gradcheck(lambda x: losses.risd_loss(torch.log_softmax(x, -1), t), (s.detach().clone().requires_grad_(),))
    with pytest.raises(ValueError, match="teacher_probs"):
        losses.risd_loss(s, t[:, :5])


def test_opd_and_bradley_terry(gen):
    t_lp = -torch.rand(3, 5, generator=gen, dtype=D)
    s_lp = (-torch.rand(3, 5, generator=gen, dtype=D)).requires_grad_()
    adv = losses.opd_advantages(t_lp, s_lp)
    assert not adv.requires_grad
    mask = torch.rand(3, 5, generator=gen) > 0.3
    mask[0, 0] = True
    mask[1] = False  # a trajectory without valid tokens: left out of the trajectory mean
    # eq. 19: (1/T_b) over each trajectory's own valid tokens, then the mean over trajectories
    per_traj = []
    for i in range(3):
        cols = [j for j in range(5) if mask[i, j]]
        if cols:
            per_traj.append(-sum(float(adv[i, j]) * s_lp[i, j] for j in cols) / len(cols))
    torch.testing.assert_close(losses.opd_loss(s_lp, adv, mask), sum(per_traj) / len(per_traj))
    # the token mean, weighting long trajectories more
    expected = -sum(float(adv[i, j]) * s_lp[i, j] for i in range(3) for j in range(5) if mask[i, j]) / int(mask.sum())
    torch.testing.assert_close(losses.opd_loss(s_lp, adv, mask, normalize="token"), expected)
    with pytest.raises(ValueError, match="normalize must be one of"):
        losses.opd_loss(s_lp, adv, mask, normalize="sequence")
    w = torch.randn(6, generator=gen, dtype=D)
    lo = torch.randn(6, generator=gen, dtype=D)
    expected_bt = sum(-math.log(1 / (1 + math.exp(-(float(w[i]) - float(lo[i]))))) for i in range(6)) / 6
    assert math.isclose(float(losses.bradley_terry_loss(w, lo)), expected_bt, rel_tol=1e-12)


def test_empty_inputs():
    assert float(losses.risd_loss(torch.zeros(0, 9), torch.zeros(0, 9))) == 0.0
    assert float(losses.bradley_terry_loss(torch.zeros(0), torch.zeros(0))) == 0.0
    assert float(losses.pointwise_ce(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long))) == 0.0


def test_device_mismatch_names_the_argument():
    from zrcore.ops import fused_linear_kl, pairwise_gap, score_distribution

    meta = torch.zeros(2, 3, 4, device="meta")
    with pytest.raises(ValueError, match="scores is on cpu but mean is on meta"):
        pairwise_gap(meta, torch.zeros(2, 3), score_range=4.0)
    with pytest.raises(ValueError, match="weight is on meta but hidden is on cpu"):
        score_distribution(torch.zeros(2, 8), torch.zeros(20, 8, device="meta"), torch.arange(9),
                           torch.arange(9.0))
    with pytest.raises(ValueError, match="teacher is on meta"):
        fused_linear_kl(torch.zeros(2, 8), torch.zeros(20, 8), torch.zeros(2, 20, device="meta"))
