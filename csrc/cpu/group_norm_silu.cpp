// Fused GroupNorm + SiLU on CPU, forward and backward. The backward recomputes the normalised activation from the
// saved input and per-group statistics instead of keeping it (one activation less per layer).
//   xhat = (x - mean_g) * rstd_g,  z = gamma_c xhat + beta_c,  y = z * sigmoid(z)
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../group_norm_silu_common.h"

namespace zrcore {

namespace {
GroupNormShape check_inputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, int64_t groups) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "group_norm_silu: x must be float32 on the CPU path");
  return check_group_norm_silu_inputs(x, gamma, beta, groups);
}
}  // namespace

std::vector<at::Tensor> group_norm_silu_forward_cpu(const at::Tensor& x_in, const at::Tensor& gamma_in,
                                                    const at::Tensor& beta_in, int64_t groups, double eps) {
  const GroupNormShape shape = check_inputs(x_in, gamma_in, beta_in, groups);
  const int64_t N = shape.N, C = shape.C, HW = shape.HW, cpg = shape.cpg, count = shape.count;
  auto x = x_in.contiguous();
  auto gamma = gamma_in.contiguous().to(at::kFloat);
  auto beta = beta_in.contiguous().to(at::kFloat);
  auto y = at::empty_like(x);
  if (x.numel() == 0) return {y, at::zeros({N, groups}, x.options()), at::ones({N, groups}, x.options())};
  auto mean = at::empty({N, groups}, x.options());
  auto rstd = at::empty({N, groups}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = gamma.data_ptr<float>();
  const float* bp = beta.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  at::parallel_for(0, N * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / groups, g = ng % groups;
      const float* base = xp + (n * C + g * cpg) * HW;
      double sum = 0.0, sq = 0.0;
      for (int64_t i = 0; i < count; ++i) {
        sum += base[i];
        sq += static_cast<double>(base[i]) * base[i];
      }
      const double m = sum / count;
      const double var = std::max(sq / count - m * m, 0.0);
      const float r = static_cast<float>(1.0 / std::sqrt(var + eps));
      mp[ng] = static_cast<float>(m);
      rp[ng] = r;
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        const float a = gp[ch] * r, b = bp[ch] - static_cast<float>(m) * a;
        const float* xc = base + c * HW;
        float* yc = yp + (n * C + ch) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          const float z = a * xc[i] + b;
          yc[i] = z / (1.0f + std::exp(-z));
        }
      }
    }
  });
  return {y, mean, rstd};
}

std::vector<at::Tensor> group_norm_silu_backward_cpu(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                     const at::Tensor& gamma_in, const at::Tensor& beta_in,
                                                     const at::Tensor& mean, const at::Tensor& rstd, int64_t groups) {
  const GroupNormShape shape = check_inputs(x_in, gamma_in, beta_in, groups);
  const int64_t N = shape.N, C = shape.C, HW = shape.HW, cpg = shape.cpg, count = shape.count;
  auto x = x_in.contiguous();
  auto dy = dy_in.contiguous().to(at::kFloat);
  auto gamma = gamma_in.contiguous().to(at::kFloat);
  auto beta = beta_in.contiguous().to(at::kFloat);
  auto dx = at::empty_like(x);
  if (x.numel() == 0) return {dx, at::zeros({C}, x.options()), at::zeros({C}, x.options())};
  TORCH_CHECK(dy_in.sizes() == x_in.sizes(), "group_norm_silu backward: dy and x must have one shape");
  // per-(n, channel) partial sums for dgamma / dbeta, reduced over n afterwards (no races between threads)
  auto dgamma_n = at::zeros({N, C}, x.options());
  auto dbeta_n = at::zeros({N, C}, x.options());
  const float *xp = x.data_ptr<float>(), *dyp = dy.data_ptr<float>(), *gp = gamma.data_ptr<float>(),
              *bp = beta.data_ptr<float>(), *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  float *dxp = dx.data_ptr<float>(), *dgp = dgamma_n.data_ptr<float>(), *dbp = dbeta_n.data_ptr<float>();
  at::parallel_for(0, N * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / groups, g = ng % groups;
      const float m = mp[ng], r = rp[ng];
      double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        const float* xc = xp + (n * C + ch) * HW;
        const float* dyc = dyp + (n * C + ch) * HW;
        double dgam = 0.0, dbet = 0.0;
        for (int64_t i = 0; i < HW; ++i) {
          const float xhat = (xc[i] - m) * r;
          const float z = gp[ch] * xhat + bp[ch];
          const float s = 1.0f / (1.0f + std::exp(-z));
          const float gz = dyc[i] * s * (1.0f + z * (1.0f - s));  // d silu / dz
          dgam += static_cast<double>(gz) * xhat;
          dbet += gz;
          const float dxhat = gz * gp[ch];
          sum_dxhat += dxhat;
          sum_dxhat_xhat += static_cast<double>(dxhat) * xhat;
        }
        dgp[n * C + ch] = static_cast<float>(dgam);
        dbp[n * C + ch] = static_cast<float>(dbet);
      }
      const float mean_dxhat = static_cast<float>(sum_dxhat / count);
      const float mean_dxhat_xhat = static_cast<float>(sum_dxhat_xhat / count);
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        const float* xc = xp + (n * C + ch) * HW;
        const float* dyc = dyp + (n * C + ch) * HW;
        float* dxc = dxp + (n * C + ch) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          const float xhat = (xc[i] - m) * r;
          const float z = gp[ch] * xhat + bp[ch];
          const float s = 1.0f / (1.0f + std::exp(-z));
          const float dxhat = dyc[i] * s * (1.0f + z * (1.0f - s)) * gp[ch];
          dxc[i] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
        }
      }
    }
  });
  return {dx, dgamma_n.sum(0), dbeta_n.sum(0)};
}

}  // namespace zrcore
