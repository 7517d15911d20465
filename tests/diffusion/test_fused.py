import pytest
import torch

from zrcore.diffusion.fused import cfg_euler_step, extension, fuse_vae_decoder, group_norm_silu

needs_ext = pytest.mark.skipif(extension() is None, reason="zrcore._C was not built (ZRCORE_BUILD_EXT=0)")
D = torch.float64
CUDA_EXT = extension() is not None and bool(extension().with_cuda) and torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_EXT, reason="no CUDA build of zrcore._C"))]


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
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,groups", [((2, 64, 17, 19), 32), ((1, 32, 8, 8), 8), ((3, 6, 5), 3),
                                          ((1, 32, 96, 97), 4)])
def test_group_norm_silu_matches_float64_reference(gen, shape, groups, device):
    x = torch.randn(shape, generator=gen, dtype=D) * 3 + 1
    gamma = torch.randn(shape[1], generator=gen, dtype=D)
    beta = torch.randn(shape[1], generator=gen, dtype=D)
    ref_in = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ref = _ref_gn_silu(ref_in[0], groups, ref_in[1], ref_in[2], 1e-6)
    ins = [t.float().to(device).requires_grad_() for t in (x, gamma, beta)]
    out = group_norm_silu(ins[0], groups, ins[1], ins[2], 1e-6, impl="ext")
    assert float((out.double().cpu() - ref).norm() / ref.norm()) < 1e-5
    dy = torch.randn(shape, generator=gen, dtype=D)
    g_ref = torch.autograd.grad(ref, ref_in, dy)
    g_out = torch.autograd.grad(out, ins, dy.float().to(device))
    for a, b in zip(g_out, g_ref):
        assert float((a.double().cpu() - b).norm() / b.norm()) < 1e-5


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 8, 5, 5), (2, 8, 0, 3)])
def test_group_norm_silu_empty_inputs(device, shape):
    x = torch.zeros(shape, device=device, requires_grad=True)
    gamma = torch.ones(8, device=device, requires_grad=True)
    beta = torch.zeros(8, device=device, requires_grad=True)
    y = group_norm_silu(x, 4, gamma, beta, impl="ext")
    assert y.shape == x.shape
    dx, dgamma, dbeta = torch.autograd.grad(y.sum(), (x, gamma, beta), allow_unused=True)
    assert dx.shape == x.shape and float(dgamma.abs().sum()) == 0 and float(dbeta.abs().sum()) == 0


@pytest.mark.skipif(not CUDA_EXT, reason="no CUDA build of zrcore._C")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_group_norm_silu_half_precision_cuda(gen, dtype):
    """bf16 / fp16 activations, fp32 statistics: within 1e-2 of the float64 reference, gradients too."""
    shape, groups = (2, 64, 33, 31), 32
    x = (torch.randn(shape, generator=gen, dtype=D) * 3 + 1).to(dtype).double()
    gamma, beta = (torch.randn(shape[1], generator=gen, dtype=D) for _ in range(2))
    ref_in = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ref = _ref_gn_silu(ref_in[0], groups, ref_in[1], ref_in[2], 1e-6)
    ins = [x.to("cuda", dtype).requires_grad_()] + [t.float().cuda().requires_grad_() for t in (gamma, beta)]
    out = group_norm_silu(ins[0], groups, ins[1], ins[2], 1e-6, impl="ext")
    assert out.dtype == dtype
    assert float((out.double().cpu() - ref).norm() / ref.norm()) < 1e-2
    dy = torch.randn(shape, generator=gen, dtype=D).to(dtype).double()
    g_ref = torch.autograd.grad(ref, ref_in, dy)
    g_out = torch.autograd.grad(out, ins, dy.to("cuda", dtype))
    for a, b in zip(g_out, g_ref):
        assert float((a.double().cpu() - b).norm() / b.norm()) < 1e-2


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_cfg_euler_matches_reference(gen, device):
    x, vc, vu = (torch.randn(2, 16, 9, 7, generator=gen, dtype=D) for _ in range(3))
    a, b = vc.float().to(device).requires_grad_(), vu.float().to(device).requires_grad_()
    out = cfg_euler_step(x.float().to(device), a, b, 3.5, -0.1, impl="ext")
    ref = x + -0.1 * (vc + 3.5 * (vc - vu))
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-6, atol=1e-6)
    g = torch.randn(x.shape, generator=gen, dtype=D)
    ga, gb = torch.autograd.grad(out, (a, b), g.float().to(device))
    torch.testing.assert_close(ga.double().cpu(), g * -0.1 * 4.5, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gb.double().cpu(), g * 0.1 * 3.5, rtol=1e-6, atol=1e-7)
    va, vb = vc.to(device, torch.bfloat16).requires_grad_(), vu.to(device, torch.bfloat16).requires_grad_()
    bf = cfg_euler_step(x.float().to(device), va, vb, 3.5, -0.1, impl="ext")
    assert bf.dtype == torch.float32
    ref_bf = x + -0.1 * (va.double().cpu() * 4.5 - 3.5 * vb.double().cpu())
    torch.testing.assert_close(bf.double().cpu(), ref_bf, rtol=1e-6, atol=1e-6)
    gva, _ = torch.autograd.grad(bf, (va, vb), g.float().to(device))
    assert gva.dtype == torch.bfloat16
    torch.testing.assert_close(gva.double().cpu(), g * -0.1 * 4.5, rtol=1e-2, atol=1e-2)


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
    if extension() is not None:
        with pytest.raises(ValueError, match="cfg_euler_step: impl='ext' does not take v_cond and v_uncond of"):
            cfg_euler_step(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bfloat16), 1.0, 0.1,
                           impl="ext")
        with pytest.raises(TypeError, match="group_norm_silu: impl='ext' takes float32 on cpu, got bfloat16"):
            group_norm_silu(torch.zeros(1, 4, 2, dtype=torch.bfloat16), 2, torch.ones(4), torch.zeros(4), impl="ext")
        with pytest.raises(TypeError, match="float64 and other dtypes run impl='torch'"):
            cfg_euler_step(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3), torch.zeros(2, 3), 1.0, 0.1,
                           impl="ext")
        with pytest.raises(ValueError, match="group_norm_silu: impl='triton' is not a backend of this op"):
            group_norm_silu(torch.zeros(1, 4, 2), 2, torch.ones(4), torch.zeros(4), impl="triton")
