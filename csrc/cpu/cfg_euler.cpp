// Fused classifier-free-guidance combine + Euler step on fp32 master latents (CPU):
//   x_next = x + dt * (v_c + s (v_c - v_u)),  dx = g,  dv_c = g dt (1 + s),  dv_u = -g dt s
// The kernels return (dv_c, dv_u) in the velocities' dtype; dx = g is the incoming gradient itself.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <vector>

namespace zrcore {

at::Tensor cfg_euler_forward_cpu(const at::Tensor& x_in, const at::Tensor& vc_in, const at::Tensor& vu_in,
                                 double scale, double dt) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "cfg_euler: latents x must be float32 (master latents)");
  TORCH_CHECK(x_in.sizes() == vc_in.sizes() && x_in.sizes() == vu_in.sizes(),
              "cfg_euler: x, v_cond and v_uncond must have one shape");
  auto x = x_in.contiguous();
  auto vc = vc_in.contiguous().to(at::kFloat);
  auto vu = vu_in.contiguous().to(at::kFloat);
  auto out = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *cp = vc.data_ptr<float>(), *up = vu.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float s = static_cast<float>(scale), d = static_cast<float>(dt);
  at::parallel_for(0, x.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) op[i] = xp[i] + d * (cp[i] + s * (cp[i] - up[i]));
  });
  return out;
}

std::vector<at::Tensor> cfg_euler_backward_cpu(const at::Tensor& g_in, double scale, double dt,
                                               at::ScalarType velocity_dtype) {
  auto g = g_in.contiguous().to(at::kFloat);
  auto dvc = at::empty_like(g);
  auto dvu = at::empty_like(g);
  const float* gp = g.data_ptr<float>();
  float *cp = dvc.data_ptr<float>(), *up = dvu.data_ptr<float>();
  const float a = static_cast<float>(dt * (1.0 + scale)), b = static_cast<float>(-dt * scale);
  at::parallel_for(0, g.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cp[i] = a * gp[i];
      up[i] = b * gp[i];
    }
  });
  if (velocity_dtype == at::kFloat) return {dvc, dvu};
  return {dvc.to(velocity_dtype), dvu.to(velocity_dtype)};
}

}  // namespace zrcore
