"""GDSO options: eq. 3's epsilon (``adv_eps``) carried from the config to the advantages, and the per-term gradient
norms off by default, so that the main job (``recipes/train_gdso.py`` with its defaults) runs no extra backward."""

import pytest
import torch

from tests.training.runs import GDSO_TINY
from zrcore import losses
from zrcore.training import gdso as gdso_module
from zrcore.training.config import GDSOTeacherConfig, parse_config
from zrcore.training.gdso import GDSOTeacherTrainer


def _trainer(tmp_path, *extra: str) -> GDSOTeacherTrainer:
    return GDSOTeacherTrainer(parse_config(GDSOTeacherConfig, GDSO_TINY + ["--output_dir", str(tmp_path), *extra]))


def test_the_default_config_runs_no_gradient_norm_pass(tmp_path, monkeypatch):
    """Step 0 (a multiple of any N) of a run with the default grad_balance_every: no ``term_gradient_norms``, no
    ``torch.autograd.grad`` (its extra backward per term), no grad_norm/<term> metric."""
    trainer = _trainer(tmp_path)
    norms, grads = [], []
    monkeypatch.setattr(gdso_module, "term_gradient_norms", lambda *a: norms.append(a) or {})
    autograd_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **kw: grads.append(a) or autograd_grad(*a, **kw))
    metrics = trainer.train_step(0)
    assert norms == [] and grads == []
    assert not [k for k in metrics if k.startswith("grad_norm/")]
    assert GDSOTeacherConfig().grad_balance_every == 0


def test_adv_eps_reaches_the_advantages(tmp_path, monkeypatch):
    """--adv_eps 0.05: the step's advantages are (r - mean(r)) / (std(r) + 0.05) per (prompt, candidate) group of
    the rewards the loss computed (by hand in float64, Bessel's std; the rewards are float32)."""
    trainer = _trainer(tmp_path, "--adv_eps", "0.05", "--updates_per_rollout", "1")
    seen = []
    original = losses.group_advantages

    def spy(rewards, *args, **kwargs):
        out = original(rewards, *args, **kwargs)
        seen.append((rewards.detach().double(), kwargs.get("eps"), out.detach().double()))
        return out

    monkeypatch.setattr(losses, "group_advantages", spy)
    trainer.train_step(0)
    assert len(seen) == 1
    rewards, eps, adv = seen[0]
    assert eps == 0.05
    hand = torch.zeros_like(rewards)
    for idx in torch.cartesian_prod(torch.arange(rewards.shape[0]), torch.arange(rewards.shape[1])).tolist():
        r = rewards[idx[0], idx[1]].tolist()
        mean = sum(r) / len(r)
        std = (sum((x - mean) ** 2 for x in r) / (len(r) - 1)) ** 0.5
        hand[idx[0], idx[1]] = torch.tensor([(x - mean) / (std + 0.05) for x in r], dtype=torch.float64)
    torch.testing.assert_close(adv, hand, rtol=1e-4, atol=1e-5)  # the trainer's rewards are float32


@pytest.mark.parametrize("argv,message", [(["--adv_eps=-0.001"], "adv_eps must be >= 0"),
                                          (["--grad_balance_every=-1"], "grad_balance_every must be >= 0")])
def test_bad_option_values_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_config(GDSOTeacherConfig, argv)
