// Registration of the compiled ops as torch.ops.zrcore.* (schemas in TORCH_LIBRARY, kernels per dispatch key in
// TORCH_LIBRARY_IMPL: CPU always, CUDA when built with ZRCORE_WITH_CUDA). Fake (meta) kernels and autograd are
// registered from Python (zrcore/diffusion/fused.py), beside the Triton ops of the same namespace. The Python
// module zrcore._C only tells whether the CUDA kernels were built.
#include <torch/extension.h>
#include <torch/library.h>

#include <tuple>
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
#endif

using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

inline Tensor3 three(std::vector<at::Tensor> v) { return {std::move(v[0]), std::move(v[1]), std::move(v[2])}; }
inline Tensor2 two(std::vector<at::Tensor> v) { return {std::move(v[0]), std::move(v[1])}; }

// One adapter per op and device: the kernels return vectors, the schemas tuples.
#define ZRCORE_ADAPTERS(dev)                                                                                      \
  Tensor3 group_norm_silu_##dev(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,             \
                                int64_t groups, double eps) {                                                     \
    return three(group_norm_silu_forward_##dev(x, gamma, beta, groups, eps));                                    \
  }                                                                                                               \
  Tensor3 group_norm_silu_bwd_##dev(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& gamma,         \
                                    const at::Tensor& beta, const at::Tensor& mean, const at::Tensor& rstd,       \
                                    int64_t groups) {                                                             \
    return three(group_norm_silu_backward_##dev(grad, x, gamma, beta, mean, rstd, groups));                      \
  }                                                                                                               \
  Tensor2 cfg_euler_bwd_##dev(const at::Tensor& grad, double scale, double dt, at::ScalarType velocity_dtype) {   \
    return two(cfg_euler_backward_##dev(grad, scale, dt, velocity_dtype));                                       \
  }

ZRCORE_ADAPTERS(cpu)
#ifdef ZRCORE_WITH_CUDA
ZRCORE_ADAPTERS(cuda)
#endif
}  // namespace zrcore

TORCH_LIBRARY_FRAGMENT(zrcore, m) {
  m.def("group_norm_silu(Tensor x, Tensor gamma, Tensor beta, int groups, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("group_norm_silu_backward(Tensor grad, Tensor x, Tensor gamma, Tensor beta, Tensor mean, Tensor rstd, "
        "int groups) -> (Tensor, Tensor, Tensor)");
  m.def("cfg_euler_step(Tensor x, Tensor v_cond, Tensor v_uncond, float scale, float dt) -> Tensor");
  m.def("cfg_euler_step_backward(Tensor grad, float scale, float dt, ScalarType velocity_dtype) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(zrcore, CPU, m) {
  m.impl("group_norm_silu", &zrcore::group_norm_silu_cpu);
  m.impl("group_norm_silu_backward", &zrcore::group_norm_silu_bwd_cpu);
  m.impl("cfg_euler_step", &zrcore::cfg_euler_forward_cpu);
  m.impl("cfg_euler_step_backward", &zrcore::cfg_euler_bwd_cpu);
}

#ifdef ZRCORE_WITH_CUDA
TORCH_LIBRARY_IMPL(zrcore, CUDA, m) {
  m.impl("group_norm_silu", &zrcore::group_norm_silu_cuda);
  m.impl("group_norm_silu_backward", &zrcore::group_norm_silu_bwd_cuda);
  m.impl("cfg_euler_step", &zrcore::cfg_euler_forward_cuda);
  m.impl("cfg_euler_step_backward", &zrcore::cfg_euler_bwd_cuda);
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zrcore compiled kernels, registered as torch.ops.zrcore.*";
#ifdef ZRCORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
