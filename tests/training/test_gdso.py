"""GDSO as Algorithm 1 writes it, at tiny scale in one process: the reference policy and its reset every N_ref steps,
the KL term it anchors, and the parsed-text ablation that appends and reinforces the sampled score token."""

import pytest
import torch

from tests.training.runs import GDSO_TINY
from zrcore import losses
from zrcore.training import gdso as gdso_module
from zrcore.training.config import GDSOTeacherConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer


def _trainer(tmp_path, *extra: str) -> GDSOTeacherTrainer:
    return GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, GDSO_TINY + ["--output_dir", str(tmp_path), *extra]))


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reference_policy_is_reset_every_n_ref_steps(tmp_path):
    """A loop written here: the reference starts as the initial policy and becomes a copy of the policy after every
    N_ref-th step; the trainer's reference equals it after each step, and the KL term is logged."""
    trainer = _trainer(tmp_path, "--beta", "0.1", "--ref_reset_every", "2", "--lr", "0.05", "--steps", "20")
    assert trainer.ref is not None
    expected = _state(trainer.rm)
    logged_kl = []
    for step in range(5):
        metrics = trainer.train_step(step)
        logged_kl.append(metrics["kl"])
        if (step + 1) % 2 == 0:
            expected = _state(trainer.rm)
        assert _same(_state(trainer.ref), expected), f"after step {step}"
        assert not _same(_state(trainer.ref), _state(trainer.rm)) or (step + 1) % 2 == 0
    assert min(logged_kl) >= 0 and max(logged_kl) > 0  # k3 >= 0; the policy moved away from its reference


def test_no_reference_without_beta(tmp_path):
    assert _trainer(tmp_path, "--beta", "0").ref is None


def test_kl_term_in_the_gdso_loss_is_beta_times_the_token_mean_k3(tmp_path):
    """L(beta) - L(0) = beta * mean over sequences of the token mean of exp(ref - logp) - (ref - logp) - 1 (a loop)."""
    g = torch.Generator().manual_seed(0)
    p, m, gg, t = 2, 2, 3, 5
    logps = -torch.rand(p * m * gg, t, generator=g, dtype=torch.float64) * 2
    ref = logps + 0.3 * torch.randn(p * m * gg, t, generator=g, dtype=torch.float64)
    mask = torch.rand(p * m * gg, t, generator=g) > 0.3
    mask[:, 0] = True
    mean = 1 + 4 * torch.rand(p, m, gg, generator=g, dtype=torch.float64)
    scores = torch.tensor([[2.0, 4.5], [3.0, 3.5]], dtype=torch.float64)
    log_probs = torch.log_softmax(torch.randn(p, m, gg, 9, generator=g, dtype=torch.float64), -1)
    kw = dict(score_range=4.0, target=torch.zeros(p, m, dtype=torch.long), ref_logps=ref)
    with_kl = losses.gdso_loss(logps, logps, mask, mean, log_probs, scores, beta=0.2, **kw)
    without = losses.gdso_loss(logps, logps, mask, mean, log_probs, scores, beta=0.0, **kw)
    per_seq = []
    for i in range(p * m * gg):
        toks = [float(torch.exp(ref[i, j] - logps[i, j]) - (ref[i, j] - logps[i, j]) - 1) for j in range(t) if mask[i, j]]
        per_seq.append(sum(toks) / len(toks))
    assert abs(float(with_kl.policy - without.policy) - 0.2 * sum(per_seq) / len(per_seq)) < 1e-12


def test_text_ablation_appends_and_reinforces_the_score_token(tmp_path, monkeypatch):
    """reward_from="text": the sampled score token is the last completion token of each row, its parsed value is the
    reward's source, and the policy loss has a gradient on its log-prob."""
    trainer = _trainer(tmp_path, "--reward_from", "text", "--beta", "0")
    seen = {}
    original = losses.gdso_loss

    def spy(logps, old_logps, completion_mask, *args, **kwargs):
        out = original(logps, old_logps, completion_mask, *args, **kwargs)
        if "grad" not in seen:
            seen.update(logps=logps, mask=completion_mask, reward_mean=kwargs["reward_mean"],
                        grad=torch.autograd.grad(out.policy, logps, retain_graph=True)[0])
        return out

    monkeypatch.setattr(gdso_module.losses, "gdso_loss", spy)
    calls = {}
    net_forward = trainer.net.forward

    def net_spy(sequences, *args, **kwargs):
        calls.setdefault("sequences", sequences)
        calls.setdefault("score_position", kwargs.get("score_position"))
        return net_forward(sequences, *args, **kwargs)

    monkeypatch.setattr(trainer.net, "forward", net_spy)
    trainer.train_step(0)
    mask, seqs = seen["mask"], calls["sequences"]
    assert calls["score_position"] == -2  # q is read where the score token is predicted
    assert mask[:, -1].all()  # the score token joins every trajectory
    rm = trainer.rm
    bins_of_token = {int(t): i for i, t in enumerate(rm.decoder.token_ids.tolist())}
    picked = torch.tensor([bins_of_token[int(t)] for t in seqs[:, -1]])
    torch.testing.assert_close(seen["reward_mean"].reshape(-1).cpu(), rm.bins.values[picked].to(seen["reward_mean"]))
    grad_last = seen["grad"][:, -1]
    assert (grad_last != 0).any()  # reinforced like every other emitted token
    assert seen["logps"][:, -1].requires_grad and (seen["logps"][:, -1] < 0).all()


def test_gradient_balance_is_logged(tmp_path):
    trainer = _trainer(tmp_path, "--grad_balance_every", "1")
    metrics = trainer.train_step(0)
    assert {"grad_norm/policy", "grad_norm/ce", "grad_norm/pairwise"} <= set(metrics)
    assert metrics["grad_norm/ce"] > 0


def test_the_default_cap_is_the_longest_description(tmp_path):
    from zrcore.data.captions import description_token_limit

    at = GDSO_TINY.index("--sampling.max_reasoning_tokens")
    args = GDSO_TINY[:at] + GDSO_TINY[at + 2:]
    trainer = GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, args + ["--output_dir", str(tmp_path)]))
    assert trainer.cfg.sampling.max_reasoning_tokens == description_token_limit(trainer.rm.tokenizer)
    assert trainer.rm.sampling["max_reasoning_tokens"] == trainer.cfg.sampling.max_reasoning_tokens
    assert trainer.cfg.beta > 0  # Algorithm 1's KL anchor is on by default


@pytest.mark.parametrize("reward_from", ["distribution", "text"])
def test_the_scoring_forward_gives_the_old_logprobs(tmp_path, monkeypatch, reward_from):
    """The old-policy log-probs come from judge's scoring forward: one full-length forward of the policy per rollout
    fewer than running policy_forward again, and the same GDSO loss (the text ablation's appended score token
    included)."""
    import zrcore.models.rollout as rollout_module

    def step(old_path: bool, out):
        trainer = _trainer(out, "--reward_from", reward_from, "--updates_per_rollout", "2")
        forwards = []
        hidden = trainer.rm._hidden
        monkeypatch.setattr(trainer.rm, "_hidden", lambda *a: forwards.append(a[0].shape) or hidden(*a))
        judge = rollout_module.judge_groups
        monkeypatch.setattr(gdso_module, "judge_groups",
                            lambda *a, **kw: judge(*a, **(kw | {"with_logprobs": not old_path})))
        metrics = trainer.train_step(0)
        monkeypatch.setattr(gdso_module, "judge_groups", judge)
        return metrics, forwards

    new, new_forwards = step(False, tmp_path / "new")
    old, old_forwards = step(True, tmp_path / "old")
    # judge's scoring forward, [old-policy forward,] one forward per update
    assert (len(old_forwards), len(new_forwards)) == (4, 3)
    for key in ("loss/total", "loss/policy"):
        assert new[key] == pytest.approx(old[key], rel=1e-5, abs=1e-7), key
