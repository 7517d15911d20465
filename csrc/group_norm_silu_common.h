// Argument checks and layout of the fused GroupNorm + SiLU, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace zrcore {

// x viewed as [N, C, HW] with C split into groups of cpg channels; count = cpg * HW elements per (n, group).
struct GroupNormShape {
  int64_t N, C, HW, cpg, count;
};

inline GroupNormShape check_group_norm_silu_inputs(const at::Tensor& x, const at::Tensor& gamma,
                                                   const at::Tensor& beta, int64_t groups) {
  TORCH_CHECK(x.dim() >= 2, "group_norm_silu: x must be [N, C, ...], got ", x.dim(), " dimensions");
  const int64_t C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, "group_norm_silu: channels ", C, " not divisible by groups ", groups);
  TORCH_CHECK(gamma.numel() == C && beta.numel() == C, "group_norm_silu: gamma and beta need C = ", C, " entries");
  int64_t HW = 1;
  for (int64_t d = 2; d < x.dim(); ++d) HW *= x.size(d);
  return {x.size(0), C, HW, C / groups, (C / groups) * HW};
}

}  // namespace zrcore
