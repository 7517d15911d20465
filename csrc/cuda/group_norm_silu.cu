// Fused GroupNorm + SiLU on CUDA, forward and backward, for float32 / bfloat16 / float16 activations with float32
// statistics. The backward recomputes the normalised activation from the saved input and per-group statistics.
//   xhat = (x - mean_g) * rstd_g,  z = gamma_c xhat + beta_c,  y = z * sigmoid(z)
//   gz = dy * s (1 + z (1 - s)),  s = sigmoid(z);  dxhat = gz gamma_c
//   dx = rstd_g (dxhat - mean_g(dxhat) - xhat mean_g(dxhat xhat)),  dgamma_c = sum gz xhat,  dbeta_c = sum gz
// Per-(n, c) sums of gz and gz xhat give the group means as well (sum dxhat = sum_c gamma_c sum gz), so both
// passes are one partial-reduction kernel plus one element-wise kernel.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>

#include "../group_norm_silu_common.h"
#include "launch.cuh"

#include <vector>

namespace zrcore {

namespace {

constexpr int64_t kItemsPerBlock = 8192;  // elements one block reduces before partial sums are combined

int64_t num_splits(int64_t count) {
  return std::max<int64_t>(1, std::min<int64_t>(256, (count + kItemsPerBlock - 1) / kItemsPerBlock));
}

__device__ __forceinline__ float sigmoidf(float z) { return 1.0f / (1.0f + __expf(-z)); }

// grid (rows, splits): partial sum and sum of squares of each row (one (n, group) of count elements), in double.
template <typename scalar_t>
__global__ void row_moments_kernel(const scalar_t* __restrict__ x, int64_t count, int64_t chunk,
                                   double* __restrict__ sum, double* __restrict__ sq) {
  __shared__ double shared[kThreads / 32];
  const int64_t row = blockIdx.x, split = blockIdx.y;
  const scalar_t* base = x + row * count;
  const int64_t begin = split * chunk, end = begin + chunk < count ? begin + chunk : count;
  double s = 0.0, q = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double v = static_cast<double>(static_cast<float>(base[i]));
    s += v;
    q += v * v;
  }
  store_block_sums(s, q, shared, sum, sq, row * gridDim.y + split);
}

template <typename scalar_t>
__global__ void group_norm_silu_apply_kernel(const scalar_t* __restrict__ x, const float* __restrict__ gamma,
                                             const float* __restrict__ beta, const float* __restrict__ mean,
                                             const float* __restrict__ rstd, scalar_t* __restrict__ y, int64_t total,
                                             int64_t HW, int64_t C, int64_t group_size) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ng = i / group_size, c = (i / HW) % C;
    const float z = gamma[c] * (static_cast<float>(x[i]) - mean[ng]) * rstd[ng] + beta[c];
    y[i] = static_cast<scalar_t>(z * sigmoidf(z));
  }
}

// grid (N * C, splits): partial sums over one channel plane of gz and gz * xhat.
template <typename scalar_t>
__global__ void channel_grad_sums_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         const float* __restrict__ mean, const float* __restrict__ rstd, int64_t HW,
                                         int64_t C, int64_t cpg, int64_t chunk, float* __restrict__ sum_gz,
                                         float* __restrict__ sum_gz_xhat) {
  __shared__ float shared[kThreads / 32];
  const int64_t nc = blockIdx.x, split = blockIdx.y;
  const int64_t c = nc % C, ng = (nc / C) * (C / cpg) + c / cpg;
  const float m = mean[ng], r = rstd[ng], ga = gamma[c], be = beta[c];
  const int64_t begin = split * chunk, end = begin + chunk < HW ? begin + chunk : HW;
  float a = 0.f, b = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t k = nc * HW + i;
    const float xhat = (static_cast<float>(x[k]) - m) * r;
    const float z = ga * xhat + be, s = sigmoidf(z);
    const float gz = static_cast<float>(dy[k]) * s * (1.0f + z * (1.0f - s));
    a += gz;
    b += gz * xhat;
  }
  store_block_sums(a, b, shared, sum_gz, sum_gz_xhat, nc * gridDim.y + split);
}

template <typename scalar_t>
__global__ void group_norm_silu_dx_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                          const float* __restrict__ gamma, const float* __restrict__ beta,
                                          const float* __restrict__ mean, const float* __restrict__ rstd,
                                          const float* __restrict__ mean_dxhat, const float* __restrict__ mean_dxhat_xhat,
                                          scalar_t* __restrict__ dx, int64_t total, int64_t HW, int64_t C,
                                          int64_t group_size) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ng = i / group_size, c = (i / HW) % C;
    const float xhat = (static_cast<float>(x[i]) - mean[ng]) * rstd[ng];
    const float z = gamma[c] * xhat + beta[c], s = sigmoidf(z);
    const float dxhat = static_cast<float>(dy[i]) * s * (1.0f + z * (1.0f - s)) * gamma[c];
    dx[i] = static_cast<scalar_t>(rstd[ng] * (dxhat - mean_dxhat[ng] - xhat * mean_dxhat_xhat[ng]));
  }
}

GroupNormShape check_inputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, int64_t groups) {
  TORCH_CHECK(x.is_cuda(), "group_norm_silu (CUDA): x must be a CUDA tensor");
  return check_group_norm_silu_inputs(x, gamma, beta, groups);
}

}  // namespace

std::vector<at::Tensor> group_norm_silu_forward_cuda(const at::Tensor& x_in, const at::Tensor& gamma_in,
                                                     const at::Tensor& beta_in, int64_t groups, double eps) {
  const GroupNormShape shape = check_inputs(x_in, gamma_in, beta_in, groups);
  const int64_t N = shape.N, C = shape.C, HW = shape.HW, count = shape.count, rows = N * groups;
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  auto gamma = gamma_in.contiguous().to(at::kFloat);
  auto beta = beta_in.contiguous().to(at::kFloat);
  auto y = at::empty_like(x);
  auto f32 = x.options().dtype(at::kFloat);
  if (x.numel() == 0) return {y, at::zeros({N, groups}, f32), at::ones({N, groups}, f32)};
  const int64_t splits = num_splits(count), chunk = (count + splits - 1) / splits;
  auto sum = at::empty({rows, splits}, x.options().dtype(at::kDouble));
  auto sq = at::empty_like(sum);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_norm_silu_forward_cuda", [&] {
    row_moments_kernel<scalar_t><<<dim3(rows, splits), kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), count, chunk, sum.data_ptr<double>(), sq.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto mean64 = sum.sum(1) / static_cast<double>(count);
  auto var64 = (sq.sum(1) / static_cast<double>(count) - mean64 * mean64).clamp_min(0.0);
  auto mean = mean64.to(at::kFloat).view({N, groups});
  auto rstd = (var64 + eps).rsqrt().to(at::kFloat).view({N, groups});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_norm_silu_forward_cuda", [&] {
    group_norm_silu_apply_kernel<scalar_t><<<elementwise_blocks(x.numel()), kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), gamma.data_ptr<float>(), beta.data_ptr<float>(), mean.data_ptr<float>(),
        rstd.data_ptr<float>(), y.data_ptr<scalar_t>(), x.numel(), HW, C, count);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, mean, rstd};
}

std::vector<at::Tensor> group_norm_silu_backward_cuda(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                      const at::Tensor& gamma_in, const at::Tensor& beta_in,
                                                      const at::Tensor& mean_in, const at::Tensor& rstd_in,
                                                      int64_t groups) {
  const GroupNormShape shape = check_inputs(x_in, gamma_in, beta_in, groups);
  const int64_t N = shape.N, C = shape.C, HW = shape.HW, cpg = shape.cpg, count = shape.count;
  TORCH_CHECK(dy_in.sizes() == x_in.sizes(), "group_norm_silu backward: dy and x must have one shape");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  auto dy = dy_in.contiguous().to(x.scalar_type());
  auto gamma = gamma_in.contiguous().to(at::kFloat);
  auto beta = beta_in.contiguous().to(at::kFloat);
  auto mean = mean_in.contiguous().to(at::kFloat);
  auto rstd = rstd_in.contiguous().to(at::kFloat);
  auto dx = at::empty_like(x);
  auto f32 = x.options().dtype(at::kFloat);
  if (x.numel() == 0) return {dx, at::zeros({C}, f32), at::zeros({C}, f32)};
  const int64_t splits = num_splits(HW), chunk = (HW + splits - 1) / splits;
  auto sum_gz = at::empty({N * C, splits}, f32);
  auto sum_gz_xhat = at::empty_like(sum_gz);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_norm_silu_backward_cuda", [&] {
    channel_grad_sums_kernel<scalar_t><<<dim3(N * C, splits), kThreads, 0, stream>>>(
        dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gamma.data_ptr<float>(), beta.data_ptr<float>(),
        mean.data_ptr<float>(), rstd.data_ptr<float>(), HW, C, cpg, chunk, sum_gz.data_ptr<float>(),
        sum_gz_xhat.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto dbeta_nc = sum_gz.sum(1).view({N, C});
  auto dgamma_nc = sum_gz_xhat.sum(1).view({N, C});
  // group means of dxhat = gz gamma_c and of dxhat * xhat
  auto mean_dxhat = ((dbeta_nc * gamma).view({N, groups, cpg}).sum(2) / static_cast<double>(count)).contiguous();
  auto mean_dxhat_xhat =
      ((dgamma_nc * gamma).view({N, groups, cpg}).sum(2) / static_cast<double>(count)).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_norm_silu_backward_cuda", [&] {
    group_norm_silu_dx_kernel<scalar_t><<<elementwise_blocks(x.numel()), kThreads, 0, stream>>>(
        dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gamma.data_ptr<float>(), beta.data_ptr<float>(),
        mean.data_ptr<float>(), rstd.data_ptr<float>(), mean_dxhat.data_ptr<float>(),
        mean_dxhat_xhat.data_ptr<float>(), dx.data_ptr<scalar_t>(), x.numel(), HW, C, count);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dx, dgamma_nc.sum(0), dbeta_nc.sum(0)};
}

}  // namespace zrcore
