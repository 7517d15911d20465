import pytest
import torch

from zrcore.bins import ScoreDistribution
from zrcore.diffusion import FlowMatchSampler, SamplerConfig, ZImageVelocity, aggregate_reward, build_tiny_generator, reward_of_images
from zrcore.models import build_tiny_reward_model

PROMPTS = ["a red circle", "two blue squares on a white background"]


@pytest.fixture(scope="module")
def gen():
    tr, vae, sch, enc = build_tiny_generator(seed=0)
    return tr, vae, sch, enc


@pytest.fixture(scope="module")
def rm():
    return build_tiny_reward_model("qwen2_vl", "student", seed=0)


def _grads(gen, rm, cfg: SamplerConfig):
    tr, vae, sch, enc = gen
    tr.zero_grad(set_to_none=True)
    sampler = FlowMatchSampler(ZImageVelocity(tr), sch, vae)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 16, 28, 28, generator=g)
    cond = [c.detach() for c in enc(PROMPTS)]
    uncond = [c.detach() * 0 for c in enc(["", ""])]
    img = sampler.decode(sampler.sample(lat, cond, cfg, uncond=uncond), checkpointed=cfg.checkpoint_vae)
    reward, _ = reward_of_images(rm, PROMPTS, img, ["realism", "alignment"], mode="pessimistic", kappa=0.5)
    reward.sum().backward()
    return torch.cat([p.grad.flatten() for p in tr.parameters() if p.grad is not None]), float(reward.detach().sum())


@pytest.mark.parametrize("mode,k", [("full", 1), ("last_k", 2), ("drtune", 2), ("refl", 2)])
def test_checkpointed_gradients_equal_plain_autograd(gen, rm, mode, k):
    base_cfg = dict(num_steps=3, backprop=mode, k=k, guidance_scale=1.5)
    plain, r0 = _grads(gen, rm, SamplerConfig(**base_cfg, checkpoint="none", checkpoint_vae=False))
    assert plain.abs().sum() > 0
    for ck in ("step", "step+blocks"):
        got, r1 = _grads(gen, rm, SamplerConfig(**base_cfg, checkpoint=ck, checkpoint_vae=True))
        assert r1 == pytest.approx(r0, rel=1e-6)
        assert float((got - plain).norm() / plain.norm()) <= 1e-5, ck


def test_last_k_differs_from_full_and_guidance_matches_formula(gen):
    tr, vae, sch, enc = gen
    sampler = FlowMatchSampler(ZImageVelocity(tr), sch, vae)
    lat = torch.randn(1, 16, 28, 28, generator=torch.Generator().manual_seed(1))
    cond, uncond = [enc(PROMPTS[:1])[0].detach()], [enc([""])[0].detach()]
    t = torch.tensor(500.0)
    with torch.no_grad():
        v = sampler._guided(lat, t, cond, uncond, 2.0)
        vc, vu = ZImageVelocity(tr)(lat, t, cond), ZImageVelocity(tr)(lat, t, uncond)
    torch.testing.assert_close(v, vc + 2.0 * (vc - vu))
    with torch.no_grad():
        x_full = sampler.sample(lat, cond, SamplerConfig(num_steps=3, backprop="full"))
        x_last = sampler.sample(lat, cond, SamplerConfig(num_steps=3, backprop="last_k", k=1))
    torch.testing.assert_close(x_full, x_last)  # same values, only the gradient path differs


def test_aggregations():
    d = {"a": ScoreDistribution(torch.zeros(2, 9), torch.tensor([2.0, 4.0]), torch.tensor([0.25, 1.0])),
         "b": ScoreDistribution(torch.zeros(2, 9), torch.tensor([3.0, 1.0]), torch.tensor([0.0, 4.0]))}
    torch.testing.assert_close(aggregate_reward(d, "mean"), torch.tensor([2.5, 2.5]))
    torch.testing.assert_close(aggregate_reward(d, "min"), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(aggregate_reward(d, "weighted", weights={"a": 3, "b": 1}), torch.tensor([2.25, 3.25]))
    torch.testing.assert_close(aggregate_reward(d, "pessimistic", kappa=1.0),
                               torch.tensor([(1.5 + 3.0) / 2, (3.0 - 1.0) / 2]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="weights name dimensions"):
        aggregate_reward(d, "weighted", weights={"c": 1})
    with pytest.raises(ValueError, match="kappa"):
        aggregate_reward(d, "pessimistic", kappa=-1)


def test_bad_input(gen, rm):
    tr, vae, sch, enc = gen
    sampler = FlowMatchSampler(ZImageVelocity(tr), sch, vae)
    lat = torch.randn(2, 16, 28, 28)
    cond = enc(PROMPTS)
    with pytest.raises(ValueError, match=r"k must lie in \[1, num_steps=4\]"):
        sampler.sample(lat, cond, SamplerConfig(num_steps=4, backprop="last_k", k=5))
    with pytest.raises(ValueError, match="sigmas"):
        sampler.sample(lat, cond, SamplerConfig(num_steps=2, sigmas=[1.5, 0.5]))
    with pytest.raises(ValueError, match="16"):
        sampler.sample(torch.randn(2, 8, 28, 28), cond, SamplerConfig(num_steps=2))
    with pytest.raises(ValueError, match="cond has 1 entries"):
        sampler.sample(lat, cond[:1], SamplerConfig(num_steps=2))
    with pytest.raises(ValueError, match="uncond"):
        sampler.sample(lat, cond, SamplerConfig(num_steps=2, guidance_scale=2.0))
    with pytest.raises(ValueError, match="does not know the dimensions \\['beauty'\\]"):
        reward_of_images(rm, PROMPTS, torch.rand(2, 3, 56, 56), ["beauty"])


def test_gradients_reach_the_prompt_encoder_identically(gen):
    tr, vae, sch, enc = gen
    sampler = FlowMatchSampler(ZImageVelocity(tr), sch, vae)
    lat = torch.randn(1, 16, 28, 28, generator=torch.Generator().manual_seed(5))
    grads = []
    for ck in ("none", "step"):
        enc.zero_grad(set_to_none=True)
        tr.zero_grad(set_to_none=True)
        cfg = SamplerConfig(num_steps=3, backprop="last_k", k=2, checkpoint=ck, guidance_scale=1.0)
        out = sampler.sample(lat, enc(PROMPTS[:1]), cfg, uncond=enc([""]))
        out.square().mean().backward()
        grads.append(enc.embed.grad.clone())
    assert grads[0].abs().sum() > 0
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) <= 1e-5
