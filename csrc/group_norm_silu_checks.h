// Argument checks of the fused GroupNorm + SiLU, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace zrcore {

inline void check_group_norm_silu_inputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                         int64_t groups) {
  TORCH_CHECK(x.dim() >= 2, "group_norm_silu: x must be [N, C, ...], got ", x.dim(), " dimensions");
  const int64_t C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, "group_norm_silu: channels ", C, " not divisible by groups ", groups);
  TORCH_CHECK(gamma.numel() == C && beta.numel() == C, "group_norm_silu: gamma and beta need C = ", C, " entries");
}

}  // namespace zrcore
