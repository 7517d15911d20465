// Python bindings of the compiled extension zrcore._C: each op dispatches on the input's device to its kernel in
// csrc/cpu or, when built with CUDA (ZRCORE_WITH_CUDA), csrc/cuda.
#include <torch/extension.h>

#include <vector>

namespace zrcore {
std::vector<at::Tensor> group_norm_silu_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                    double);
std::vector<at::Tensor> group_norm_silu_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t);
at::Tensor cfg_euler_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double);
std::vector<at::Tensor> cfg_euler_backward_cpu(const at::Tensor&, double, double, at::ScalarType);
#ifdef ZRCORE_WITH_CUDA
std::vector<at::Tensor> group_norm_silu_forward_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                     double);
std::vector<at::Tensor> group_norm_silu_backward_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t);
at::Tensor cfg_euler_forward_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double);
std::vector<at::Tensor> cfg_euler_backward_cuda(const at::Tensor&, double, double, at::ScalarType);
#define ZRCORE_DISPATCH(tensor, name, ...) \
  return (tensor).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__)
#else
#define ZRCORE_DISPATCH(tensor, name, ...)                                                          \
  TORCH_CHECK(!(tensor).is_cuda(), #name ": zrcore._C was built without CUDA (set CUDA_HOME and " \
              "reinstall with a CUDA build of torch)");                                             \
  return name##_cpu(__VA_ARGS__)
#endif

std::vector<at::Tensor> group_norm_silu_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                                int64_t groups, double eps) {
  ZRCORE_DISPATCH(x, group_norm_silu_forward, x, gamma, beta, groups, eps);
}

std::vector<at::Tensor> group_norm_silu_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                                 const at::Tensor& beta, const at::Tensor& mean,
                                                 const at::Tensor& rstd, int64_t groups) {
  ZRCORE_DISPATCH(x, group_norm_silu_backward, dy, x, gamma, beta, mean, rstd, groups);
}

at::Tensor cfg_euler_forward(const at::Tensor& x, const at::Tensor& vc, const at::Tensor& vu, double scale,
                             double dt) {
  ZRCORE_DISPATCH(x, cfg_euler_forward, x, vc, vu, scale, dt);
}

std::vector<at::Tensor> cfg_euler_backward(const at::Tensor& g, double scale, double dt,
                                           at::ScalarType velocity_dtype) {
  ZRCORE_DISPATCH(g, cfg_euler_backward, g, scale, dt, velocity_dtype);
}
}  // namespace zrcore

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zrcore compiled kernels";
  m.def("group_norm_silu_forward", &zrcore::group_norm_silu_forward, "fused GroupNorm + SiLU: (y, mean, rstd)");
  m.def("group_norm_silu_backward", &zrcore::group_norm_silu_backward, "its backward, recomputing xhat");
  m.def("cfg_euler_forward", &zrcore::cfg_euler_forward, "fused CFG combine + Euler step");
  m.def("cfg_euler_backward", &zrcore::cfg_euler_backward, "its backward: (dx, dv_cond, dv_uncond)");
#ifdef ZRCORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
