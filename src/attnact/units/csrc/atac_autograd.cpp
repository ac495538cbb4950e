// Autograd of attnact::atac_forward and attnact::bn_atac_forward (atac.cpp) in C++: the forward
// operator's kernels run below autograd, and backward calls atac_backward / bn_atac_backward.
// Registered here rather than with torch.library.register_autograd so that no Python runs per
// call: that wrapper re-reads the operator's schema on every call (fill_defaults walks
// schema.arguments, which builds the whole argument list anew for each index: quadratic in
// these operators' 17 and 23 arguments; measured in benchmarks/atac-overheads-issue14.md).
//
// Outputs after y (z1 and the batch statistics) are for backward and for the running-statistics
// update: they are non-differentiable, and their gradients are not materialised (that would
// allocate and zero a z1-sized tensor in every backward).
//
// The backward operators keep their Python autograd (native.py), which refuses a second
// derivative: they are called through it only when backward records a graph
// (create_graph=True); otherwise they are called below autograd.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptT = c10::optional<at::Tensor>;
using Fwd6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Fwd8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor>;
using Bwd7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor>;
using Bwd9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                        at::Tensor, at::Tensor, at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Calls a backward operator: through its autograd (the refusal of a second derivative) when
// backward records a graph, else straight to its kernel.
template <typename R, typename... Args, typename... Given>
R call_backward(const c10::TypedOperatorHandle<R(Args...)>& handle, const Given&... args) {
  if (at::GradMode::is_enabled()) return handle.call(args...);
  at::AutoDispatchBelowADInplaceOrView below;
  return handle.call(args...);
}

void outputs_for_backward_only(AutogradContext* ctx, const variable_list& outputs) {
  ctx->mark_non_differentiable(variable_list(outputs.begin() + 1, outputs.end()));
  ctx->set_materialize_grads(false);
}

template <typename Tuple, size_t... I>
variable_list to_list(const Tuple& t, std::index_sequence<I...>) {
  return {std::get<I>(t)...};
}
template <typename... Ts>
variable_list to_list(const std::tuple<Ts...>& t) {
  return to_list(t, std::index_sequence_for<Ts...>{});
}

template <size_t... I>
auto to_tuple(const variable_list& v, std::index_sequence<I...>) {
  return std::make_tuple(v[I]...);
}
template <size_t N>
auto to_tuple(const variable_list& v) {
  return to_tuple(v, std::make_index_sequence<N>{});
}

// ATAC's own flags (BN1's and BN2's batch-statistics switches and eps, the inner ReLU), kept in
// the context for backward.
struct Flags {
  bool batch1, batch2;
  double eps1, eps2;
  bool relu;
};

void save_flags(AutogradContext* ctx, const Flags& f) {
  ctx->saved_data["batch1"] = f.batch1;
  ctx->saved_data["batch2"] = f.batch2;
  ctx->saved_data["eps1"] = f.eps1;
  ctx->saved_data["eps2"] = f.eps2;
  ctx->saved_data["relu"] = f.relu;
}

Flags saved_flags(AutogradContext* ctx) {
  const auto& d = ctx->saved_data;
  return {d.at("batch1").toBool(), d.at("batch2").toBool(), d.at("eps1").toDouble(),
          d.at("eps2").toDouble(), d.at("relu").toBool()};
}

class AtacFn : public torch::autograd::Function<AtacFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1,
                               const at::Tensor& g1, const at::Tensor& b1, const at::Tensor& w2,
                               const at::Tensor& g2, const at::Tensor& b2, const OptT& rm1,
                               const OptT& rv1, const OptT& rm2, const OptT& rv2, bool batch1,
                               bool batch2, double eps1, double eps2, bool relu, bool keep_z1) {
    static auto fwd = op<Fwd6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const OptT&, const OptT&, const OptT&,
                              const OptT&, bool, bool, double, double, bool, bool)>(
        "attnact::atac_forward");
    at::AutoDispatchBelowADInplaceOrView below;  // to the kernel, not back to this function
    variable_list out = to_list(fwd.call(x, w1, g1, b1, w2, g2, b2, rm1, rv1, rm2, rv2, batch1,
                                         batch2, eps1, eps2, relu, keep_z1));
    // x, z1, the weights and the batch statistics (out: y, z1, mean1, var1, mean2, var2)
    ctx->save_for_backward({x, out[1], w1, g1, b1, w2, g2, b2, out[2], out[3], out[4], out[5]});
    save_flags(ctx, {batch1, batch2, eps1, eps2, relu});
    outputs_for_backward_only(ctx, out);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = op<Bwd7(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, bool, bool, double, double, bool)>(
        "attnact::atac_backward");
    if (!grads[0].defined()) return variable_list(17);  // no gradient reached y
    const variable_list s = ctx->get_saved_variables();
    const Flags f = saved_flags(ctx);
    variable_list g = to_list(call_backward(bwd, grads[0], s[0], s[1], s[2], s[3], s[4], s[5],
                                            s[6], s[7], s[8], s[9], s[10], s[11], f.batch1,
                                            f.batch2, f.eps1, f.eps2, f.relu));
    g.resize(17);  // no gradients for the running statistics and the flags
    return g;
  }
};

Fwd6 atac_autograd(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& g1,
                   const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& g2,
                   const at::Tensor& b2, const OptT& rm1, const OptT& rv1, const OptT& rm2,
                   const OptT& rv2, bool batch1, bool batch2, double eps1, double eps2,
                   bool relu, bool keep_z1) {
  return to_tuple<6>(AtacFn::apply(x, w1, g1, b1, w2, g2, b2, rm1, rv1, rm2, rv2, batch1, batch2,
                                   eps1, eps2, relu, keep_z1));
}

class BnAtacFn : public torch::autograd::Function<BnAtacFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& c, const at::Tensor& g0,
                               const at::Tensor& b0, const OptT& rm0, const OptT& rv0,
                               bool batch0, double eps0, const at::Tensor& w1,
                               const at::Tensor& g1, const at::Tensor& b1, const at::Tensor& w2,
                               const at::Tensor& g2, const at::Tensor& b2, const OptT& rm1,
                               const OptT& rv1, const OptT& rm2, const OptT& rv2, bool batch1,
                               bool batch2, double eps1, double eps2, bool relu, bool keep_z1) {
    static auto fwd = op<Fwd8(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const OptT&, const OptT&, bool, double, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const OptT&, const OptT&,
                              const OptT&, const OptT&, bool, bool, double, double, bool, bool)>(
        "attnact::bn_atac_forward");
    at::AutoDispatchBelowADInplaceOrView below;  // to the kernel, not back to this function
    variable_list out = to_list(fwd.call(c, g0, b0, rm0, rv0, batch0, eps0, w1, g1, b1, w2, g2,
                                         b2, rm1, rv1, rm2, rv2, batch1, batch2, eps1, eps2,
                                         relu, keep_z1));
    // c (BN0's input, which the graph holds anyway: the point of the fused node), z1, the
    // parameters and the three BatchNorms' batch statistics
    // (out: y, z1, mean0, var0, mean1, var1, mean2, var2)
    ctx->save_for_backward({c, out[1], g0, b0, out[2], out[3], w1, g1, b1, w2, g2, b2, out[4],
                            out[5], out[6], out[7]});
    ctx->saved_data["batch0"] = batch0;
    ctx->saved_data["eps0"] = eps0;
    save_flags(ctx, {batch1, batch2, eps1, eps2, relu});
    outputs_for_backward_only(ctx, out);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = op<Bwd9(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, bool, bool, bool, double,
                              double, double, bool)>("attnact::bn_atac_backward");
    if (!grads[0].defined()) return variable_list(23);  // no gradient reached y
    const variable_list s = ctx->get_saved_variables();
    const Flags f = saved_flags(ctx);
    const variable_list g = to_list(call_backward(
        bwd, grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
        s[12], s[13], s[14], s[15], ctx->saved_data.at("batch0").toBool(), f.batch1, f.batch2,
        ctx->saved_data.at("eps0").toDouble(), f.eps1, f.eps2, f.relu));
    // (dc, dg0, db0, dw1, dg1, db1, dw2, dg2, db2) at c, g0, b0 and w1 ... b2 of the 23 inputs
    variable_list out(23);
    out[0] = g[0];
    out[1] = g[1];
    out[2] = g[2];
    for (int i = 0; i < 6; ++i) out[7 + i] = g[3 + i];
    return out;
  }
};

Fwd8 bn_atac_autograd(const at::Tensor& c, const at::Tensor& g0, const at::Tensor& b0,
                      const OptT& rm0, const OptT& rv0, bool batch0, double eps0,
                      const at::Tensor& w1, const at::Tensor& g1, const at::Tensor& b1,
                      const at::Tensor& w2, const at::Tensor& g2, const at::Tensor& b2,
                      const OptT& rm1, const OptT& rv1, const OptT& rm2, const OptT& rv2,
                      bool batch1, bool batch2, double eps1, double eps2, bool relu,
                      bool keep_z1) {
  return to_tuple<8>(BnAtacFn::apply(c, g0, b0, rm0, rv0, batch0, eps0, w1, g1, b1, w2, g2, b2,
                                     rm1, rv1, rm2, rv2, batch1, batch2, eps1, eps2, relu,
                                     keep_z1));
}

}  // namespace

TORCH_LIBRARY_IMPL(attnact, Autograd, m) {
  m.impl("atac_forward", &atac_autograd);
  m.impl("bn_atac_forward", &bn_atac_autograd);
}
