// ELSA (Chen et al., "AReLU", Sec. 4.6, Eq. 5) around torch's parameter-free activations, as one
// operator with a C++ autograd kernel, so that no Python runs per call:
//
//   F(x) = A(x) + L(x, alpha, beta),   L = C(alpha) x  for x < 0,   sigmoid(beta) x  for x >= 0
//
// attnact::elsa(x, alpha, beta, kind, p1, p2): A is ATen's activation `kind` with up to two
// hyperparameters (elsa_activation). Like attnact.units.arelu_function.ELSAFunction it saves x
// only and recomputes A's gradient from x in backward (ATen's own backward functions, which
// need x and, for sigmoid and tanh, A(x) again). The gate's passes are element-wise kernels:
// forward y = A(x) + L(x) in one pass over A(x) and x; backward dx = dA + g * L'(x) in place of
// dA, with the sums of g x over each sign for dalpha and dbeta. A backward with
// create_graph=True computes the gate's gradients from differentiable ATen operations instead
// (ATen's activation backward functions are differentiable), so double backward works.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cstring>
#include <string>
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

constexpr double SELU_ALPHA = 1.6732632423543772848170429916717;
constexpr double SELU_SCALE = 1.0507009873554804934193349852946;


// A(x) by name, as the torch.nn module of that activation computes it.
at::Tensor elsa_activation(const at::Tensor& x, const std::string& kind, double p1, double p2) {
  if (kind == "relu") return at::relu(x);
  if (kind == "sigmoid") return at::sigmoid(x);
  if (kind == "tanh") return at::tanh(x);
  if (kind == "hardtanh") return at::hardtanh(x, p1, p2);      // min, max (ReLU6: 0, 6)
  if (kind == "leaky_relu") return at::leaky_relu(x, p1);       // negative slope
  if (kind == "elu") return at::elu(x, p1, 1.0, 1.0);           // alpha
  if (kind == "celu") return at::celu(x, p1);                   // alpha
  if (kind == "selu") return at::selu(x);
  if (kind == "gelu") return at::gelu(x, p1 != 0 ? "tanh" : "none");
  if (kind == "softplus") return at::softplus(x, p1, p2);       // beta, threshold
  if (kind == "silu") return at::silu(x);
  TORCH_CHECK(false, "attnact::elsa: unknown activation '", kind, "'; known: relu, sigmoid, "
              "tanh, hardtanh, leaky_relu, elu, celu, selu, gelu, softplus, silu");
}

// (dA/dx)^T g from x, by ATen's backward of the same activation.
at::Tensor elsa_activation_grad(const at::Tensor& g, const at::Tensor& x, const std::string& kind,
                                double p1, double p2) {
  if (kind == "relu") return at::threshold_backward(g, x, 0);
  if (kind == "sigmoid") return at::sigmoid_backward(g, at::sigmoid(x));
  if (kind == "tanh") return at::tanh_backward(g, at::tanh(x));
  if (kind == "hardtanh") return at::hardtanh_backward(g, x, p1, p2);
  if (kind == "leaky_relu") return at::leaky_relu_backward(g, x, p1, false);
  if (kind == "elu") return at::elu_backward(g, p1, 1.0, 1.0, false, x);
  if (kind == "celu") return at::elu_backward(g, p1, 1.0, 1.0 / p1, false, x);
  if (kind == "selu") return at::elu_backward(g, SELU_ALPHA, SELU_SCALE, 1.0, false, x);
  if (kind == "gelu") return at::gelu_backward(g, x, p1 != 0 ? "tanh" : "none");
  if (kind == "softplus") return at::softplus_backward(g, x, p1, p2);
  if (kind == "silu") {
    if (!at::GradMode::is_enabled()) return at::silu_backward(g, x);
    const at::Tensor s = at::sigmoid(x);  // silu_backward has no derivative of its own
    return g * (s * (1 + x * (1 - s)));
  }
  TORCH_CHECK(false, "attnact::elsa: unknown activation '", kind, "'");
}

// The gate's slopes in x's dtype, as the reference computes them: C(alpha) and sigmoid(beta) in
// the parameters' dtype, then converted.
std::pair<double, double> slopes(const at::Tensor& alpha, const at::Tensor& beta,
                                 at::ScalarType dtype) {
  return {alpha.clamp(LO, HI).to(dtype).item<double>(), beta.sigmoid().to(dtype).item<double>()};
}

// y = A(x) + L(x): one pass over a and x.
at::Tensor gate_forward(const at::Tensor& a_in, const at::Tensor& x, const at::Tensor& alpha,
                        const at::Tensor& beta) {
  const at::Tensor a = like(a_in, x);
  at::Tensor y = at::empty_like(x);
  const auto [neg, pos] = slopes(alpha, beta, x.scalar_type());
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elsa_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t sn = static_cast<scalar_t>(neg), sp = static_cast<scalar_t>(pos);
    using V = typename Vec<scalar_t>::type;
    at::parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) {
      int64_t i = b;
      for (; i + W <= e; i += W) {
        V v, va;
        std::memcpy(&v, xp + i, sizeof(v));
        std::memcpy(&va, ap + i, sizeof(va));
        const V l = v * (v >= 0 ? V{} + sp : V{} + sn);  // the product first, as the reference
        const V r = l + va;
        std::memcpy(yp + i, &r, sizeof(r));
      }
      for (; i < e; ++i) {
        const scalar_t v = xp[i];
        const scalar_t l = v * (v >= 0 ? sp : sn);
        yp[i] = l + ap[i];
      }
    });
  });
  return y;
}

// dx = dA + g L'(x) (written into dA, which backward made), Eq. (9)-(10) for dalpha and dbeta.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gate_backward(const at::Tensor& g_in,
                                                             const at::Tensor& x,
                                                             at::Tensor da,
                                                             const at::Tensor& alpha,
                                                             const at::Tensor& beta) {
  const at::Tensor g = like(g_in, x);
  if (da.strides() != x.strides() || da.scalar_type() != x.scalar_type()) da = like(da, x);
  const auto [neg, pos] = slopes(alpha, beta, x.scalar_type());
  const int64_t n = x.numel();
  double sn = 0, sp = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elsa_backward", [&] {
    using V = typename Vec<scalar_t>::type;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dp = da.data_ptr<scalar_t>();
    const scalar_t cn = static_cast<scalar_t>(neg), cp = static_cast<scalar_t>(pos);
    auto row = [&](int64_t i, V& an, V& ap) {
      const V vx = attnact_elementwise::load(xp + i), vg = attnact_elementwise::load(gp + i);
      const auto above = vx >= 0;
      attnact_elementwise::store(
          dp + i, attnact_elementwise::load(dp + i) + vg * (above ? V{} + cp : V{} + cn));
      const V gx = vg * vx;
      an += above ? V{} : gx;
      ap += above ? gx : V{};
    };
    auto one = [&](int64_t i, double& tn, double& tp) {
      const bool above = xp[i] >= 0;
      dp[i] += gp[i] * (above ? cp : cn);
      (above ? tp : tn) += static_cast<double>(gp[i]) * xp[i];
    };
    std::tie(sn, sp) = pass_with_sums<scalar_t>(n, row, one);
  });
  auto [d_alpha, d_beta] = param_grads(alpha, beta, sn, sp);
  return {da, d_alpha, d_beta};
}

// The gate's gradients in differentiable ATen operations (backward with create_graph=True).
std::vector<at::Tensor> gate_backward_differentiable(const at::Tensor& g, const at::Tensor& x,
                                                     const at::Tensor& da,
                                                     const at::Tensor& alpha,
                                                     const at::Tensor& beta) {
  const at::Tensor sig = beta.sigmoid();
  const at::Tensor above = x >= 0;
  const at::Tensor slope = at::where(above, sig.to(x.scalar_type()),
                                     alpha.clamp(LO, HI).to(x.scalar_type()));
  const at::Tensor gx = g * x;
  const at::Tensor s_pos = at::where(above, gx, at::zeros_like(gx)).sum();
  const at::Tensor s_neg = at::where(above, at::zeros_like(gx), gx).sum();
  const at::Tensor inside = (alpha >= LO).logical_and(alpha <= HI);
  const at::Tensor d_alpha = at::where(inside, s_neg.to(alpha.scalar_type()),
                                       at::zeros_like(alpha));
  const at::Tensor d_beta = (s_pos.to(beta.scalar_type()) * (sig * (1 - sig))).reshape(
      beta.sizes());
  return {da + g * slope, d_alpha.reshape(alpha.sizes()), d_beta};
}

at::Tensor elsa_forward(const at::Tensor& x_in, const at::Tensor& alpha, const at::Tensor& beta,
                        c10::string_view kind, double p1, double p2) {
  check(x_in, alpha, beta, "attnact::elsa");
  const at::Tensor x = dense(x_in);
  return gate_forward(elsa_activation(x, std::string(kind), p1, p2), x, alpha, beta);
}

// (dx, dalpha, dbeta) from x (dense, as forward saved it).
std::tuple<at::Tensor, at::Tensor, at::Tensor> elsa_backward(
    const at::Tensor& g, const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta,
    c10::string_view kind, double p1, double p2) {
  check(x, alpha, beta, "attnact::elsa");
  TORCH_CHECK(g.sizes() == x.sizes(), "attnact::elsa_backward: grad must have x's shape");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "attnact::elsa_backward: x must be dense");
  at::Tensor da = elsa_activation_grad(g, x, std::string(kind), p1, p2);
  auto [dx, d_alpha, d_beta] = gate_backward(g, x, da, alpha, beta);
  return {dx, d_alpha.reshape(alpha.sizes()), d_beta.reshape(beta.sizes())};
}

class ELSAFn : public torch::autograd::Function<ELSAFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& alpha, const at::Tensor& beta,
                            c10::string_view kind, double p1, double p2) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("attnact::elsa_forward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, c10::string_view, double, double)>();
    const at::Tensor x = dense(x_in);
    at::Tensor y = op.call(x, alpha, beta, kind, p1, p2);
    ctx->save_for_backward({x, alpha, beta});
    ctx->saved_data["kind"] = std::string(kind);
    ctx->saved_data["p1"] = p1;
    ctx->saved_data["p2"] = p2;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &alpha = saved[1], &beta = saved[2];
    const std::string kind = ctx->saved_data["kind"].toStringRef();
    const double p1 = ctx->saved_data["p1"].toDouble(), p2 = ctx->saved_data["p2"].toDouble();
    const at::Tensor& g = grads[0];
    if (at::GradMode::is_enabled()) {
      const at::Tensor da = elsa_activation_grad(g, x, kind, p1, p2);
      auto out = gate_backward_differentiable(g, x, da, alpha, beta);
      return {out[0], out[1], out[2], at::Tensor(), at::Tensor(), at::Tensor()};
    }
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("attnact::elsa_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, c10::string_view, double, double)>();
    auto [dx, d_alpha, d_beta] = op.call(g, x, alpha, beta, kind, p1, p2);
    return {dx, d_alpha, d_beta, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor elsa_autograd(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta,
                         c10::string_view kind, double p1, double p2) {
  return ELSAFn::apply(x, alpha, beta, kind, p1, p2);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(attnact, m) {
  m.def("elsa(Tensor x, Tensor alpha, Tensor beta, str kind, float p1, float p2) -> Tensor");
  m.def("elsa_forward(Tensor x, Tensor alpha, Tensor beta, str kind, float p1, float p2) -> "
        "Tensor");
  m.def("elsa_backward(Tensor grad, Tensor x, Tensor alpha, Tensor beta, str kind, float p1, "
        "float p2) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attnact, CPU, m) {
  m.impl("elsa", &elsa_forward);  // below autograd (no_grad, inference mode)
  m.impl("elsa_forward", &elsa_forward);
  m.impl("elsa_backward", &elsa_backward);
}

TORCH_LIBRARY_IMPL(attnact, Autograd, m) {
  m.impl("elsa", &elsa_autograd);
}
