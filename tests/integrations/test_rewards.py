"""Reward functions for other loops: the diffusion reward_fn (uint8 / PIL / tensor forms agree, gradient matches a
finite difference), TRL's ZRewardFunction (equals RewardModel.score's expectation), and the light kernel import."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zrcore.integrations.diffusion import reward_fn, score_pipeline_output
from zrcore.integrations.trl import ZRewardFunction
from zrcore.models import build_tiny_reward_model


@pytest.fixture(scope="module")
def rm():
    return build_tiny_reward_model("qwen2_vl", "student", seed=0)


def _uint8(n=2, side=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g)


def test_diffusion_reward_forms_agree(rm):
    fn = reward_fn(rm, dimensions=("realism", "aesthetics"), aggregation="pessimistic", kappa=1.0)
    u8 = _uint8()
    prompts = ["a red circle", "two blue squares"]
    with torch.no_grad():
        r_np, info = fn(u8.numpy(), prompts, [{}, {}])
        r_pil, _ = fn([Image.fromarray(a) for a in u8.numpy()], prompts, None)
        r_chw, _ = fn(u8.permute(0, 3, 1, 2).contiguous(), prompts, None)
        r_float, _ = fn(u8.permute(0, 3, 1, 2).float() / 255, prompts, None)
        out = score_pipeline_output(type("Out", (), {"images": u8.numpy().astype(np.float32) / 255})(), prompts, fn)[0]
        q = {d: rm.score_pixels(prompts, u8.permute(0, 3, 1, 2).float() / 255, d) for d in ("realism", "aesthetics")}
    for r in (r_pil, r_chw, r_float, out):
        assert torch.equal(r, r_np)
    expected = torch.stack([q[d].mean - q[d].std for d in q]).mean(0)
    torch.testing.assert_close(r_np, expected)
    assert set(info) == {"realism/mean", "realism/std", "aesthetics/mean", "aesthetics/std"}


def test_diffusion_reward_gradient_matches_finite_difference(rm):
    fn = reward_fn(rm, dimensions=("realism",))
    x = (_uint8(1, seed=1).permute(0, 3, 1, 2).double() / 255).requires_grad_()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rm.model.double()
    try:
        f = lambda t: fn(t, ["a green triangle"])[0].sum()
        f(x).backward()
        analytic = float((x.grad * direction).sum())
        eps = 1e-3
        with torch.no_grad():
            numeric = float((f(x.detach() + eps * direction) - f(x.detach() - eps * direction)) / (2 * eps))
    finally:
        rm.model.float()
    assert abs(analytic - numeric) <= 2e-2 * abs(numeric) + 1e-6, (analytic, numeric)


def test_diffusion_reward_bad_input(rm):
    fn = reward_fn(rm, dimensions=("realism",))
    with pytest.raises(ValueError, match="prompts: got 1 prompts for 2 images"):
        fn(_uint8(), ["one"])
    with pytest.raises(ValueError, match="images must have 4 dimensions"):
        fn(torch.zeros(3, 8, 8), ["x"])
    with pytest.raises(ValueError, match=r"dimensions \['beauty'\]"):
        reward_fn(rm, dimensions=("beauty",))


def test_trl_reward_function_equals_score(rm):
    imgs = [Image.fromarray(a) for a in _uint8(3, seed=4).numpy()]
    prompts = [[{"role": "user", "content": "describe"}]] * 3
    completions = [[{"role": "assistant", "content": c}] for c in ("a red circle", "a cat", "two squares")]
    f = ZRewardFunction(rm, dimensions=("alignment", "realism"), aggregation="pessimistic", kappa=0.5, batch_size=2)
    out = f(prompts, completions, image=imgs, score=[1, 2, 3])
    assert isinstance(out, list) and all(isinstance(v, float) for v in out) and f.__name__.startswith("zrcore_")
    texts = ["a red circle", "a cat", "two squares"]
    with torch.no_grad():
        qs = [rm.score(texts, imgs, d) for d in ("alignment", "realism")]
    expected = torch.stack([q.mean - 0.5 * q.std for q in qs]).mean(0)
    # batches of 2 against one batch of 3: left padding changes float32 summation order, nothing else
    torch.testing.assert_close(torch.tensor(out), expected, atol=1e-5, rtol=1e-5)
    plain = ZRewardFunction(rm, dimensions=("alignment",), text="prompt")(texts, ["ignored"] * 3, images=[[i] for i in imgs])
    torch.testing.assert_close(torch.tensor(plain), qs[0].mean, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the images: a dataset column 'image'"):
        f(prompts, completions, score=[1, 2, 3])


def test_gdso_trainer_import_names_the_extra_without_trl():
    code = ("import sys; sys.modules['trl'] = None\n"
            "from zrcore.integrations import trl as z\n"
            "try:\n    z.GDSOTrainer\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'zrcore[trl]'" in out


def test_kernel_import_is_light():
    code = ("import sys, zrcore.ops, zrcore.losses, zrcore.metrics\n"
            "print(sorted(m for m in ('transformers', 'diffusers', 'trl') if m in sys.modules))")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


def test_diffusion_reward_refuses_images_outside_0_1_naming_the_mapping(rm):
    fn = reward_fn(rm, dimensions=("realism",))
    x = torch.rand(2, 3, 56, 56)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got values in .*\(images \+ 1\) / 2"):
        fn(x * 2 - 1, ["a", "b"])  # a VAE's decoded range
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*images / 255"):
        fn(x * 255, ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((1, 3, 56, 56), float("nan")), ["a"])
    with torch.no_grad():
        fn(x, ["a", "b"])  # [0, 1] is accepted


def test_pessimistic_without_kappa_means_kappa_1_as_in_the_trl_reward(rm):
    prompts = ["a red circle", "two blue squares"]
    x = _uint8().permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        plain = reward_fn(rm, dimensions=("realism",), aggregation="pessimistic")(x, prompts)[0]
        one = reward_fn(rm, dimensions=("realism",), aggregation="pessimistic", kappa=1.0)(x, prompts)[0]
        mean = reward_fn(rm, dimensions=("realism",))(x, prompts)[0]
    assert torch.equal(plain, one) and not torch.equal(plain, mean)
    assert ZRewardFunction(rm, dimensions=("realism",), aggregation="pessimistic").kappa == 1.0
