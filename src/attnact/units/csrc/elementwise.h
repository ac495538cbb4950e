// What the element-wise operators (arelu.cpp, elsa.cpp) share: vector rows, dense inputs, and
// the backward pass that writes dx while it adds up a product over each side of the gate.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace attnact_elementwise {

constexpr int64_t W = 16;  // elements per vector row

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
  // the integer vector of the same width (sign-bit tests)
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> int_t;
  typedef int_t itype __attribute__((vector_size(W * sizeof(T))));
};

template <typename T>
inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

constexpr double LO = 0.01, HI = 0.99;  // C(.) of Eq. (3) of the AReLU paper: alpha's clamp

// The inputs both operators accept; `op` names the operator in the message.
inline void check(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta,
                  const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              op, ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(alpha.numel() == 1 && beta.numel() == 1,
              op, ": alpha and beta must have one element each");
}

// x viewed as dense memory: the kernels run over it flat, and outputs take its strides.
inline at::Tensor dense(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

// t in x's dtype and x's (dense) strides, so that a flat pass can run over both.
inline at::Tensor like(const at::Tensor& t, const at::Tensor& x) {
  at::Tensor c = t.to(x.scalar_type());
  return c.strides() == x.strides() ? c : at::empty_like(x).copy_(c);
}

// The gate's parameter gradients from the two sums of a backward pass (Eq. 9-10): dalpha is
// s_alpha while alpha lies in [LO, HI] (the clamp passes gradient at both end points) and 0
// outside; dbeta is s_beta sigmoid(beta) (1 - sigmoid(beta)).
inline std::pair<at::Tensor, at::Tensor> param_grads(const at::Tensor& alpha,
                                                     const at::Tensor& beta, double s_alpha,
                                                     double s_beta) {
  const at::Tensor a = alpha.detach(), b = beta.detach();
  const at::Tensor inside = (a >= LO).logical_and(a <= HI);
  const at::Tensor sig = b.sigmoid();
  return {at::where(inside, at::full_like(a, s_alpha), at::zeros_like(a)),
          at::full_like(b, s_beta) * (sig * (1 - sig))};
}

// One pass over [0, n) that also returns two sums (the gate's parameter gradients, one per side
// of x = 0): row(i, neg, pos) handles the W elements from i and adds into the lane sums,
// one(i, neg, pos) a single element of the tail into double. The range is cut into one chunk
// per thread (a fixed split for a given thread count: deterministic), the lanes go into double
// every 64 rows (rounding), and the chunks are added in order.
template <typename T, typename Row, typename One>
std::pair<double, double> pass_with_sums(int64_t n, const Row& row, const One& one) {
  using V = typename Vec<T>::type;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                                (n + (1 << 15) - 1) >> 15));
  std::vector<double> s_neg(chunks, 0.0), s_pos(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t k = cb; k < ce; ++k) {
      const int64_t b = n * k / chunks, e = n * (k + 1) / chunks;
      double tn = 0, tp = 0;
      V an = {}, ap = {};
      int64_t i = b, rows = 0;
      auto flush = [&] {
        for (int64_t t = 0; t < W; ++t) tn += an[t], tp += ap[t];
        an = V{};
        ap = V{};
        rows = 0;
      };
      for (; i + W <= e; i += W) {
        row(i, an, ap);
        if (++rows == 64) flush();
      }
      flush();
      for (; i < e; ++i) one(i, tn, tp);
      s_neg[k] = tn;
      s_pos[k] = tp;
    }
  });
  double sn = 0, sp = 0;
  for (int64_t k = 0; k < chunks; ++k) sn += s_neg[k], sp += s_pos[k];
  return {sn, sp};
}

}  // namespace attnact_elementwise
