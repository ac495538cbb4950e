// ATAC's training passes on pixel rows of channels_last memory (issue #14), float on AVX-512:
// the same passes as atac.cpp's tile kernels (forward A, B, C; backward B1, B2, B3), with the
// pixels as rows of C channels (pixel_rows.h) instead of tiles transposed into [channel][pixel]
// buffers. The per-channel sums then need no horizontal additions (a sum over pixels is a vector
// over channels), and z1, gh1 and the backward's other intermediates are rows too: z1 is
// stored as npix rows of C1 floats inside the tensor the tile kernels would use (same size).
//
// The orchestration (finishing batch statistics between passes, folding the BatchNorms) stays in
// atac.cpp; each function here is one pass over the pixels, split into chunks (one per thread)
// whose sums go to their own double accumulators, added in chunk order by the caller.
#pragma once

#include "pixel_rows.h"

#include <immintrin.h>

namespace attnact_rows {

// The blocks of P pixels, split into one chunk per thread.
struct Blocks {
  int64_t npix, count, chunks;
  explicit Blocks(int64_t np)
      : npix(np), count((np + P - 1) / P),
        chunks(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count))) {}
  int64_t lo(int64_t k) const { return count * k / chunks; }
  int64_t hi(int64_t k) const { return count * (k + 1) / chunks; }
  int64_t valid(int64_t blk) const { return std::min(P, npix - blk * P); }
};

template <typename F>
void for_chunks(const Blocks& b, const F& f) {  // f(chunk, first block, end block)
  at::parallel_for(0, b.chunks, 1, [&](int64_t s, int64_t e) {
    for (int64_t k = s; k < e; ++k) f(k, b.lo(k), b.hi(k));
  });
}

// Two per-channel sums of one chunk, [sum u | sum v] over the first ch channels: added up in
// float over FLUSH blocks (32 pixels, as many terms per float as the tile kernels' lanes), then
// into the chunk's double accumulators d (2 ch).
struct Moments {
  static constexpr int FLUSH = 4;
  int64_t ch;
  std::vector<float> u, v;  // whole vectors
  double* d;
  int pending = 0;
  Moments(int64_t ch_, double* d_) : ch(ch_), u(round_up(ch_), 0.0f), v(round_up(ch_), 0.0f), d(d_) {}
  void add(int64_t o, V a, V b) {
    st(&u[o], ld(&u[o]) + a);
    st(&v[o], ld(&v[o]) + b);
  }
  void block_done() {
    if (++pending == FLUSH) flush();
  }
  void flush() {
    for (int64_t i = 0; i < ch; ++i) {
      d[i] += u[i];
      d[ch + i] += v[i];
    }
    std::fill(u.begin(), u.end(), 0.0f);
    std::fill(v.begin(), v.end(), 0.0f);
    pending = 0;
  }
};

// Whether ATAC's training passes take pixel rows: where the eval forward does (usable) and C/r is
// a multiple of L too. With fewer channels in z1 the rows' products and element-wise work on z1
// fill part of each vector, and at C = 16, r = 2 (resnet_cifar's first stage) the tile kernels,
// 16 pixels per vector, were faster (benchmarks/atac-rows-training-issue14.md).
inline bool trains_on_rows(const at::Tensor& x, int64_t c1) { return usable(x) && c1 % L == 0; }

// ATAC's weights, in the orders the row products read them (pixel_rows.h's dense).
struct RowWeights {
  int64_t C, C1;            // both multiples of L (trains_on_rows)
  std::vector<float> w1t;   // (C, C1): W1[j][i] at [i][j]      z1 = W1 x
  std::vector<float> w2t;   // (C1, C): W2[c][j] at [j][c]      z2 = W2 a
  std::vector<float> w2;    // (C, C1): W2 as it is             da = W2^T dz2
  std::vector<float> w1;    // (C1, C): W1 as it is             dx = W1^T dz1 + ...
  std::vector<float> zero;  // the products' bias
  RowWeights(const float* w1_, const float* w2_, int64_t c, int64_t c1)
      : C(c), C1(c1), w1t(c * c1), w2t(c1 * c), w2(w2_, w2_ + c * c1), w1(w1_, w1_ + c1 * c),
        zero(std::max(c, c1), 0.0f) {
    for (int64_t j = 0; j < C1; ++j)
      for (int64_t i = 0; i < C; ++i) {
        w1t[i * C1 + j] = w1_[j * C + i];
        w2t[j * C + i] = w2_[i * C1 + j];
      }
  }
};

// A per-channel vector in float.
inline std::vector<float> lanes(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// The block's z1 rows: stored, or computed from its x rows into zb.
inline const float* z1_rows(const float* stored, int64_t p0, const float* xr,
                            const RowWeights& w, float* zb) {
  if (stored) return stored + p0 * w.C1;
  dense(xr, w.C, w.C, w.w1t.data(), w.C1, w.zero.data(),
        [&](int p, int64_t o, V h) { st(zb + p * w.C1 + o, h); });
  return zb;
}

// a = relu(s1 z1 + t1) for the block's cnt valid pixels into ab (P x C1), zero rows beyond.
inline void act_rows(const float* z, int64_t cnt, const RowWeights& w, const float* s1,
                     const float* t1, bool relu, float* ab) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t o = 0; o < w.C1; o += L) {
      V h = {};
      if (p < cnt) {
        h = ld(z + p * w.C1 + o) * ld(s1 + o) + ld(t1 + o);
        if (relu) h = h > 0.0f ? h : V{};
      }
      st(ab + p * w.C1 + o, h);
    }
}

// Sums over pixels of a[p][j] b[p][c] (j < na, c < nb, nb a multiple of L) into out (na x nb,
// double, row-major): float accumulators, updated from each block's rows in 4 x 2 blocks of
// vector registers and added into out every FLUSH blocks (na a multiple of 4: C1 is of L).
struct Outer {
  static constexpr int FLUSH = 8;  // 64 pixels per float sum
  int64_t na, nb;
  std::vector<float> acc;
  double* out;
  int pending = 0;
  Outer(int64_t na_, int64_t nb_, double* out_)
      : na(na_), nb(nb_), acc((na_ + 3) / 4 * 4 * nb_, 0.0f), out(out_) {}
  template <int NV>
  void update(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows,
              int64_t j0, int64_t c0) {
    V s[4][NV];
    for (int k = 0; k < 4; ++k)
      for (int v = 0; v < NV; ++v) s[k][v] = ld(&acc[(j0 + k) * nb + c0 + L * v]);
    for (int64_t p = 0; p < rows; ++p) {
      V bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = ld(b + p * ldb + c0 + L * v);
      for (int k = 0; k < 4; ++k) {
        const float x = a[p * lda + j0 + k];
        for (int v = 0; v < NV; ++v) s[k][v] += x * bv[v];
      }
    }
    for (int k = 0; k < 4; ++k)
      for (int v = 0; v < NV; ++v) st(&acc[(j0 + k) * nb + c0 + L * v], s[k][v]);
  }
  void add(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows) {
    for (int64_t j0 = 0; j0 < na; j0 += 4) {
      int64_t c0 = 0;
      for (; c0 + 2 * L <= nb; c0 += 2 * L) update<2>(a, lda, b, ldb, rows, j0, c0);
      for (; c0 < nb; c0 += L) update<1>(a, lda, b, ldb, rows, j0, c0);
    }
    if (++pending == FLUSH) flush();
  }
  void flush() {
    for (int64_t i = 0; i < na * nb; ++i) out[i] += acc[i];
    std::fill(acc.begin(), acc.end(), 0.0f);
    pending = 0;
  }
};

// Per-channel constants of one call: C1 for BN1, C for BN2.
struct RowBn {
  std::vector<float> s1, t1, m1, r1, k1;  // BN1: scale, shift, mean, 1/std, gamma/std
  std::vector<float> s2, t2, m2, r2, k2;  // BN2 likewise
};

// Forward A: z1 = W1 x into its rows; with sums (2 C1 per chunk) its sums and squares for BN1.
inline void pass_z1(const float* c, float* z1, const Blocks& b, const RowWeights& w,
                    const std::vector<float>& isc, const std::vector<float>& ish,
                    std::vector<std::vector<double>>* sums) {
  for_chunks(b, [&](int64_t k, int64_t lo, int64_t hi) {
    std::vector<float> xb(P * w.C);
    Moments m(w.C1, sums ? (*sums)[k].data() : nullptr);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      const float* xr = x_rows(c, p0, cnt, w.C, isc, ish, xb.data());
      dense(xr, w.C, w.C, w.w1t.data(), w.C1, w.zero.data(), [&](int p, int64_t o, V h) {
        if (p >= cnt) return;
        st(z1 + (p0 + p) * w.C1 + o, h);
        if (sums) m.add(o, h, h * h);
      });
      if (sums) m.block_done();
    }
    if (sums) m.flush();
  });
}

// Forward B: z2 = W2 a from the stored z1; its sums and squares for BN2 (2 C per chunk).
inline void pass_z2_stats(const float* z1, const Blocks& b, const RowWeights& w,
                          const RowBn& bn, bool relu, std::vector<std::vector<double>>& sums) {
  for_chunks(b, [&](int64_t k, int64_t lo, int64_t hi) {
    std::vector<float> ab(P * w.C1);
    Moments m(w.C, sums[k].data());
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      act_rows(z1 + p0 * w.C1, cnt, w, bn.s1.data(), bn.t1.data(), relu, ab.data());
      dense(ab.data(), w.C1, w.C1, w.w2t.data(), w.C, w.zero.data(), [&](int p, int64_t o, V h) {
        if (p < cnt) m.add(o, h, h * h);
      });
      m.block_done();
    }
    m.flush();
  });
}

// Forward C: y = sigmoid(s2 W2 a + t2) x, a from the stored z1 (gate2: W2 with BN2 folded).
inline void pass_gate(const float* c, const float* z1, float* y, const Blocks& b,
                      const RowWeights& w, const FoldedMlp& gate2, const RowBn& bn, bool relu,
                      const std::vector<float>& isc, const std::vector<float>& ish) {
  for_chunks(b, [&](int64_t, int64_t lo, int64_t hi) {
    std::vector<float> xb(P * w.C), ab(P * w.C1), yb(P * w.C);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      const float* xr = x_rows(c, p0, cnt, w.C, isc, ish, xb.data());
      act_rows(z1 + p0 * w.C1, cnt, w, bn.s1.data(), bn.t1.data(), relu, ab.data());
      float* yr = cnt < P ? yb.data() : y + p0 * w.C;
      dense(ab.data(), w.C1, w.C1, gate2.w2t.data(), w.C, gate2.b2.data(),
            [&](int p, int64_t o, V h) { st(yr + p * w.C + o, sigmoid(h) * ld(xr + p * w.C + o)); });
      if (cnt < P) std::memcpy(y + p0 * w.C, yb.data(), cnt * w.C * sizeof(float));
    }
  });
}

// Backward B1: from g, x and z1 (stored, or again from x): gh2 = g x s (1 - s), the gradient at
// BN2's output, n2 = (z2 - m2) r2 and g s, each into its rows for B2 and B3, with the sums of
// gh2 and gh2 n2 (2 C per chunk) that BN2's input gradient needs.
inline void pass_b1(const float* g, const float* c, const float* z1, const Blocks& b,
                    const RowWeights& w, const RowBn& bn, bool relu,
                    const std::vector<float>& isc, const std::vector<float>& ish, float* gh2,
                    float* n2, float* gs, std::vector<std::vector<double>>& sums) {
  const int64_t C = w.C;
  for_chunks(b, [&](int64_t k, int64_t lo, int64_t hi) {
    std::vector<float> xb(P * C), zb(P * w.C1), ab(P * w.C1);
    Moments m(C, sums[k].data());
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      const float* xr = x_rows(c, p0, cnt, C, isc, ish, xb.data());
      act_rows(z1_rows(z1, p0, xr, w, zb.data()), cnt, w, bn.s1.data(), bn.t1.data(), relu,
               ab.data());
      dense(ab.data(), w.C1, w.C1, w.w2t.data(), C, w.zero.data(), [&](int p, int64_t o, V z2) {
        if (p >= cnt) return;
        const int64_t at = (p0 + p) * C + o;
        const V s = sigmoid(z2 * ld(&bn.s2[o]) + ld(&bn.t2[o]));
        const V gv = ld(g + at);
        const V h = gv * ld(xr + p * C + o) * s * (1.0f - s);
        const V nrm = (z2 - ld(&bn.m2[o])) * ld(&bn.r2[o]);
        st(gh2 + at, h);
        st(n2 + at, nrm);
        st(gs + at, gv * s);
        m.add(o, h, h * nrm);
      });
      m.block_done();
    }
    m.flush();
  });
}

// Backward B2: dz2 = k2 (gh2 - a2 - n2 c2) (a2, c2: BN2's means of gh2 and gh2 n2),
// dW2 (C1 x C per chunk, transposed), da = W2^T dz2 and gh1 = da relu'(h1) into its rows, with the
// sums of gh1 and gh1 n1 (2 C1 per chunk) for BN1.
inline void pass_b2(const float* c, const float* z1, const Blocks& b, const RowWeights& w,
                    const RowBn& bn, bool relu, const std::vector<float>& isc,
                    const std::vector<float>& ish, const float* gh2, const float* n2,
                    const std::vector<float>& a2, const std::vector<float>& c2, float* gh1,
                    std::vector<std::vector<double>>& dw2t, std::vector<std::vector<double>>& sums) {
  const int64_t C = w.C, C1 = w.C1;
  for_chunks(b, [&](int64_t k, int64_t lo, int64_t hi) {
    std::vector<float> xb(P * C), zb(P * C1), ab(P * C1), dz2(P * C, 0.0f);
    Moments m(C1, sums[k].data());
    Outer outer(C1, C, dw2t[k].data());
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      const float* xr = z1 ? nullptr : x_rows(c, p0, cnt, C, isc, ish, xb.data());
      const float* z = z1_rows(z1, p0, xr, w, zb.data());
      act_rows(z, cnt, w, bn.s1.data(), bn.t1.data(), relu, ab.data());
      for (int64_t p = 0; p < cnt; ++p)
        for (int64_t o = 0; o < C; o += L) {
          const int64_t at = (p0 + p) * C + o;
          st(&dz2[p * C + o],
             ld(&bn.k2[o]) * (ld(gh2 + at) - ld(&a2[o]) - ld(n2 + at) * ld(&c2[o])));
        }
      if (cnt < P) std::fill(dz2.begin() + cnt * C, dz2.end(), 0.0f);
      outer.add(ab.data(), C1, dz2.data(), C, cnt);
      dense(dz2.data(), C, C, w.w2.data(), C1, w.zero.data(), [&](int p, int64_t o, V da) {
        if (p >= cnt) return;
        const V zv = ld(z + p * C1 + o);
        if (relu) da = zv * ld(&bn.s1[o]) + ld(&bn.t1[o]) > 0.0f ? da : V{};
        const V nrm = (zv - ld(&bn.m1[o])) * ld(&bn.r1[o]);
        st(gh1 + (p0 + p) * C1 + o, da);
        m.add(o, da, da * nrm);
      });
      m.block_done();
    }
    outer.flush();
    m.flush();
  });
}

// The BatchNorm in front (bn_atac_backward): x^ = c * hsc + hsh, and the chunk's sums
// [sum dx | sum dx x^] (2 C per chunk) that its input gradient needs.
struct RowBn0 {
  std::vector<float> hsc, hsh;
  std::vector<std::vector<double>>* sums;
};

// Backward B3: dz1 = k1 (gh1 - a1 - n1 c1), dW1 = sum dz1 x^T (C1 x C per chunk),
// dx = g s + W1^T dz1 into dx's rows (and BN0's sums when it is in front).
inline void pass_b3(const float* c, const float* z1, const Blocks& b, const RowWeights& w,
                    const RowBn& bn, const std::vector<float>& isc,
                    const std::vector<float>& ish, const float* gh1, const float* gs,
                    const std::vector<float>& a1, const std::vector<float>& c1, float* dx,
                    std::vector<std::vector<double>>& dw1, const RowBn0* bn0) {
  const int64_t C = w.C, C1 = w.C1;
  for_chunks(b, [&](int64_t k, int64_t lo, int64_t hi) {
    std::vector<float> xb(P * C), zb(P * C1), dz1(P * C1, 0.0f);
    Moments m0(C, bn0 ? (*bn0->sums)[k].data() : nullptr);
    Outer outer(C1, C, dw1[k].data());
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p0 = blk * P, cnt = b.valid(blk);
      const float* xr = x_rows(c, p0, cnt, C, isc, ish, xb.data());
      const float* z = z1_rows(z1, p0, xr, w, zb.data());
      for (int64_t p = 0; p < P; ++p)
        for (int64_t o = 0; o < C1; o += L) {
          V d = {};
          if (p < cnt) {
            const V nrm = (ld(z + p * C1 + o) - ld(&bn.m1[o])) * ld(&bn.r1[o]);
            d = ld(&bn.k1[o]) *
                (ld(gh1 + (p0 + p) * C1 + o) - ld(&a1[o]) - nrm * ld(&c1[o]));
          }
          st(&dz1[p * C1 + o], d);
        }
      outer.add(dz1.data(), C1, xr, C, cnt);
      dense(dz1.data(), C1, C1, w.w1.data(), C, w.zero.data(), [&](int p, int64_t o, V h) {
        if (p >= cnt) return;
        const int64_t at = (p0 + p) * C + o;
        const V d = h + ld(gs + at);
        st(dx + at, d);
        if (bn0) m0.add(o, d, d * (ld(c + at) * ld(&bn0->hsc[o]) + ld(&bn0->hsh[o])));
      });
      if (bn0) m0.block_done();
    }
    outer.flush();
    if (bn0) m0.flush();
  });
}

// Per-channel sums and sums of squares of npix rows of C channels (the batch statistics of the
// BatchNorm in front), in double per chunk of pixels, [sum | sum of squares] (2 C per chunk).
inline void channel_sums(const float* c, int64_t npix, int64_t C,
                         std::vector<std::vector<double>>& sums) {
  const int64_t chunks = static_cast<int64_t>(sums.size());
  at::parallel_for(0, chunks, 1, [&](int64_t s, int64_t e) {
    for (int64_t k = s; k < e; ++k) {
      double* __restrict__ sum = sums[k].data();
      double* __restrict__ sq = sum + C;
      for (int64_t p = npix * k / chunks; p < npix * (k + 1) / chunks; ++p) {
        const float* __restrict__ row = c + p * C;
        for (int64_t ch = 0; ch < C; ++ch) {
          const double v = row[ch];
          sum[ch] += v;
          sq[ch] += v * v;
        }
      }
    }
  });
}

// z1's rows (npix x C1) into the tile kernels' layout ([n][tile][C1][16], zero beyond HW), for a
// backward that the rows do not take (a BatchNorm on running statistics).
inline void rows_to_tiles(const float* rows, int64_t N, int64_t HW, int64_t C1, int64_t tile,
                          float* tiles) {
  const int64_t per_sample = (HW + tile - 1) / tile;
  at::parallel_for(0, N * per_sample, 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const int64_t n = i / per_sample, q0 = (i % per_sample) * tile;
      float* t = tiles + i * C1 * tile;
      for (int64_t j = 0; j < C1; ++j)
        for (int64_t l = 0; l < tile; ++l)
          t[j * tile + l] = q0 + l < HW ? rows[(n * HW + q0 + l) * C1 + j] : 0.0f;
    }
  });
}

}  // namespace attnact_rows
