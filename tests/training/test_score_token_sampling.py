"""The sampled score token of GDSO's parsed-text ablation (``--reward_from text``): drawn from the score distribution
at the sampling temperature, q_T = softmax(log q / T), the distribution whose log-prob the policy forward reinforces;
its behaviour log-prob is log q_T of the drawn bin (not 0); its old log-prob in the ratio is the policy forward's at
the start of the step; and its seed is ``seeding.score_token_seed``."""

import pytest
import torch

from tests.training.runs import GDSO_TINY
from zrcore import seeding
from zrcore.bins import ScoreDistribution
from zrcore.models.rollout import Rollouts, sample_bins
from zrcore.training import gdso as gdso_module
from zrcore.training.config import GDSOTeacherConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer


def _trainer(tmp_path, *extra: str) -> GDSOTeacherTrainer:
    args = GDSO_TINY + ["--output_dir", str(tmp_path), "--reward_from", "text", "--beta", "0", *extra]
    return GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, args))


class _Stop(Exception):
    pass


def _spy_appended(monkeypatch, stop: bool = False) -> list:
    """Records (batch before, batch after) of every ``Rollouts.with_score_tokens`` call; ``stop``: then ends the
    step (raises ``_Stop``)."""
    seen = []
    original = Rollouts.with_score_tokens

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append((self, out))
        if stop:
            raise _Stop
        return out

    monkeypatch.setattr(Rollouts, "with_score_tokens", spy)
    return seen


def _picked_bins(rm, batch) -> torch.Tensor:
    bin_of = {int(t): i for i, t in enumerate(rm.decoder.token_ids.tolist())}
    return torch.tensor([bin_of[int(t)] for t in batch.sequences[:, -1]])


def test_drawn_bins_follow_the_tempered_score_distribution(tmp_path, monkeypatch):
    """With a fixed q (log-odds 0.5 apart from bin to bin) at T = 0.25, the 144 drawn bins of one step follow q_T
    (total variation under 0.12) and not q (q_T puts 0.86 on the top bin, q 0.41)."""
    t = 0.25
    trainer = _trainer(tmp_path, "--sampling.temperature", str(t), "--sampling.num_samples", "24",
                       "--sampling.max_reasoning_tokens", "1")
    k = len(trainer.rm.bins)
    log_q = torch.log_softmax(0.5 * torch.arange(k, dtype=torch.float32), 0)
    judge = gdso_module.judge_groups

    def fixed_q(*args, **kwargs):  # the model's traces, every row's q replaced by the fixed one
        j = judge(*args, **kwargs)
        b, g = j.distribution.mean.shape
        lp = log_q.expand(b, g, k).to(j.distribution.log_probs)
        mean = (lp.exp() * trainer.rm.bins.values.to(lp)).sum(-1)
        return j._replace(distribution=ScoreDistribution(lp, mean, torch.zeros_like(mean)))

    monkeypatch.setattr(gdso_module, "judge_groups", fixed_q)
    seen = _spy_appended(monkeypatch, stop=True)
    with pytest.raises(_Stop):  # the draw is all this test needs
        trainer.train_step(0)
    picked = _picked_bins(trainer.rm, seen[0][1])
    assert picked.numel() == 2 * 3 * 24
    freq = torch.bincount(picked, minlength=k).double() / picked.numel()
    q_t = torch.softmax(log_q.double() / t, 0)
    assert 0.5 * float((freq - q_t).abs().sum()) < 0.12, (freq, q_t)
    assert 0.5 * float((freq - log_q.double().exp()).abs().sum()) > 0.3


def test_score_token_behaviour_and_old_logprobs(tmp_path, monkeypatch):
    """At T = 0.5 on the model's own q: each row's bin is the draw from q_T with the row's ``score_token_seed``; the
    appended column of ``behaviour_logprobs`` is log q_T of that bin; the old log-probs the loss gets for it are the
    policy forward's on the appended batch before any update (ratio 1 at the start of the step), and not 0."""
    t = 0.5
    trainer = _trainer(tmp_path, "--sampling.temperature", str(t), "--updates_per_rollout", "1")
    seen = _spy_appended(monkeypatch)
    at_loss = {}
    original = gdso_module.losses.gdso_loss

    def loss_spy(logps, old_logps, *args, **kwargs):
        if not at_loss:  # the first update, before any optimizer step: the policy is the sampling one
            with torch.no_grad():
                fresh = trainer.rm.policy_forward(seen[0][1], t, with_distribution=False).logps
            at_loss.update(logps=logps.detach().clone(), old=old_logps.detach().clone(), fresh=fresh)
        return original(logps, old_logps, *args, **kwargs)

    monkeypatch.setattr(gdso_module.losses, "gdso_loss", loss_spy)
    trainer.train_step(0)
    before, after = seen[0]
    picked = _picked_bins(trainer.rm, after)
    log_q_t = torch.log_softmax(before.distribution.log_probs.double() / t, -1)
    drawn = log_q_t.gather(1, picked[:, None]).squeeze(1)
    torch.testing.assert_close(after.behaviour_logprobs[:, -1].double(), drawn, atol=1e-5, rtol=1e-5)
    assert (after.behaviour_logprobs[:, -1] < 0).all()
    old, fresh = at_loss["old"][:, -1].double(), at_loss["fresh"][:, -1].double()
    torch.testing.assert_close(old, fresh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at_loss["logps"][:, -1].double(), old, atol=1e-5, rtol=1e-5)
    assert (old < 0).all()
    groups, first = trainer.local_batch(0)
    base = first * len(groups[0].records) * trainer.cfg.sampling.num_samples  # the first row's global index
    seeds = [seeding.score_token_seed(trainer.cfg.seed, 0, base + r) for r in range(picked.numel())]
    assert seeds[5] == seeding.step_seed(trainer.cfg.seed, 0, 10**9 + base + 5)  # the seeds drawn before
    assert torch.equal(picked, sample_bins(log_q_t.float().exp(), seeds))
