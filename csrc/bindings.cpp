// Python bindings of the compiled extension zrcore._C (kernels in csrc/cpu and, when built with CUDA, csrc/cuda).
#include <torch/extension.h>

#include <vector>

namespace zrcore {
std::vector<at::Tensor> group_norm_silu_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                    double);
std::vector<at::Tensor> group_norm_silu_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t);
at::Tensor cfg_euler_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double);
std::vector<at::Tensor> cfg_euler_backward_cpu(const at::Tensor&, double, double);
}  // namespace zrcore

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zrcore compiled kernels";
  m.def("group_norm_silu_forward", &zrcore::group_norm_silu_forward_cpu, "fused GroupNorm + SiLU (CPU)");
  m.def("group_norm_silu_backward", &zrcore::group_norm_silu_backward_cpu, "its backward, recomputing xhat");
  m.def("cfg_euler_forward", &zrcore::cfg_euler_forward_cpu, "fused CFG combine + Euler step (CPU)");
  m.def("cfg_euler_backward", &zrcore::cfg_euler_backward_cpu, "its backward");
#ifdef ZRCORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
