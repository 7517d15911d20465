"""The compiled extension's ops under torch.compile(fullgraph=True): a diffusers VAE decode with the fused
GroupNorm + SiLU and a sampler step with the fused CFG + Euler update give the eager values and gradients, and the
traced graphs call torch.ops.zrcore.* (no fallback to torch's own ops)."""

import pytest
import torch

from zrcore.diffusion import FlowMatchSampler, ZImageVelocity, build_tiny_generator
from zrcore.diffusion.fused import extension, fuse_vae_decoder
from zrcore.diffusion.sampler import _EulerRun

pytestmark = [pytest.mark.slow, pytest.mark.skipif(extension() is None, reason="zrcore._C not built")]
# the GPU where the extension was built with CUDA, else the CPU
DEVICE = "cuda" if torch.cuda.is_available() and extension() is not None and extension().with_cuda else "cpu"


def _recording_backend(graphs: list):
    """A torch.compile backend that keeps each forward FX graph (dynamo's, before lowering) and lowers with
    inductor."""
    from torch._inductor.compile_fx import compile_fx

    def backend(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    return backend


def _zrcore_calls(graphs) -> set[str]:
    return {str(node.target) for gm in graphs for node in gm.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("zrcore.")}


def _compare(fn, inputs, graphs):
    def run(f):
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        out = f(*leaves)
        out.square().mean().backward()
        return out.detach(), [x.grad for x in leaves]

    torch._dynamo.reset()
    (eager, eager_grads) = run(fn)
    (compiled, compiled_grads) = run(torch.compile(fn, fullgraph=True, backend=_recording_backend(graphs)))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)  # inductor reorders fp32 sums
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_vae_decode_compiles_fullgraph():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], layers_per_block=1, latent_channels=16, norm_num_groups=32,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2).to(DEVICE)
    assert fuse_vae_decoder(vae, impl="ext") == 13
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    graphs = []
    _compare(lambda x: vae.decode(x).sample, [z], graphs)
    assert _zrcore_calls(graphs) == {"zrcore.group_norm_silu"}
    calls = sum(str(n.target) == "zrcore.group_norm_silu" for gm in graphs for n in gm.graph.nodes)
    assert calls == 13


def test_fused_sampler_step_compiles_fullgraph():
    tr, vae, sch, enc = build_tiny_generator(seed=0)
    tr, vae = tr.to(DEVICE), vae.to(DEVICE)
    sampler = FlowMatchSampler(ZImageVelocity(tr), sch, vae)
    ts = sampler.timesteps(3, DEVICE)
    sigmas = sch.sigmas
    cond = [c.detach().to(DEVICE) for c in enc(["a red circle"])]
    uncond = [c.detach().to(DEVICE) * 0 for c in enc([""])]
    leaves, spec = torch.utils._pytree.tree_flatten((cond, uncond))
    run = _EulerRun(sampler, ts, sigmas, spec, scale=1.5, detach_input=False)
    x = torch.randn(1, 16, 28, 28, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    graphs = []
    _compare(lambda lat: run.step(0, lat, leaves), [x], graphs)
    assert "zrcore.cfg_euler_step" in _zrcore_calls(graphs)
