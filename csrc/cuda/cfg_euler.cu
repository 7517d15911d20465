// Fused classifier-free-guidance combine + Euler step on CUDA: fp32 master latents, fp32 / bf16 / fp16 velocities.
//   x_next = x + dt * (v_c + s (v_c - v_u)),  dx = g,  dv_c = g dt (1 + s),  dv_u = -g dt s
// The velocity gradients are written in the velocities' own dtype.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>

#include "launch.cuh"

#include <vector>

namespace zrcore {

namespace {

template <typename scalar_t>
__global__ void cfg_euler_forward_kernel(const float* __restrict__ x, const scalar_t* __restrict__ vc,
                                         const scalar_t* __restrict__ vu, float* __restrict__ out, int64_t n,
                                         float scale, float dt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float c = static_cast<float>(vc[i]), u = static_cast<float>(vu[i]);
    out[i] = x[i] + dt * (c + scale * (c - u));
  }
}

template <typename scalar_t>
__global__ void cfg_euler_backward_kernel(const float* __restrict__ g, scalar_t* __restrict__ dvc,
                                          scalar_t* __restrict__ dvu, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dvc[i] = static_cast<scalar_t>(a * g[i]);
    dvu[i] = static_cast<scalar_t>(b * g[i]);
  }
}

}  // namespace

at::Tensor cfg_euler_forward_cuda(const at::Tensor& x_in, const at::Tensor& vc_in, const at::Tensor& vu_in,
                                  double scale, double dt) {
  TORCH_CHECK(x_in.is_cuda() && vc_in.is_cuda() && vu_in.is_cuda(), "cfg_euler (CUDA): x, v_cond, v_uncond on CUDA");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "cfg_euler: latents x must be float32 (master latents)");
  TORCH_CHECK(x_in.sizes() == vc_in.sizes() && x_in.sizes() == vu_in.sizes(),
              "cfg_euler: x, v_cond and v_uncond must have one shape");
  TORCH_CHECK(vc_in.scalar_type() == vu_in.scalar_type(), "cfg_euler: v_cond and v_uncond must have one dtype");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  auto vc = vc_in.contiguous();
  auto vu = vu_in.contiguous();
  auto out = at::empty_like(x);
  if (x.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, vc.scalar_type(), "cfg_euler_forward_cuda", [&] {
    cfg_euler_forward_kernel<scalar_t><<<elementwise_blocks(x.numel()), kThreads, 0, stream>>>(
        x.data_ptr<float>(), vc.data_ptr<scalar_t>(), vu.data_ptr<scalar_t>(), out.data_ptr<float>(), x.numel(),
        static_cast<float>(scale), static_cast<float>(dt));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> cfg_euler_backward_cuda(const at::Tensor& g_in, double scale, double dt,
                                                at::ScalarType velocity_dtype) {
  TORCH_CHECK(g_in.is_cuda(), "cfg_euler backward (CUDA): the gradient must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(g_in.device());
  auto g = g_in.contiguous().to(at::kFloat);
  auto dvc = at::empty(g.sizes(), g.options().dtype(velocity_dtype));
  auto dvu = at::empty_like(dvc);
  if (g.numel() == 0) return {dvc, dvu};
  auto stream = c10::cuda::getCurrentCUDAStream();
  const float a = static_cast<float>(dt * (1.0 + scale)), b = static_cast<float>(-dt * scale);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, velocity_dtype, "cfg_euler_backward_cuda", [&] {
    cfg_euler_backward_kernel<scalar_t><<<elementwise_blocks(g.numel()), kThreads, 0, stream>>>(
        g.data_ptr<float>(), dvc.data_ptr<scalar_t>(), dvu.data_ptr<scalar_t>(), g.numel(), a, b);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dvc, dvu};
}

}  // namespace zrcore
