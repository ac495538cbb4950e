// AReLU (Chen et al., "AReLU: Attention-based Rectified Linear Unit", Eq. 7) as one operator
// with a C++ autograd kernel, so that no Python runs per call:
//
//   y = C(alpha) x  for x < 0,   (1 + sigmoid(beta)) x  for x >= 0,   C clamps to [0.01, 0.99]
//
// attnact::arelu(x, alpha, beta) is the public operator (alpha, beta: one element each). Its
// autograd kernel saves y (both slopes are positive, so y has x's sign and x = y / slope, as in
// attnact.units.arelu_function) and calls attnact::arelu_forward / attnact::arelu_backward, the
// element-wise kernels (one pass each; backward also sums g*y over each sign for dalpha,
// dbeta). A backward with create_graph=True computes the same gradients from differentiable
// ATen operations instead, so double backward works.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "elementwise.h"

namespace {

using attnact_elementwise::check;
using attnact_elementwise::dense;
using attnact_elementwise::HI;
using attnact_elementwise::like;
using attnact_elementwise::LO;
using attnact_elementwise::param_grads;
using attnact_elementwise::pass_with_sums;
using attnact_elementwise::Vec;
using attnact_elementwise::W;


// The slopes in x's dtype, computed as the reference composition computes them: C(alpha) and
// 1 + sigmoid(beta) in the parameters' dtype, then converted.
std::pair<double, double> slopes(const at::Tensor& alpha, const at::Tensor& beta,
                                 at::ScalarType dtype) {
  auto neg = alpha.clamp(LO, HI).to(dtype).item<double>();
  auto pos = (beta.sigmoid() + 1.0).to(dtype).item<double>();
  return {neg, pos};
}


at::Tensor arelu_forward(const at::Tensor& x_in, const at::Tensor& alpha, const at::Tensor& beta) {
  check(x_in, alpha, beta, "attnact::arelu");
  const at::Tensor x = dense(x_in);
  at::Tensor y = at::empty_like(x);
  TORCH_INTERNAL_ASSERT(y.strides() == x.strides());
  const auto [neg, pos] = slopes(alpha, beta, x.scalar_type());
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "arelu_forward", [&] {
    using V = typename Vec<scalar_t>::type;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t sn = static_cast<scalar_t>(-neg), sp = static_cast<scalar_t>(pos);
    at::parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) {
      int64_t i = b;
      for (; i + W <= e; i += W) {
        V v;
        std::memcpy(&v, xp + i, sizeof(v));
        // |x| * (-C(alpha)) below zero keeps the sign bit even when the product underflows,
        // and |x| * (1 + sigmoid(beta)) makes an input -0 a +0: y's sign bit tells the branch
        const V a = v < 0 ? -v : v;
        const V r = v < 0 ? a * sn : a * sp;
        std::memcpy(yp + i, &r, sizeof(r));
      }
      for (; i < e; ++i) {
        const scalar_t v = xp[i];
        yp[i] = std::abs(v) * (v < 0 ? sn : sp);
      }
    });
  });
  return y;
}

// (dx, dalpha, dbeta) from y; Eq. (9)-(11) with C(alpha) in Eq. (11).
std::tuple<at::Tensor, at::Tensor, at::Tensor> arelu_backward(const at::Tensor& g_in,
                                                              const at::Tensor& y,
                                                              const at::Tensor& alpha,
                                                              const at::Tensor& beta) {
  check(y, alpha, beta, "attnact::arelu");
  TORCH_CHECK(g_in.sizes() == y.sizes(), "attnact::arelu_backward: grad must have y's shape");
  TORCH_CHECK(y.is_non_overlapping_and_dense(), "attnact::arelu_backward: y must be dense");
  const at::Tensor g = like(g_in, y);
  at::Tensor dx = at::empty_like(y);
  const auto [neg, pos] = slopes(alpha, beta, y.scalar_type());
  // at x = +-0 (y = +0, which nothing else gives) ReLU'(0) = 0 plus ELSA's x >= 0 branch:
  // sigmoid(beta), the convention of attnact.units.arelu_function and ELSA("relu")
  const double at_zero = beta.detach().sigmoid().to(y.scalar_type()).item<double>();
  const int64_t n = y.numel();
  double sn = 0, sp = 0;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "arelu_backward", [&] {
    using V = typename Vec<scalar_t>::type;
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dp = dx.data_ptr<scalar_t>();
    const scalar_t cn = static_cast<scalar_t>(neg), cp = static_cast<scalar_t>(pos);
    const scalar_t cz = static_cast<scalar_t>(at_zero);
    auto row = [&](int64_t i, V& an, V& ap) {
      const V vy = attnact_elementwise::load(yp + i), vg = attnact_elementwise::load(gp + i);
      // the sign bit of y (x < 0), read as the sign of y's bits as an integer
      typename Vec<scalar_t>::itype bits;
      std::memcpy(&bits, &vy, sizeof(bits));
      const auto below = bits < 0;
      const auto zero = bits == 0;  // +0 only: -0 is an underflowed negative x
      attnact_elementwise::store(dp + i, below ? vg * cn : (zero ? vg * cz : vg * cp));
      const V gy = vg * vy;
      an += below ? gy : V{};
      ap += below ? V{} : gy;
    };
    auto one = [&](int64_t i, double& tn, double& tp) {
      const bool below = std::signbit(yp[i]);
      dp[i] = gp[i] * (below ? cn : (yp[i] == 0 ? cz : cp));
      (below ? tn : tp) += static_cast<double>(gp[i]) * yp[i];
    };
    std::tie(sn, sp) = pass_with_sums<scalar_t>(n, row, one);
  });
  // y = C(alpha) x below zero and (1 + sigmoid(beta)) x above: sum g x = sum g y / slope
  auto [d_alpha, d_beta] = param_grads(alpha, beta, sn / neg, sp / pos);
  return {dx, d_alpha, d_beta};
}

// The same gradients in differentiable ATen operations (backward with create_graph=True).
std::vector<at::Tensor> arelu_backward_differentiable(const at::Tensor& g, const at::Tensor& y,
                                                      const at::Tensor& alpha,
                                                      const at::Tensor& beta) {
  const at::Tensor sig = beta.sigmoid();
  const at::Tensor neg = alpha.clamp(LO, HI).to(y.scalar_type());
  const at::Tensor pos = (1 + sig).to(y.scalar_type());
  const at::Tensor below = y.signbit();
  const at::Tensor zero = (y == 0).logical_and(below.logical_not());
  const at::Tensor dx = g * at::where(below, neg, at::where(zero, sig.to(y.scalar_type()), pos));
  const at::Tensor gy = g * y;
  const at::Tensor s_neg = at::where(below, gy, at::zeros_like(gy)).sum();
  const at::Tensor s_pos = at::where(below, at::zeros_like(gy), gy).sum();
  const at::Tensor inside = (alpha >= LO).logical_and(alpha <= HI);
  const at::Tensor d_alpha = at::where(inside, s_neg.to(alpha.scalar_type()) /
                                                   neg.to(alpha.scalar_type()),
                                       at::zeros_like(alpha));
  const at::Tensor d_beta =
      (s_pos.to(beta.scalar_type()) / pos.to(beta.scalar_type()) * (sig * (1 - sig)))
          .reshape(beta.sizes());
  return {dx, d_alpha.reshape(alpha.sizes()), d_beta};
}

class AReLUFn : public torch::autograd::Function<AReLUFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& alpha, const at::Tensor& beta) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("attnact::arelu_forward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&)>();
    at::Tensor y = op.call(x, alpha, beta);
    ctx->save_for_backward({y, alpha, beta});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &alpha = saved[1], &beta = saved[2];
    if (at::GradMode::is_enabled()) return arelu_backward_differentiable(grads[0], y, alpha, beta);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("attnact::arelu_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&)>();
    auto [dx, da, db] = op.call(grads[0], y, alpha, beta);
    return {dx, da.reshape(alpha.sizes()), db.reshape(beta.sizes())};
  }
};

at::Tensor arelu_autograd(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta) {
  return AReLUFn::apply(x, alpha, beta);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(attnact, m) {
  m.def("arelu(Tensor x, Tensor alpha, Tensor beta) -> Tensor");
  m.def("arelu_forward(Tensor x, Tensor alpha, Tensor beta) -> Tensor");
  m.def("arelu_backward(Tensor grad, Tensor y, Tensor alpha, Tensor beta) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attnact, CPU, m) {
  m.impl("arelu", &arelu_forward);  // below autograd (no_grad, inference mode)
  m.impl("arelu_forward", &arelu_forward);
  m.impl("arelu_backward", &arelu_backward);
}

TORCH_LIBRARY_IMPL(attnact, Autograd, m) {
  m.impl("arelu", &arelu_autograd);
}
