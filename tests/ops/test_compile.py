"""torch.compile(fullgraph=True) traces through all three ops (registered with torch.library) without graph breaks
and gives the eager values and gradients."""

import pytest
import torch

from tests.ops.conftest import device
from zrcore import ScoreBins
from zrcore.ops import fused_linear_kl, pairwise_gap, score_distribution

VALUES = ScoreBins.half_points().values


def _loss(hidden, weight, ids, values, scores, t_hidden, t_weight, impl, which="all"):
    p, m, g = scores.shape[0], scores.shape[1], hidden.shape[0] // (scores.shape[0] * scores.shape[1])
    total = hidden.sum() * 0.0
    if which in ("all", "score", "pairwise"):
        q = score_distribution(hidden, weight, ids, values, impl=impl)
        total = total + q.var.mean() + q.log_probs.mean()
        if which != "score":
            pw = pairwise_gap(q.mean.view(p, m, g), scores, score_range=4.0, impl=impl)
            total = total + pw.loss + pw.reward.mean() * 0.0
    if which in ("all", "kl"):
        total = total + 0.5 * fused_linear_kl(hidden, weight, t_hidden, teacher_weight=t_weight, token_ids=ids,
                                              impl=impl)
    return total


@pytest.mark.slow
@pytest.mark.parametrize("which", ["score", "pairwise", "kl", "all"])
def test_compile_fullgraph_matches_eager(impl, which):
    dev = device()
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2 * 3 * 4, 32, generator=g).to(dev)
    weight = (torch.randn(64, 32, generator=g) / 6).to(dev)
    ids = torch.arange(5, 14).to(dev)
    scores = torch.tensor([[4.0, 2.5, 3.0], [3.5, 1.0, 2.0]]).to(dev)
    t_hidden = torch.randn(24, 16, generator=g).to(dev)
    t_weight = (torch.randn(64, 16, generator=g) / 4).to(dev)
    values = VALUES.to(dev)

    def run(fn):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        loss = fn(h, w, ids, values, scores, t_hidden, t_weight, impl, which)
        loss.backward()
        return loss.detach(), h.grad, w.grad

    torch._dynamo.reset()
    eager = run(_loss)
    compiled = run(torch.compile(_loss, fullgraph=True, backend="inductor"))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_token_logprobs_compiles_fullgraph():
    """The selected-token log-probs' registered op (impl="torch") traces without graph breaks and gives the eager
    values and gradients, with a bias and a temperature, on the test device."""
    from zrcore.ops.token_logprobs import token_logprobs

    dev = device()
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(10, 16, generator=g).to(dev)
    weight = (torch.randn(40, 16, generator=g) / 4).to(dev)
    bias = torch.randn(40, generator=g).to(dev)
    targets = torch.randint(0, 40, (10,), generator=g).to(dev)

    def loss(h, w, b):
        lp = token_logprobs(h, w, targets, temperature=0.8, bias=b, chunk=4, impl="torch")
        return (lp * torch.linspace(0.5, 1.5, 10, device=h.device)).sum()

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
        out = fn(*leaves)
        out.backward()
        return out.detach(), *(t.grad for t in leaves)

    torch._dynamo.reset()
    eager = run(loss)
    compiled = run(torch.compile(loss, fullgraph=True, backend="inductor"))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
