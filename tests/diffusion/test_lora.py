import pytest
import torch
from torch.utils import _pytree as pytree

from zrcore.diffusion import FlowMatchSampler, SamplerConfig, build_tiny_generator, velocity_for
from zrcore.diffusion.lora import add_lora


@pytest.mark.parametrize("arch", ["zimage", "sd3"])
def test_lora_starts_at_the_base_model_and_checkpointed_gradients_equal_plain(arch):
    tr, vae, sch, enc = build_tiny_generator(seed=0, arch=arch)
    sampler = FlowMatchSampler(velocity_for(tr), sch, vae)
    lat = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(0))
    cond = pytree.tree_map(torch.Tensor.detach, enc(["a red circle"]))
    cfg = SamplerConfig(num_steps=3, backprop="last_k", k=2, checkpoint="none")
    with torch.no_grad():
        base = sampler.sample(lat, cond, cfg)
    params = add_lora(tr, rank=4)
    assert params and all(p.requires_grad for p in params)
    assert all(not p.requires_grad for n, p in tr.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        torch.testing.assert_close(sampler.sample(lat, cond, cfg), base)  # B = 0 at the start
        for n, p in tr.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)

    def grads(ck):
        tr.zero_grad(set_to_none=True)
        x = sampler.sample(lat, cond, SamplerConfig(num_steps=3, backprop="last_k", k=2, checkpoint=ck))
        x.square().mean().backward()
        return torch.cat([p.grad.flatten() for p in params])

    plain = grads("none")
    assert plain.abs().sum() > 0
    for ck in ("step", "step+blocks"):
        assert float((grads(ck) - plain).norm() / plain.norm()) <= 1e-5, ck


def test_bad_lora_arguments():
    tr, *_ = build_tiny_generator(seed=0, arch="sd3")
    with pytest.raises(ValueError, match="rank"):
        add_lora(tr, rank=0)
    with pytest.raises(ValueError, match=r"target_modules \['qkv_fused'\]"):
        add_lora(tr, rank=2, target_modules=["qkv_fused"])
