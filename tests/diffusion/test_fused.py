import pytest
import torch

from zrcore.diffusion.fused import cfg_euler_step, extension, fuse_vae_decoder, group_norm_silu

needs_ext = pytest.mark.skipif(extension() is None, reason="zrcore._C was not built (ZRCORE_BUILD_EXT=0)")
D = torch.float64


def _ref_gn_silu(x, groups, gamma, beta, eps):
    """float64 reference written from the equations: per-(sample, group) mean / variance, affine, x sigmoid(x)."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    xhat = ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    z = xhat * gamma.view(shape) + beta.view(shape)
    return z * torch.sigmoid(z)


@needs_ext
@pytest.mark.parametrize("shape,groups", [((2, 64, 17, 19), 32), ((1, 32, 8, 8), 8), ((3, 6, 5), 3)])
def test_group_norm_silu_matches_float64_reference(gen, shape, groups):
    x = torch.randn(shape, generator=gen, dtype=D) * 3 + 1
    gamma = torch.randn(shape[1], generator=gen, dtype=D)
    beta = torch.randn(shape[1], generator=gen, dtype=D)
    ref_in = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ref = _ref_gn_silu(ref_in[0], groups, ref_in[1], ref_in[2], 1e-6)
    ins = [t.float().requires_grad_() for t in (x, gamma, beta)]
    out = group_norm_silu(ins[0], groups, ins[1], ins[2], 1e-6, impl="ext")
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-5
    dy = torch.randn(shape, generator=gen, dtype=D)
    g_ref = torch.autograd.grad(ref, ref_in, dy)
    g_out = torch.autograd.grad(out, ins, dy.float())
    for a, b in zip(g_out, g_ref):
        assert float((a.double() - b).norm() / b.norm()) < 1e-5


@needs_ext
def test_cfg_euler_matches_reference(gen):
    x, vc, vu = (torch.randn(2, 16, 9, 7, generator=gen) for _ in range(3))
    a, b = vc.clone().requires_grad_(), vu.clone().requires_grad_()
    out = cfg_euler_step(x, a, b, 3.5, -0.1, impl="ext")
    ref = x.double() + -0.1 * (vc.double() + 3.5 * (vc.double() - vu.double()))
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    g = torch.randn(x.shape, generator=gen)
    ga, gb = torch.autograd.grad(out, (a, b), g)
    torch.testing.assert_close(ga, g * -0.1 * 4.5, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gb, g * 0.1 * 3.5, rtol=1e-6, atol=1e-7)
    bf = cfg_euler_step(x, vc.bfloat16(), vu.bfloat16(), 3.5, -0.1, impl="ext")
    assert bf.dtype == torch.float32


@needs_ext
def test_fused_vae_decoder_gradients_equal_plain(gen):
    from diffusers import AutoencoderKL

    def run(fused):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=[32, 64], layers_per_block=1, latent_channels=16, norm_num_groups=32,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
        if fused:
            assert fuse_vae_decoder(vae, impl="ext") == 13  # 6 resnet blocks x 2 + the output norm
        z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
        vae.decode(z).sample.square().mean().backward()
        return z.grad, torch.cat([p.grad.flatten() for p in vae.decoder.parameters() if p.grad is not None])

    (z0, p0), (z1, p1) = run(False), run(True)
    assert float((z1 - z0).norm() / z0.norm()) < 1e-5
    assert float((p1 - p0).norm() / p0.norm()) < 1e-5


def test_bad_input():
    with pytest.raises(ValueError, match="impl"):
        group_norm_silu(torch.zeros(1, 4, 2), 2, torch.ones(4), torch.zeros(4), impl="cuda")
