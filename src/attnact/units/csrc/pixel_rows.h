// ATAC's per-pixel MLP on pixel rows of channels_last memory (issue #14), float on AVX-512.
//
// In channels_last memory the C channels of one pixel are one contiguous row, so the MLP
// z = W x + b of a block of P pixels is a small GEMM with the pixels as rows: each step loads
// one row of W^T (a vector over output channels), broadcasts one input of each pixel, and adds
// the product into P x OV register accumulators. The tile kernels of atac.cpp instead transpose
// each tile of 16 pixels into [channel][pixel] buffers and back; these rows skip the transposes,
// and the per-channel work (BatchNorm scale and shift, the gate's product with x) is a vector
// over channels in the same layout.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace attnact_rows {

constexpr int64_t L = 16;  // floats per vector
constexpr int64_t P = 8;   // pixels per register block

typedef float V __attribute__((vector_size(L * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(L * sizeof(int32_t))));

inline V ld(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void st(float* p, V v) { std::memcpy(p, &v, sizeof(v)); }

// 1 / (1 + exp(-h)) lane by lane, the exp being Cephes' expf (range reduction by ln 2,
// degree-6 polynomial, relative error about 2e-7) on vectors (std::exp is a scalar call).
inline V sigmoid(V h) {
  V x = -h;
  x = x > 88.3762626647949f ? V{} + 88.3762626647949f : x;
  x = x < -87.3365478515625f ? V{} - 87.3365478515625f : x;
  // round to nearest by the 1.5 * 2^23 trick (|x log2 e| < 2^22), exact without fast-math
  const V fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  V q = V{} + 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const V p = q * (r * r) + r + 1.0f;
  const VI e = (__builtin_convertvector(fx, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return 1.0f / (1.0f + p * scale);
}

// acc[p][v] = bias[o0 + L v] + sum_i in[p ldi + i] wt[i outp + o0 + L v] for the P rows of
// `in` and OV vectors of outputs from o0; wt is (n_in, outp) row-major.
template <int OV>
inline void mac(const float* in, int64_t ldi, int64_t n_in, const float* wt, int64_t outp,
                int64_t o0, const float* bias, V (&acc)[P][OV]) {
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < OV; ++v) acc[p][v] = ld(bias + o0 + L * v);
  for (int64_t i = 0; i < n_in; ++i) {
    V w[OV];
    for (int v = 0; v < OV; ++v) w[v] = ld(wt + i * outp + o0 + L * v);
    for (int p = 0; p < P; ++p) {
      const float s = in[p * ldi + i];
      for (int v = 0; v < OV; ++v) acc[p][v] += s * w[v];
    }
  }
}

// bias + in wt for P rows and all outp outputs (a multiple of L), in blocks of two vectors and
// then one (P x 2 accumulators keep the FMA units busy without spilling); epi(p, o, h) takes
// each output vector, o being its first channel.
template <typename Epi>
inline void dense(const float* in, int64_t ldi, int64_t n_in, const float* wt, int64_t outp,
                  const float* bias, const Epi& epi) {
  int64_t o = 0;
  for (; o + 2 * L <= outp; o += 2 * L) {
    V acc[P][2];
    mac<2>(in, ldi, n_in, wt, outp, o, bias, acc);
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 2; ++v) epi(p, o + L * v, acc[p][v]);
  }
  for (; o < outp; o += L) {
    V acc[P][1];
    mac<1>(in, ldi, n_in, wt, outp, o, bias, acc);
    for (int p = 0; p < P; ++p) epi(p, o, acc[p][0]);
  }
}

inline int64_t round_up(int64_t n) { return (n + L - 1) / L * L; }

// ATAC's MLP with both BatchNorms folded into the weights (running statistics):
// h1 = w1t^T x + b1 (C1p outputs, zero beyond C1), h2 = w2t^T a + b2.
struct FoldedMlp {
  int64_t C, C1, C1p;
  std::vector<float> w1t, b1;  // (C, C1p): s1[j] W1[j][i] at [i][j]; (C1p): t1, then zeros
  std::vector<float> w2t, b2;  // (C1, C): s2[c] W2[c][j] at [j][c]; (C): t2

  // w1 (C1, C) and w2 (C, C1) row-major; s, t: the BatchNorms' folded scale and shift
  FoldedMlp(const float* w1, const float* w2, int64_t c, int64_t c1, const std::vector<double>& s1,
            const std::vector<double>& t1, const std::vector<double>& s2,
            const std::vector<double>& t2)
      : C(c), C1(c1), C1p(round_up(c1)), w1t(c * C1p, 0.0f), b1(C1p, 0.0f), w2t(c1 * c),
        b2(c) {
    for (int64_t j = 0; j < C1; ++j) {
      b1[j] = static_cast<float>(t1[j]);
      for (int64_t i = 0; i < C; ++i)
        w1t[i * C1p + j] = static_cast<float>(s1[j] * static_cast<double>(w1[j * C + i]));
    }
    for (int64_t ch = 0; ch < C; ++ch) {
      b2[ch] = static_cast<float>(t2[ch]);
      for (int64_t j = 0; j < C1; ++j)
        w2t[j * C + ch] = static_cast<float>(s2[ch] * static_cast<double>(w2[ch * C1 + j]));
    }
  }
};

// Whether x takes these rows: float, channels_last (pixel rows of C channels), C a multiple of
// L, and an AVX-512 build (the P x 2 blocks need its 32 vector registers).
inline bool usable(const at::Tensor& x) {
#if defined(__AVX512F__)
  return x.scalar_type() == at::kFloat && x.dim() == 4 && x.size(1) % L == 0 &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast);
#else
  (void)x;
  return false;
#endif
}

// The rows of x for the block at pixel p0 with cnt valid pixels: c's own rows where nothing is to
// be done, else c * isc + ish (the BatchNorm in front, folded) and zero rows beyond cnt in buf.
inline const float* x_rows(const float* c, int64_t p0, int64_t cnt, int64_t C,
                           const std::vector<float>& isc, const std::vector<float>& ish,
                           float* buf) {
  const float* rows = c + p0 * C;
  if (cnt == P && isc.empty()) return rows;
  std::fill(buf, buf + P * C, 0.0f);
  for (int64_t p = 0; p < cnt; ++p)
    for (int64_t ch = 0; ch < C; ch += L) {
      V v = ld(rows + p * C + ch);
      if (!isc.empty()) v = v * ld(&isc[ch]) + ld(&ish[ch]);
      st(buf + p * C + ch, v);
    }
  return buf;
}

// y = sigmoid(h2) * x for npix pixel rows of x (ATAC Eq. 4-5 in eval), x = c * isc + ish per
// channel when isc is given (the BatchNorm in front, folded). A last block of fewer than P
// pixels runs on zero-padded copies. Blocks are independent: no order to keep.
inline void eval_forward(const float* c, float* y, int64_t npix, const FoldedMlp& m, bool relu,
                         const std::vector<float>& isc, const std::vector<float>& ish) {
  const int64_t C = m.C, C1p = m.C1p, nblk = (npix + P - 1) / P;
  at::parallel_for(0, nblk, 16, [&](int64_t b, int64_t e) {
    std::vector<float> xb(P * C), ab(P * C1p), yb(P * C);
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t p0 = blk * P, cnt = std::min(P, npix - p0);
      const float* xr = x_rows(c, p0, cnt, C, isc, ish, xb.data());
      dense(xr, C, C, m.w1t.data(), C1p, m.b1.data(), [&](int p, int64_t o, V h) {
        st(&ab[p * C1p + o], relu ? (h > 0.0f ? h : V{}) : h);
      });
      float* yr = cnt < P ? yb.data() : y + p0 * C;
      dense(ab.data(), C1p, m.C1, m.w2t.data(), C, m.b2.data(), [&](int p, int64_t o, V h) {
        st(yr + p * C + o, sigmoid(h) * ld(xr + p * C + o));
      });
      if (cnt < P) std::memcpy(y + p0 * C, yb.data(), cnt * C * sizeof(float));
    }
  });
}

}  // namespace attnact_rows
