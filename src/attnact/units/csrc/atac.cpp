// ATAC (Dai et al., "Attention as Activation", Eq. 4-5) as fused CPU kernels:
//
//   z1 = W1 x,  a = relu(s1 z1 + t1),  z2 = W2 a,  s = sigmoid(s2 z2 + t2),  y = s * x
//
// with BatchNorm folded to a per-channel scale s = gamma * rstd and shift t = beta - mean * s.
// The per-pixel C -> C/r -> C MLP runs on tiles of TILE pixels held in small buffers
// ([channel][pixel], so every multiply-add is a vector over pixels), and each pass over memory
// also does the element-wise work and the per-channel sums that the next pass needs. The data
// dependencies set the passes: BN1's batch statistics need all of z1 before any a exists, BN2's
// need all of z2 before any s exists, and in backward BN2's and BN1's input gradients each need
// two per-channel sums over the whole batch first.
//
// Forward  (training):  A  x -> z1 (stored), sums of z1          reads x, writes z1
//                       B  z1 -> a -> z2, sums of z2             reads z1
//                       C  x, z1 -> y                            reads x and z1, writes y
// Forward  (eval):      C  x -> y                                reads x, writes y
// Backward (training):  B1 g, x, z1 -> sums for BN2's gradient   reads g, x, z1
//                       B2 ... -> dz2, dW2, da, gh1, sums for BN1; writes gh1 and g*s
//                       B3 gh1, z1, x, g*s -> dz1, dW1, dx
// z1 is recomputed from x where it was not kept (the memory-efficient path saves x only).
// For float channels_last inputs with C and C/r multiples of 16 on AVX-512 the same passes run on
// pixel rows instead of tiles (rows_training.h; the eval forward on rows already for C % 16 == 0,
// pixel_rows.h); z1 is then kept as rows in a tensor of the tiles' size, and a backward that the
// rows do not take (running statistics) rearranges it into tiles first.
// Sums are taken per tile in the working precision and added into double per thread, then the
// threads' partial sums are added in a fixed order (deterministic for a given thread count).

#include <ATen/ATen.h>
#include <torch/library.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include "rows_training.h"

#include <mutex>
#include <algorithm>
#include <type_traits>
#include <tuple>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t TILE = 16;  // pixels per tile: one AVX-512 vector of floats
constexpr int64_t OB = 8;     // output channels per register block of the tile MLP

// One row of a tile (TILE lanes) as a GCC vector: the arithmetic below is written on rows so
// that every multiply-add is one vector instruction (or a few, where the CPU's vectors are
// narrower) whatever the auto-vectoriser makes of the loops around it.
template <typename T>
struct Row {
  typedef T type __attribute__((vector_size(TILE * sizeof(T))));
};
template <typename T>
using row_t = typename Row<T>::type;

template <typename T>
inline row_t<T> ld(const T* p) {
  row_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void st(T* p, row_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// sigmoid of one row of TILE lanes, out[t] = 1 / (1 + exp(-h[t])) with h[t] = z[t] * s + b
// (for float on vectors, pixel_rows.h; std::exp is a scalar call).
inline void sigmoid_row(const float* z, float s, float b, float* out) {
  st(out, attnact_rows::sigmoid(ld(z) * s + b));
}

inline void sigmoid_row(const double* z, double s, double b, double* out) {
  for (int64_t t = 0; t < TILE; ++t) out[t] = 1.0 / (1.0 + std::exp(-(z[t] * s + b)));
}

// Where element (n, q, c) of an activation with `ch` channels lives (q: pixel within sample).
struct Layout {
  int64_t N, HW;
  bool cl;  // channels_last: (N, H, W, C) in memory; else (N, C, H, W)
  int64_t base(int64_t n, int64_t q, int64_t ch) const {
    return cl ? (n * HW + q) * ch : n * ch * HW + q;
  }
  int64_t pstride(int64_t ch) const { return cl ? ch : 1; }
  int64_t cstride(int64_t ch) const { return cl ? 1 : HW; }
};

#if defined(__AVX512F__)
// dst[c * ds + t] = src[t * ss + c] for a 16 x 16 block of floats (the tile's transpose between
// channels_last memory and the [channel][pixel] buffers): 64 shuffles instead of 256 scalar moves.
inline void transpose16(const float* src, int64_t ss, float* dst, int64_t ds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ds, r[i]);
}
#endif

template <typename T>
inline bool fast_transpose(const Layout& L, int64_t cnt, int64_t ch) {
#if defined(__AVX512F__)
  return std::is_same<T, float>::value && L.cl && cnt == TILE && ch % 16 == 0;
#else
  (void)L; (void)cnt; (void)ch;
  return false;
#endif
}

// buf[c][t] = src(n, q0 + t, c) for t < cnt, 0 beyond.
template <typename T>
void load(const T* src, const Layout& L, int64_t n, int64_t q0, int64_t cnt, int64_t ch, T* buf) {
  const T* p = src + L.base(n, q0, ch);
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (fast_transpose<T>(L, cnt, ch)) {
      for (int64_t c0 = 0; c0 < ch; c0 += 16) transpose16(p + c0, ch, buf + c0 * TILE, TILE);
      return;
    }
  }
#endif
  if (cnt < TILE) std::fill(buf, buf + ch * TILE, T(0));
  if (L.cl) {
    for (int64_t t = 0; t < cnt; ++t)
      for (int64_t c = 0; c < ch; ++c) buf[c * TILE + t] = p[t * ch + c];
  } else if (cnt == TILE) {
    for (int64_t c = 0; c < ch; ++c) st(buf + c * TILE, ld(p + c * L.HW));
  } else {
    for (int64_t c = 0; c < ch; ++c)
      for (int64_t t = 0; t < cnt; ++t) buf[c * TILE + t] = p[c * L.HW + t];
  }
}

template <typename T>
void store(T* dst, const Layout& L, int64_t n, int64_t q0, int64_t cnt, int64_t ch, const T* buf) {
  T* p = dst + L.base(n, q0, ch);
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (fast_transpose<T>(L, cnt, ch)) {
      for (int64_t c0 = 0; c0 < ch; c0 += 16) transpose16(buf + c0 * TILE, TILE, p + c0, ch);
      return;
    }
  }
#endif
  if (L.cl) {
    for (int64_t t = 0; t < cnt; ++t)
      for (int64_t c = 0; c < ch; ++c) p[t * ch + c] = buf[c * TILE + t];
  } else if (cnt == TILE) {
    for (int64_t c = 0; c < ch; ++c) st(p + c * L.HW, ld(buf + c * TILE));
  } else {
    for (int64_t c = 0; c < ch; ++c)
      for (int64_t t = 0; t < cnt; ++t) p[c * L.HW + t] = buf[c * TILE + t];
  }
}

// x = c * isc + ish per channel (the BatchNorm in front of ATAC, folded; bn_atac_*): the input
// is loaded as c and normalised in the tile buffer, so x never exists in memory. Without the
// affine (isc empty) this is load(). The padding lanes stay 0 as load() leaves them.
template <typename T>
void normalise(T* buf, int64_t cnt, int64_t ch, const std::vector<T>& isc,
               const std::vector<T>& ish) {
  row_t<T> mask = {};
  for (int64_t t = 0; t < TILE; ++t) mask[t] = t < cnt ? T(1) : T(0);
  for (int64_t c = 0; c < ch; ++c) {
    row_t<T> v = ld(buf + c * TILE) * isc[c] + ish[c];
    if (cnt < TILE) v *= mask;
    st(buf + c * TILE, v);
  }
}

template <typename T>
void load_x(const T* src, const Layout& L, int64_t n, int64_t q0, int64_t cnt, int64_t ch,
            T* buf, const std::vector<T>& isc, const std::vector<T>& ish) {
  load(src, L, n, q0, cnt, ch, buf);
  if (!isc.empty()) normalise(buf, cnt, ch, isc, ish);
}

// BN0's backward folded into the ATAC backward pass that makes dx (bn_atac_backward): that
// pass also has c's tile, so it adds up sum dx and sum dx * x^ (x^ = (c - mean0) rstd0 in
// hat) per channel, and one element-wise pass dc = k0 (dx - mean dx - x^ mean(dx x^))
// finishes the gradient in place: it reads dx and c once, where ATen's BatchNorm backward reads
// both twice (once for the sums, once for dc).
template <typename T>
struct Bn0Grad {
  std::vector<T> hsc, hsh;                 // x^ = c * hsc + hsh
  std::vector<std::vector<double>> parts;  // per chunk: [sum dx | sum dx x^]
};

// load_x that also leaves x^ in hat. Padding lanes of hat are not zero; dx is there, so they
// add nothing to the sums.
template <typename T>
void load_x_hat(const T* src, const Layout& L, int64_t n, int64_t q0, int64_t cnt, int64_t ch,
                T* buf, const std::vector<T>& isc, const std::vector<T>& ish, T* hat,
                const Bn0Grad<T>& b) {
  load(src, L, n, q0, cnt, ch, buf);
  for (int64_t c = 0; c < ch; ++c) st(hat + c * TILE, ld(buf + c * TILE) * b.hsc[c] + b.hsh[c]);
  normalise(buf, cnt, ch, isc, ish);
}

// lane[c] += d[c], lane[ch + c] += d[c] * h[c] for one tile
template <typename T>
void accumulate_products(const T* d, const T* h, int64_t ch, T* lane) {
  for (int64_t c = 0; c < ch; ++c) {
    const row_t<T> v = ld(d + c * TILE);
    st(lane + c * TILE, ld(lane + c * TILE) + v);
    st(lane + (ch + c) * TILE, ld(lane + (ch + c) * TILE) + v * ld(h + c * TILE));
  }
}

// The kernels' own intermediates (z1 kept for backward, gh1 and g*s between backward passes)
// are stored tile by tile in the buffers' [channel][pixel] order: written by a copy, read in
// place.
template <typename T>
inline void tstore(T* dst, int64_t tile, int64_t ch, const T* buf) {
  std::memcpy(dst + tile * ch * TILE, buf, ch * TILE * sizeof(T));
}

// out[o][t] = sum_i W[o][i] in[i][t]; W is (outp, in) row-major with outp = rows rounded up to
// OB (zero rows), so the register block needs no remainder; only the first `rows` are stored.
template <typename T>
void matvec(const T* W, int64_t rows, int64_t in_ch, const T* in, T* out) {
  for (int64_t o0 = 0; o0 < rows; o0 += OB) {
    row_t<T> acc[OB] = {};
    const T* w = W + o0 * in_ch;
    for (int64_t i = 0; i < in_ch; ++i) {
      const row_t<T> v = ld(in + i * TILE);
      for (int64_t j = 0; j < OB; ++j) acc[j] += w[j * in_ch + i] * v;
    }
    const int64_t on = std::min(OB, rows - o0);
    for (int64_t j = 0; j < on; ++j) st(out + (o0 + j) * TILE, acc[j]);
  }
}

// The weight gradients, sum over pixels of a[o] b[i] (dW2 = dz2 a^T, dW1 = dz1 x^T): the tiles'
// rows are gathered into blocks of BLOCK tiles and each block is reduced as a small GEMM with a
// 4 x 4 register block of accumulators (8 row loads per 16 FMAs), into double per chunk.
constexpr int64_t BLOCK = 32;

template <typename T>
struct OuterSum {
  int64_t na, nb, nap, nbp, filled = 0;
  std::vector<T> A, B;  // [nap][BLOCK * TILE], [nbp][BLOCK * TILE]; padding rows stay 0
  double* out;          // (na, nb) row-major
  OuterSum(int64_t na_, int64_t nb_, double* out_)
      : na(na_), nb(nb_), nap((na_ + 3) / 4 * 4), nbp((nb_ + 3) / 4 * 4),
        A(nap * BLOCK * TILE, T(0)), B(nbp * BLOCK * TILE, T(0)), out(out_) {}
  void add(const T* a, const T* b) {  // a tile's rows: a [na][TILE], b [nb][TILE]
    for (int64_t o = 0; o < na; ++o)
      std::memcpy(&A[(o * BLOCK + filled) * TILE], a + o * TILE, TILE * sizeof(T));
    for (int64_t i = 0; i < nb; ++i)
      std::memcpy(&B[(i * BLOCK + filled) * TILE], b + i * TILE, TILE * sizeof(T));
    if (++filled == BLOCK) finish();
  }
  void finish() {
    if (filled == 0) return;
    const int64_t len = filled;
    for (int64_t o0 = 0; o0 < nap; o0 += 4)
      for (int64_t i0 = 0; i0 < nbp; i0 += 4) {
        row_t<T> acc[4][4] = {};
        for (int64_t p = 0; p < len; ++p) {
          row_t<T> u[4], v[4];
          for (int k = 0; k < 4; ++k) {
            u[k] = ld(&A[((o0 + k) * BLOCK + p) * TILE]);
            v[k] = ld(&B[((i0 + k) * BLOCK + p) * TILE]);
          }
          for (int k = 0; k < 4; ++k)
            for (int l = 0; l < 4; ++l) acc[k][l] += u[k] * v[l];
        }
        for (int k = 0; k < 4; ++k)
          for (int l = 0; l < 4; ++l) {
            if (o0 + k >= na || i0 + l >= nb) continue;
            double s = 0;
            for (int64_t t = 0; t < TILE; ++t) s += acc[k][l][t];
            out[(o0 + k) * nb + i0 + l] += s;
          }
      }
    filled = 0;
  }
};

// sum over lanes of lane accumulators acc[k][t] into dst[k] (double), then zero them.
template <typename T>
void flush(T* acc, int64_t k, double* dst) {
  for (int64_t j = 0; j < k; ++j) {
    double s = 0;
    for (int64_t t = 0; t < TILE; ++t) s += acc[j * TILE + t];
    dst[j] += s;
  }
  std::fill(acc, acc + k * TILE, T(0));
}

// Rows padded to a multiple of OB with zeros (see matvec).
template <typename T>
std::vector<T> padded(const at::Tensor& w2d, bool transpose) {
  auto w = (transpose ? w2d.t() : w2d).contiguous();
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t rp = (rows + OB - 1) / OB * OB;
  std::vector<T> out(rp * cols, T(0));
  std::memcpy(out.data(), w.data_ptr<T>(), rows * cols * sizeof(T));
  return out;
}

// Splits the tiles of (N, HW) among the threads: chunk k of nchunks gets its own accumulators.
struct Tiles {
  int64_t N, HW, per_sample, total;
  Tiles(int64_t n, int64_t hw) : N(n), HW(hw), per_sample((hw + TILE - 1) / TILE) {
    total = N * per_sample;
  }
  void at(int64_t i, int64_t& n, int64_t& q0, int64_t& cnt) const {
    n = i / per_sample;
    q0 = (i % per_sample) * TILE;
    cnt = std::min(TILE, HW - q0);
  }
};

template <typename F>
void for_chunks(int64_t nchunks, const F& f) {
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) f(k);
  });
}

int64_t chunk_count(const Tiles& tiles) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles.total));
}

struct Folded {  // per-channel BatchNorm of one call, in double
  std::vector<double> mean, rstd, scale, shift;
};

// The values of a per-channel parameter or statistic (1-D, a few dozen values) in double, read
// directly where it is contiguous float or double: an ATen conversion costs microseconds per
// call, and an ATAC node made some sixty of them on such vectors.
std::vector<double> doubles(const at::Tensor& t) {
  std::vector<double> out(t.numel());
  if (t.is_contiguous() && t.scalar_type() == at::kDouble) {
    std::memcpy(out.data(), t.data_ptr<double>(), out.size() * sizeof(double));
  } else if (t.is_contiguous() && t.scalar_type() == at::kFloat) {
    const float* p = t.data_ptr<float>();
    std::copy(p, p + out.size(), out.begin());
  } else {
    auto d = t.to(at::kDouble).contiguous();
    std::memcpy(out.data(), d.data_ptr<double>(), out.size() * sizeof(double));
  }
  return out;
}

Folded fold(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& gamma,
            const at::Tensor& beta, double eps) {
  const std::vector<double> m = doubles(mean), v = doubles(var), g = doubles(gamma),
                            b = doubles(beta);
  const size_t c = m.size();
  Folded f{m, std::vector<double>(c), std::vector<double>(c), std::vector<double>(c)};
  for (size_t i = 0; i < c; ++i) {
    f.rstd[i] = 1.0 / std::sqrt(v[i] + eps);
    f.scale[i] = g[i] * f.rstd[i];
    f.shift[i] = b[i] - f.mean[i] * f.scale[i];
  }
  return f;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// mean and biased variance from per-chunk (sum, sum of squares), added in chunk order, into
// mean and var (contiguous double, made by the caller).
void finish_stats(const std::vector<std::vector<double>>& parts, int64_t ch, double count,
                  at::Tensor& mean, at::Tensor& var) {
  TORCH_INTERNAL_ASSERT(mean.scalar_type() == at::kDouble && var.scalar_type() == at::kDouble &&
                        mean.is_contiguous() && var.is_contiguous());
  std::vector<double> s(2 * ch, 0.0);
  for (const auto& p : parts)
    for (int64_t i = 0; i < 2 * ch; ++i) s[i] += p[i];
  double *m = mean.data_ptr<double>(), *v = var.data_ptr<double>();
  for (int64_t c = 0; c < ch; ++c) {
    const double mu = s[c] / count;
    m[c] = mu;
    v[c] = std::max(0.0, s[ch + c] / count - mu * mu);
  }
}

// Per tile, the gate from z1 (already in zb): a (into ab), z2 (into z2b), s (into sb).
template <typename T>
struct Gate {
  const T *w1, *w2;        // padded (C1p, C) and (Cp, C1)
  const T *s1, *t1, *s2, *t2;
  int64_t C, C1;
  bool relu;
  void act(const T* zb, T* ab) const {
    for (int64_t j = 0; j < C1; ++j) {
      row_t<T> h = ld(zb + j * TILE) * s1[j] + t1[j];
      if (relu) h = h > T(0) ? h : row_t<T>{};
      st(ab + j * TILE, h);
    }
  }
  void sig(const T* z2b, T* sb) const {
    for (int64_t c = 0; c < C; ++c) sigmoid_row(z2b + c * TILE, s2[c], t2[c], sb + c * TILE);
  }
};

// lane[c] += b[c], lane[ch + c] += b[c]^2 over the tile's valid pixels (padding lanes masked)
template <typename T>
void accumulate_stats(const T* b, int64_t ch, int64_t cnt, T* lane) {
  row_t<T> mask = {};
  for (int64_t t = 0; t < TILE; ++t) mask[t] = t < cnt ? T(1) : T(0);
  for (int64_t c = 0; c < ch; ++c) {
    const row_t<T> v = ld(b + c * TILE) * mask;
    st(lane + c * TILE, ld(lane + c * TILE) + v);
    st(lane + (ch + c) * TILE, ld(lane + (ch + c) * TILE) + v * v);
  }
}

constexpr int64_t FLUSH_EVERY = 32;  // tiles between flushes of the lane sums into double

// Scratch memory for the intermediates between passes, kept between calls: a fresh multi-MiB
// buffer costs a page fault per 4 KiB page on first touch. Buffers are handed out whole and
// returned at the end of a call; at most eight are kept.
class Scratch {
 public:
  at::Tensor take(int64_t numel, const at::TensorOptions& opts) {
    std::lock_guard<std::mutex> guard(mu_);
    for (size_t i = 0; i < free_.size(); ++i) {
      if (free_[i].numel() >= numel && free_[i].dtype() == opts.dtype()) {
        at::Tensor t = free_[i];
        free_.erase(free_.begin() + i);
        return t;  // the whole buffer (at least numel elements): callers index within it
      }
    }
    return at::empty({numel}, opts);
  }
  void give(const at::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return;
    std::lock_guard<std::mutex> guard(mu_);
    free_.push_back(t);
    if (free_.size() > 8) free_.erase(free_.begin());  // bounded: the oldest goes
  }

 private:
  std::mutex mu_;
  std::vector<at::Tensor> free_;
};

Scratch& scratch() {
  static Scratch s;
  return s;
}

using Fwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Bwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                       at::Tensor>;

// values [first, first + numel(shape)) of a double vector as a new tensor of x's dtype and the
// given shape (the parameter gradients), written directly (no ATen conversions)
at::Tensor as_tensor(const std::vector<double>& v, at::IntArrayRef shape, at::ScalarType dtype,
                     size_t first = 0) {
  auto out = at::empty(shape, at::TensorOptions().dtype(dtype));
  TORCH_INTERNAL_ASSERT(first + out.numel() <= v.size());
  AT_DISPATCH_FLOATING_TYPES(dtype, "as_tensor", [&] {
    scalar_t* p = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < out.numel(); ++i) p[i] = static_cast<scalar_t>(v[first + i]);
  });
  return out;
}

// parts[0] + parts[1] + ... in chunk order (deterministic for a given thread count)
std::vector<double> add_parts(const std::vector<std::vector<double>>& parts) {
  std::vector<double> s(parts.empty() ? 0 : parts[0].size(), 0.0);
  for (const auto& p : parts)
    for (size_t i = 0; i < s.size(); ++i) s[i] += p[i];
  return s;
}

std::vector<std::vector<double>> zero_parts(int64_t chunks, int64_t n) {
  return std::vector<std::vector<double>>(chunks, std::vector<double>(n, 0.0));
}

// The forward's passes A, B and C on pixel rows (rows_training.h) for the inputs
// attnact_rows::usable takes; z1 (as rows) into z1's storage, statistics as forward_impl's.
void rows_forward(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& g1,
                  const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& g2,
                  const at::Tensor& b2, at::Tensor& z1, at::Tensor& y, at::Tensor& mean1,
                  at::Tensor& var1, at::Tensor& mean2, at::Tensor& var2, bool batch1,
                  bool batch2, double eps1, double eps2, bool relu, const std::vector<float>& isc,
                  const std::vector<float>& ish) {
  namespace R = attnact_rows;
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), C1 = w1.size(0);
  const double count = static_cast<double>(N * HW);
  const R::Blocks blocks(N * HW);
  const R::RowWeights w(w1.data_ptr<float>(), w2.data_ptr<float>(), C, C1);
  const float* xp = x.data_ptr<float>();
  float* zp = z1.data_ptr<float>();
  auto parts1 = zero_parts(blocks.chunks, 2 * C1);
  R::pass_z1(xp, zp, blocks, w, isc, ish, batch1 ? &parts1 : nullptr);
  if (batch1) finish_stats(parts1, C1, count, mean1, var1);
  const Folded f1 = fold(mean1, var1, g1, b1, eps1);
  R::RowBn bn;
  bn.s1 = R::lanes(f1.scale);
  bn.t1 = R::lanes(f1.shift);
  if (batch2) {
    auto parts2 = zero_parts(blocks.chunks, 2 * C);
    R::pass_z2_stats(zp, blocks, w, bn, relu, parts2);
    finish_stats(parts2, C, count, mean2, var2);
  }
  const Folded f2 = fold(mean2, var2, g2, b2, eps2);
  const R::FoldedMlp gate2(w1.data_ptr<float>(), w2.data_ptr<float>(), C, C1,
                           std::vector<double>(C1, 1.0), std::vector<double>(C1, 0.0), f2.scale,
                           f2.shift);
  R::pass_gate(xp, zp, y.data_ptr<float>(), blocks, w, gate2, bn, relu, isc, ish);
}

// The backward's passes B1, B2 and B3 on pixel rows, for both BatchNorms on batch statistics
// (training); z1 as rows_forward stored it, or none (recomputed from x).
Bwd rows_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& z1,
                  const at::Tensor& w1, const at::Tensor& g1, const at::Tensor& w2,
                  const at::Tensor& g2, const Folded& f1, const Folded& f2, bool relu,
                  const std::vector<float>& isc, const std::vector<float>& ish,
                  Bn0Grad<float>* bn0) {
  namespace R = attnact_rows;
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), C1 = w1.size(0);
  const int64_t npix = N * HW;
  const double count = static_cast<double>(npix);
  const R::Blocks blocks(npix);
  auto w1c = w1.reshape({C1, C}).contiguous(), w2c = w2.reshape({C, C1}).contiguous();
  const R::RowWeights w(w1c.data_ptr<float>(), w2c.data_ptr<float>(), C, C1);
  const std::vector<double> g1d = doubles(g1), g2d = doubles(g2);
  std::vector<double> k1(C1), k2(C);  // gamma * rstd: the BatchNorms' input-gradient scales
  for (int64_t j = 0; j < C1; ++j) k1[j] = g1d[j] * f1.rstd[j];
  for (int64_t c = 0; c < C; ++c) k2[c] = g2d[c] * f2.rstd[c];
  R::RowBn bn{R::lanes(f1.scale), R::lanes(f1.shift), R::lanes(f1.mean), R::lanes(f1.rstd),
              R::lanes(k1),       R::lanes(f2.scale), R::lanes(f2.shift), R::lanes(f2.mean),
              R::lanes(f2.rstd),  R::lanes(k2)};
  const float* gp = g.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* zp = z1.numel() ? z1.data_ptr<float>() : nullptr;
  auto opts = x.options();
  // the intermediates between the passes, as rows: B1 -> B2 gh2 and n2, B1 -> B3 g s, B2 -> B3 gh1
  at::Tensor gh2 = scratch().take(npix * C, opts), n2 = scratch().take(npix * C, opts),
             gs = scratch().take(npix * C, opts), gh1 = scratch().take(npix * C1, opts);
  auto means = [&](const std::vector<double>& sums, int64_t ch) {
    std::vector<double> first(sums.begin(), sums.begin() + ch), second(sums.begin() + ch, sums.end());
    for (auto& v : first) v /= count;
    for (auto& v : second) v /= count;
    return std::make_pair(R::lanes(first), R::lanes(second));
  };

  auto parts2 = zero_parts(blocks.chunks, 2 * C);  // [sum gh2 | sum gh2 n2]
  R::pass_b1(gp, xp, zp, blocks, w, bn, relu, isc, ish, gh2.data_ptr<float>(),
             n2.data_ptr<float>(), gs.data_ptr<float>(), parts2);
  const std::vector<double> sum2 = add_parts(parts2);
  const auto [a2, c2] = means(sum2, C);

  auto dw2t_parts = zero_parts(blocks.chunks, C1 * C);
  auto parts1 = zero_parts(blocks.chunks, 2 * C1);  // [sum gh1 | sum gh1 n1]
  R::pass_b2(xp, zp, blocks, w, bn, relu, isc, ish, gh2.data_ptr<float>(), n2.data_ptr<float>(),
             a2, c2, gh1.data_ptr<float>(), dw2t_parts, parts1);
  const std::vector<double> sum1 = add_parts(parts1);
  const auto [a1, c1] = means(sum1, C1);

  auto dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  auto dw1_parts = zero_parts(blocks.chunks, C1 * C);
  R::RowBn0 rbn0;
  if (bn0) {
    bn0->parts = zero_parts(blocks.chunks, 2 * C);
    rbn0 = R::RowBn0{bn0->hsc, bn0->hsh, &bn0->parts};
  }
  R::pass_b3(xp, zp, blocks, w, bn, isc, ish, gh1.data_ptr<float>(), gs.data_ptr<float>(), a1, c1,
             dx.data_ptr<float>(), dw1_parts, bn0 ? &rbn0 : nullptr);
  for (const auto& t : {gh2, n2, gs, gh1}) scratch().give(t);

  const std::vector<double> dw2t = add_parts(dw2t_parts), dw1 = add_parts(dw1_parts);
  std::vector<double> dw2(C * C1);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < C1; ++j) dw2[c * C1 + j] = dw2t[j * C + c];
  const auto dt = x.scalar_type();
  // sum1 = [sum gh1 | sum gh1 n1]: BN1's bias and weight gradients; sum2 the same for BN2
  return Bwd{dx, as_tensor(dw1, w1.sizes(), dt), as_tensor(sum1, {C1}, dt, C1),
             as_tensor(sum1, {C1}, dt), as_tensor(dw2, w2.sizes(), dt),
             as_tensor(sum2, {C}, dt, C), as_tensor(sum2, {C}, dt)};
}

template <typename T>
Fwd forward_impl(const at::Tensor& x, const at::Tensor& w1,
                                     const at::Tensor& g1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& g2,
                                     const at::Tensor& b2, const at::Tensor& mean1_in,
                                     const at::Tensor& var1_in, const at::Tensor& mean2_in,
                                     const at::Tensor& var2_in, bool batch1, bool batch2,
                                     double eps1, double eps2, bool relu, bool keep_z1,
                                     const std::vector<T>& isc = {},
                                     const std::vector<T>& ish = {}) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), C1 = w1.size(0);
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const Layout L{N, HW, cl};
  const Tiles tiles(N, HW);
  const int64_t nchunks = chunk_count(tiles);
  const double count = static_cast<double>(N * HW);
  auto opts = x.options();
  const T* xp = x.data_ptr<T>();
  auto y = at::empty_like(x, fmt);
  const bool need_z1 = keep_z1 || batch1 || batch2;  // a stored z1 serves passes B and C
  // z1: a new tensor when it is kept for backward, else scratch for the passes
  auto z1 = keep_z1 ? at::empty({N, tiles.per_sample, C1, TILE}, opts)
            : need_z1 ? scratch().take(N * tiles.per_sample * C1 * TILE, opts)
                      : at::empty({0}, opts);
  // statistics in double: the running-statistics update is then nn.BatchNorm2d's to the bit
  auto stat = [&](const at::Tensor& v) { return at::empty({v.size(0)}, opts.dtype(at::kDouble)); };
  at::Tensor mean1 = stat(g1), var1 = stat(g1), mean2 = stat(g2), var2 = stat(g2);
  if (!batch1) { mean1.copy_(mean1_in); var1.copy_(var1_in); }
  if (!batch2) { mean2.copy_(mean2_in); var2.copy_(var2_in); }
  if constexpr (std::is_same<T, float>::value) {
    if (!need_z1 && attnact_rows::usable(x)) {  // eval: one pass over pixel rows, no tiles
      const Folded f1 = fold(mean1, var1, g1, b1, eps1), f2 = fold(mean2, var2, g2, b2, eps2);
      const attnact_rows::FoldedMlp mlp(w1.data_ptr<float>(), w2.data_ptr<float>(), C, C1,
                                        f1.scale, f1.shift, f2.scale, f2.shift);
      attnact_rows::eval_forward(xp, y.data_ptr<float>(), N * HW, mlp, relu, isc, ish);
      return Fwd{y, z1, mean1, var1, mean2, var2};
    }
    if (attnact_rows::trains_on_rows(x, C1)) {  // training, or z1 kept: passes A to C on rows
      rows_forward(x, w1, g1, b1, w2, g2, b2, z1, y, mean1, var1, mean2, var2, batch1, batch2,
                   eps1, eps2, relu, isc, ish);
      if (!keep_z1) {
        scratch().give(z1);
        z1 = at::empty({0}, opts);
      }
      return Fwd{y, z1, mean1, var1, mean2, var2};
    }
  }

  auto W1 = padded<T>(w1.reshape({C1, C}), false);  // the tiles' weights
  auto W2 = padded<T>(w2.reshape({C, C1}), false);

  // A: z1 = W1 x, stored; its sums for BN1
  if (need_z1) {
    std::vector<std::vector<double>> parts(nchunks, std::vector<double>(2 * C1, 0.0));
    T* zp = z1.data_ptr<T>();
    for_chunks(nchunks, [&](int64_t k) {
      std::vector<T> xb(C * TILE), zb(C1 * TILE), lane(2 * C1 * TILE, T(0));
      const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
      for (int64_t i = lo; i < hi; ++i) {
        int64_t n, q0, cnt;
        tiles.at(i, n, q0, cnt);
        load_x(xp, L, n, q0, cnt, C, xb.data(), isc, ish);
        T* zt = zp + i * C1 * TILE;  // z1 straight into its tile of the stored tensor
        matvec(W1.data(), C1, C, xb.data(), zt);
        if (batch1) {
          accumulate_stats(zt, C1, cnt, lane.data());
          if ((i - lo + 1) % FLUSH_EVERY == 0) flush(lane.data(), 2 * C1, parts[k].data());
        }
      }
      if (batch1) flush(lane.data(), 2 * C1, parts[k].data());
    });
    if (batch1) finish_stats(parts, C1, count, mean1, var1);
  }
  Folded f1 = fold(mean1, var1, g1, b1, eps1);
  auto s1 = cast<T>(f1.scale), t1 = cast<T>(f1.shift);

  // B: a and z2 from z1; z2's sums for BN2
  if (batch2) {
    std::vector<std::vector<double>> parts(nchunks, std::vector<double>(2 * C, 0.0));
    const T* zp = z1.data_ptr<T>();
    for_chunks(nchunks, [&](int64_t k) {
      std::vector<T> zb(C1 * TILE), ab(C1 * TILE), z2b(C * TILE), lane(2 * C * TILE, T(0));
      Gate<T> gate{W1.data(), W2.data(), s1.data(), t1.data(), nullptr, nullptr, C, C1, relu};
      const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
      for (int64_t i = lo; i < hi; ++i) {
        int64_t n, q0, cnt;
        tiles.at(i, n, q0, cnt);
        gate.act(zp + i * C1 * TILE, ab.data());
        matvec(W2.data(), C, C1, ab.data(), z2b.data());
        accumulate_stats(z2b.data(), C, cnt, lane.data());
        if ((i - lo + 1) % FLUSH_EVERY == 0) flush(lane.data(), 2 * C, parts[k].data());
      }
      flush(lane.data(), 2 * C, parts[k].data());
    });
    finish_stats(parts, C, count, mean2, var2);
  }
  Folded f2 = fold(mean2, var2, g2, b2, eps2);
  auto s2 = cast<T>(f2.scale), t2 = cast<T>(f2.shift);

  // C: y = sigmoid(BN2(W2 a)) * x
  {
    const T* zp = need_z1 ? z1.data_ptr<T>() : nullptr;
    T* yp = y.data_ptr<T>();
    for_chunks(nchunks, [&](int64_t k) {
      std::vector<T> xb(C * TILE), zb(C1 * TILE), ab(C1 * TILE), z2b(C * TILE);
      Gate<T> gate{W1.data(), W2.data(), s1.data(), t1.data(), s2.data(), t2.data(), C, C1, relu};
      const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
      for (int64_t i = lo; i < hi; ++i) {
        int64_t n, q0, cnt;
        tiles.at(i, n, q0, cnt);
        load_x(xp, L, n, q0, cnt, C, xb.data(), isc, ish);
        const T* zt = zp ? zp + i * C1 * TILE : zb.data();  // z1: stored, or again
        if (!zp) matvec(W1.data(), C1, C, xb.data(), zb.data());
        gate.act(zt, ab.data());
        matvec(W2.data(), C, C1, ab.data(), z2b.data());
        gate.sig(z2b.data(), z2b.data());
        for (int64_t e = 0; e < C * TILE; e += TILE)
          st(z2b.data() + e, ld(z2b.data() + e) * ld(xb.data() + e));
        store(yp, L, n, q0, cnt, C, z2b.data());
      }
    });
  }
  if (!keep_z1) {
    scratch().give(z1);
    z1 = at::empty({0}, opts);
  }
  return Fwd{y, z1, mean1, var1, mean2, var2};
}

template <typename T>
Bwd backward_impl(const at::Tensor& g, const at::Tensor& x,
                                      const at::Tensor& z1_in, const at::Tensor& w1,
                                      const at::Tensor& g1, const at::Tensor& b1,
                                      const at::Tensor& w2, const at::Tensor& g2,
                                      const at::Tensor& b2, const at::Tensor& mean1,
                                      const at::Tensor& var1, const at::Tensor& mean2,
                                      const at::Tensor& var2, bool batch1, bool batch2,
                                      double eps1, double eps2, bool relu,
                                      const std::vector<T>& isc = {},
                                      const std::vector<T>& ish = {},
                                      Bn0Grad<T>* bn0 = nullptr) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), C1 = w1.size(0);
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const Layout L{N, HW, cl};
  const Tiles tiles(N, HW);
  const int64_t nchunks = chunk_count(tiles);
  if (bn0) bn0->parts.assign(nchunks, std::vector<double>(2 * C, 0.0));
  const double count = static_cast<double>(N * HW);
  auto gc = g.contiguous(fmt);
  const T* gp = gc.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const bool have_z1 = z1_in.numel() > 0;
  const T* zp = have_z1 ? z1_in.data_ptr<T>() : nullptr;
  at::Tensor z1_tiles;  // z1 stored as pixel rows, rearranged for the tile passes
  Folded f1 = fold(mean1, var1, g1, b1, eps1), f2 = fold(mean2, var2, g2, b2, eps2);
  if constexpr (std::is_same<T, float>::value) {
    if (attnact_rows::trains_on_rows(x, C1)) {  // the forward ran on pixel rows: z1 is rows
      if (batch1 && batch2)
        return rows_backward(gc, x, z1_in, w1, g1, w2, g2, f1, f2, relu, isc, ish, bn0);
      if (have_z1) {
        z1_tiles = scratch().take(N * tiles.per_sample * C1 * TILE, x.options());
        attnact_rows::rows_to_tiles(zp, N, HW, C1, TILE, z1_tiles.data_ptr<float>());
        zp = z1_tiles.data_ptr<float>();
      }
    }
  }
  auto W1 = padded<T>(w1.reshape({C1, C}), false);    // (C1p, C): z1 = W1 x
  auto W2 = padded<T>(w2.reshape({C, C1}), false);    // (Cp, C1): z2 = W2 a
  auto W2T = padded<T>(w2.reshape({C, C1}), true);    // (C1p, C): da = W2^T dz2
  auto W1T = padded<T>(w1.reshape({C1, C}), true);    // (Cp, C1): dx += W1^T dz1
  auto s1 = cast<T>(f1.scale), t1 = cast<T>(f1.shift), s2 = cast<T>(f2.scale),
       t2 = cast<T>(f2.shift);
  auto m1 = cast<T>(f1.mean), r1 = cast<T>(f1.rstd), m2 = cast<T>(f2.mean), r2 = cast<T>(f2.rstd);

  // gh2 = g x s (1 - s): the gradient at BN2's output
  auto gate_grad = [&](const T* gb, const T* xb, const T* sb, T* hb) {
    for (int64_t e = 0; e < C * TILE; e += TILE) {
      const row_t<T> sv = ld(sb + e);
      st(hb + e, ld(gb + e) * ld(xb + e) * sv * (T(1) - sv));
    }
  };
  // B1: sums of gh2 and gh2 * n2 over the batch (BN2's input gradient needs both)
  std::vector<double> sum2(2 * C, 0.0);  // [sum gh2 | sum gh2 n2]
  std::vector<std::vector<double>> parts2(nchunks, std::vector<double>(2 * C, 0.0));
  using V = row_t<T>;
  auto lanes = [](int64_t cnt) {  // 1 on the tile's valid pixels, 0 on the padding
    V mask = {};
    for (int64_t t = 0; t < TILE; ++t) mask[t] = t < cnt ? T(1) : T(0);
    return mask;
  };
  auto b1_tile = [&](const T* z2b, const T* hb, int64_t cnt, T* lane) {
    const V mask = lanes(cnt);
    for (int64_t c = 0; c < C; ++c) {
      const V h = ld(hb + c * TILE) * mask;
      const V nrm = (ld(z2b + c * TILE) - m2[c]) * r2[c];
      st(lane + c * TILE, ld(lane + c * TILE) + h);
      st(lane + (C + c) * TILE, ld(lane + (C + c) * TILE) + h * nrm);
    }
  };
  const Gate<T> gate{W1.data(), W2.data(), s1.data(), t1.data(), s2.data(), t2.data(), C, C1,
                     relu};
  // Intermediates between the passes, in tile order: B1 keeps gh2 and g*s, so that B2 needs
  // neither x nor g nor the sigmoid again; B2 makes n2 = BN2's normalised z2 again from a (one
  // W2 a, cheaper than storing and reading it: benchmarks/atac-overheads-issue14.md) and keeps
  // gh1 for B3 (and g*s when B1 did not run). The pixel rows (rows_training.h) keep n2: there W2 a
  // costs more than its traffic.
  auto tiled = [&](bool need, int64_t ch) -> at::Tensor {
    return need ? scratch().take(N * tiles.per_sample * ch * TILE, x.options())
                : at::empty({0}, x.options());
  };
  at::Tensor gh2 = tiled(batch2, C), gs = tiled(batch1 || batch2, C);
  at::Tensor gh1 = tiled(batch1, C1);
  T* gh2p = batch2 ? gh2.data_ptr<T>() : nullptr;
  T* gsp = (batch1 || batch2) ? gs.data_ptr<T>() : nullptr;
  T* ghp = batch1 ? gh1.data_ptr<T>() : nullptr;
  if (batch2) {
    for_chunks(nchunks, [&](int64_t k) {
      std::vector<T> xb(C * TILE), zb(C1 * TILE), ab(C1 * TILE), z2b(C * TILE), sb(C * TILE),
          gb(C * TILE), hb(C * TILE), lane(2 * C * TILE, T(0));
      const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
      for (int64_t i = lo; i < hi; ++i) {
        int64_t n, q0, cnt;
        tiles.at(i, n, q0, cnt);
        load_x(xp, L, n, q0, cnt, C, xb.data(), isc, ish);
        const T* zt = zp ? zp + i * C1 * TILE : zb.data();  // z1: stored, or again
        if (!zp) matvec(W1.data(), C1, C, xb.data(), zb.data());
        gate.act(zt, ab.data());
        matvec(W2.data(), C, C1, ab.data(), z2b.data());
        gate.sig(z2b.data(), sb.data());
        load(gp, L, n, q0, cnt, C, gb.data());
        T* ht = gh2p + i * C * TILE;
        T* gst = gsp + i * C * TILE;
        gate_grad(gb.data(), xb.data(), sb.data(), ht);
        const V mask = lanes(cnt);
        for (int64_t c = 0; c < C; ++c) {
          const V h = ld(ht + c * TILE) * mask;
          const V nrm = (ld(z2b.data() + c * TILE) - m2[c]) * r2[c];
          st(ht + c * TILE, h);  // the padding lanes get zero gradient
          st(gst + c * TILE, ld(gb.data() + c * TILE) * ld(sb.data() + c * TILE));
          st(lane.data() + c * TILE, ld(lane.data() + c * TILE) + h);
          st(lane.data() + (C + c) * TILE, ld(lane.data() + (C + c) * TILE) + h * nrm);
        }
        if ((i - lo + 1) % FLUSH_EVERY == 0) flush(lane.data(), 2 * C, parts2[k].data());
      }
      flush(lane.data(), 2 * C, parts2[k].data());
    });
    for (const auto& p : parts2)
      for (int64_t j = 0; j < 2 * C; ++j) sum2[j] += p[j];
  }

  // B2: dz2, dW2, da, gh1 (stored), g*s (into dx); sums of gh1 and gh1 * n1 for BN1;
  // without batch statistics in BN2 its parameter gradients are summed here, and without
  // them in BN1 dz1 is final here too, so dx and dW1 are finished in this pass.
  auto dx = at::empty_like(x, fmt);
  T* dxp = dx.data_ptr<T>();
  std::vector<T> k2(C), a2(C), c2(C);  // dz2 = k2 * (gh2 - a2 - n2 * c2)
  const std::vector<double> g2d = doubles(g2);
  for (int64_t c = 0; c < C; ++c) {
    k2[c] = static_cast<T>(g2d[c] * f2.rstd[c]);
    a2[c] = batch2 ? static_cast<T>(sum2[c] / count) : T(0);
    c2[c] = batch2 ? static_cast<T>(sum2[C + c] / count) : T(0);
  }
  std::vector<T> k1(C1);
  {
    const std::vector<double> g1d = doubles(g1);
    for (int64_t j = 0; j < C1; ++j) k1[j] = static_cast<T>(g1d[j] * f1.rstd[j]);
  }
  // per chunk: [dW2 lanes C*C1][dW1 lanes C1*C] and sums: [sum gh2 | sum gh2 n2 (eval BN2)]
  // [sum gh1 | sum gh1 n1]
  std::vector<std::vector<double>> dw2_parts(nchunks, std::vector<double>(C * C1, 0.0));
  std::vector<std::vector<double>> dw1_parts(nchunks, std::vector<double>(C1 * C, 0.0));
  std::vector<std::vector<double>> s2_parts(nchunks, std::vector<double>(2 * C, 0.0));
  std::vector<std::vector<double>> s1_parts(nchunks, std::vector<double>(2 * C1, 0.0));
  for_chunks(nchunks, [&](int64_t k) {
    std::vector<T> xb(C * TILE), zb(C1 * TILE), ab(C1 * TILE), z2b(C * TILE), sb(C * TILE),
        gb(C * TILE), hb(C * TILE), dab(C1 * TILE), dz1b(C1 * TILE), dxb(C * TILE),
        dz2b(C * TILE), dxo(C * TILE), l2(2 * C * TILE, T(0)), l1(2 * C1 * TILE, T(0));
    const bool sums0 = bn0 && !batch1;  // dx is final in this pass: BN0's sums here
    std::vector<T> hat(sums0 ? C * TILE : 0), l0(sums0 ? 2 * C * TILE : 0, T(0));
    OuterSum<T> ow2(C, C1, dw2_parts[k].data()), ow1(batch1 ? 0 : C1, C, dw1_parts[k].data());
    const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
    for (int64_t i = lo; i < hi; ++i) {
      int64_t n, q0, cnt;
      tiles.at(i, n, q0, cnt);
      const bool need_x = !zp || !batch2 || !batch1;
      if (sums0) {
        load_x_hat(xp, L, n, q0, cnt, C, xb.data(), isc, ish, hat.data(), *bn0);
      } else if (need_x) {
        load_x(xp, L, n, q0, cnt, C, xb.data(), isc, ish);
      }
      const T* zt = zp ? zp + i * C1 * TILE : zb.data();  // z1: stored, or again
      if (!zp) matvec(W1.data(), C1, C, xb.data(), zb.data());
      gate.act(zt, ab.data());
      const T* h2t = hb.data();   // gh2
      const T* n2t = z2b.data();  // n2
      const T* gst = dxb.data();  // g * s
      matvec(W2.data(), C, C1, ab.data(), z2b.data());  // z2 again: n2 (B1 keeps no n2)
      if (batch2) {  // gh2 and g*s from B1
        h2t = gh2p + i * C * TILE;
        gst = gsp + i * C * TILE;
        for (int64_t c = 0; c < C; ++c)
          st(z2b.data() + c * TILE, (ld(z2b.data() + c * TILE) - m2[c]) * r2[c]);
      } else {
        gate.sig(z2b.data(), sb.data());
        load(gp, L, n, q0, cnt, C, gb.data());
        gate_grad(gb.data(), xb.data(), sb.data(), hb.data());
        for (int64_t c = 0; c < C; ++c) {
          st(z2b.data() + c * TILE, (ld(z2b.data() + c * TILE) - m2[c]) * r2[c]);
          st(dxb.data() + c * TILE, ld(gb.data() + c * TILE) * ld(sb.data() + c * TILE));
        }
        if (batch1) tstore(gsp, i, C, dxb.data());
      }
      // dz2 into dz2b; the padding lanes get zero gradient
      const V mask = lanes(cnt);
      for (int64_t c = 0; c < C; ++c) {
        const V nrm = ld(n2t + c * TILE);
        const V h = ld(h2t + c * TILE) * mask;
        if (!batch2) {  // BN2's parameter gradients are summed here (no B1 pass)
          st(l2.data() + c * TILE, ld(l2.data() + c * TILE) + h);
          st(l2.data() + (C + c) * TILE, ld(l2.data() + (C + c) * TILE) + h * nrm);
        }
        st(dz2b.data() + c * TILE, k2[c] * (h - a2[c] - nrm * c2[c]) * mask);
      }
      ow2.add(dz2b.data(), ab.data());  // dW2[c][j] += dz2[c] a[j]
      matvec(W2T.data(), C1, C, dz2b.data(), dab.data());  // da = W2^T dz2
      // gh1 = da * relu'(h1); n1 = (z1 - m1) r1 (into zb)
      for (int64_t j = 0; j < C1; ++j) {
        const V z = ld(zt + j * TILE);
        V d = ld(dab.data() + j * TILE) * mask;
        if (relu) d = z * s1[j] + t1[j] > T(0) ? d : V{};
        const V nrm = (z - m1[j]) * r1[j];
        st(dab.data() + j * TILE, d);
        st(l1.data() + j * TILE, ld(l1.data() + j * TILE) + d);
        st(l1.data() + (C1 + j) * TILE, ld(l1.data() + (C1 + j) * TILE) + d * nrm);
      }
      if (batch1) {
        tstore(ghp, i, C1, dab.data());
      } else {  // dz1 is final: dx and dW1 here
        for (int64_t j = 0; j < C1; ++j)
          st(dz1b.data() + j * TILE, ld(dab.data() + j * TILE) * k1[j]);
        ow1.add(dz1b.data(), xb.data());
        matvec(W1T.data(), C, C1, dz1b.data(), hb.data());
        for (int64_t e = 0; e < C * TILE; e += TILE)
          st(dxo.data() + e, ld(gst + e) + ld(hb.data() + e));
        store(dxp, L, n, q0, cnt, C, dxo.data());
        if (sums0) accumulate_products(dxo.data(), hat.data(), C, l0.data());
      }
      if ((i - lo + 1) % FLUSH_EVERY == 0) {
        flush(l2.data(), 2 * C, s2_parts[k].data());
        flush(l1.data(), 2 * C1, s1_parts[k].data());
        if (sums0) flush(l0.data(), 2 * C, bn0->parts[k].data());
      }
    }
    ow2.finish();
    ow1.finish();
    flush(l2.data(), 2 * C, s2_parts[k].data());
    flush(l1.data(), 2 * C1, s1_parts[k].data());
    if (sums0) flush(l0.data(), 2 * C, bn0->parts[k].data());
  });
  std::vector<double> sum1(2 * C1, 0.0), dw2(C * C1, 0.0), dw1(C1 * C, 0.0);
  for (int64_t k = 0; k < nchunks; ++k) {
    for (int64_t j = 0; j < 2 * C1; ++j) sum1[j] += s1_parts[k][j];
    for (int64_t j = 0; j < C * C1; ++j) dw2[j] += dw2_parts[k][j];
    if (!batch1)
      for (int64_t j = 0; j < C1 * C; ++j) dw1[j] += dw1_parts[k][j];
    if (!batch2)
      for (int64_t j = 0; j < 2 * C; ++j) sum2[j] += s2_parts[k][j];
  }

  // B3: dz1 = k1 (gh1 - mean gh1 - n1 mean(gh1 n1)), dx += W1^T dz1, dW1 += dz1 x
  if (batch1) {
    std::vector<T> a1(C1), c1(C1);
    for (int64_t j = 0; j < C1; ++j) {
      a1[j] = static_cast<T>(sum1[j] / count);
      c1[j] = static_cast<T>(sum1[C1 + j] / count);
    }
    for_chunks(nchunks, [&](int64_t k) {
      std::vector<T> xb(C * TILE), zb(C1 * TILE), db(C1 * TILE), dxb(C * TILE), tb(C * TILE);
      std::vector<T> hat(bn0 ? C * TILE : 0), l0(bn0 ? 2 * C * TILE : 0, T(0));
      OuterSum<T> ow1(C1, C, dw1_parts[k].data());
      const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
      for (int64_t i = lo; i < hi; ++i) {
        int64_t n, q0, cnt;
        tiles.at(i, n, q0, cnt);
        if (bn0) {
          load_x_hat(xp, L, n, q0, cnt, C, xb.data(), isc, ish, hat.data(), *bn0);
        } else {
          load_x(xp, L, n, q0, cnt, C, xb.data(), isc, ish);
        }
        const T* zt = zp ? zp + i * C1 * TILE : zb.data();  // z1: stored, or again
        if (!zp) matvec(W1.data(), C1, C, xb.data(), zb.data());
        const T* gt = ghp + i * C1 * TILE;
        const V mask = lanes(cnt);
        for (int64_t j = 0; j < C1; ++j) {
          const V nrm = (ld(zt + j * TILE) - m1[j]) * r1[j];
          st(db.data() + j * TILE, k1[j] * (ld(gt + j * TILE) - a1[j] - nrm * c1[j]) * mask);
        }
        ow1.add(db.data(), xb.data());
        matvec(W1T.data(), C, C1, db.data(), tb.data());
        const T* gst = gsp + i * C * TILE;  // g * s from B2
        for (int64_t e = 0; e < C * TILE; e += TILE)
          st(dxb.data() + e, ld(gst + e) + ld(tb.data() + e));
        store(dxp, L, n, q0, cnt, C, dxb.data());
        if (bn0) {
          accumulate_products(dxb.data(), hat.data(), C, l0.data());
          if ((i - lo + 1) % FLUSH_EVERY == 0) flush(l0.data(), 2 * C, bn0->parts[k].data());
        }
      }
      ow1.finish();
      if (bn0) flush(l0.data(), 2 * C, bn0->parts[k].data());
    });
    for (int64_t k = 0; k < nchunks; ++k)
      for (int64_t j = 0; j < C1 * C; ++j) dw1[j] += dw1_parts[k][j];
  }

  for (const auto& t : {gh2, gs, gh1, z1_tiles}) scratch().give(t);
  const auto dt = x.scalar_type();
  // sum1 = [sum gh1 | sum gh1 n1]: BN1's bias and weight gradients; sum2 the same for BN2
  return Bwd{dx, as_tensor(dw1, w1.sizes(), dt), as_tensor(sum1, {C1}, dt, C1),
             as_tensor(sum1, {C1}, dt), as_tensor(dw2, w2.sizes(), dt),
             as_tensor(sum2, {C}, dt, C), as_tensor(sum2, {C}, dt)};
}

void check(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  TORCH_CHECK(x.device().is_cpu(), "attnact::atac: x must be a CPU tensor");
  TORCH_CHECK(x.dim() == 4, "attnact::atac: x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "attnact::atac: x must be contiguous or channels_last");
  TORCH_CHECK(w1.dim() == 4 && w1.size(1) == x.size(1) && w1.size(2) == 1 && w1.size(3) == 1,
              "attnact::atac: w1 must be (C/r, C, 1, 1)");
  TORCH_CHECK(w2.dim() == 4 && w2.size(0) == x.size(1) && w2.size(1) == w1.size(0),
              "attnact::atac: w2 must be (C, C/r, 1, 1)");
  TORCH_CHECK(x.scalar_type() == w1.scalar_type() && x.scalar_type() == w2.scalar_type(),
              "attnact::atac: x and the weights must share one dtype");
}

at::Tensor stat_or_empty(const c10::optional<at::Tensor>& t, const at::Tensor& like) {
  return t.has_value() ? t.value() : at::empty({0}, like.options());
}

Fwd atac_forward(const at::Tensor& x, const at::Tensor& w1,
                                     const at::Tensor& g1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& g2,
                                     const at::Tensor& b2,
                                     const c10::optional<at::Tensor>& rm1,
                                     const c10::optional<at::Tensor>& rv1,
                                     const c10::optional<at::Tensor>& rm2,
                                     const c10::optional<at::Tensor>& rv2, bool batch1,
                                     bool batch2, double eps1, double eps2, bool relu,
                                     bool keep_z1) {
  check(x, w1, w2);
  TORCH_CHECK(batch1 || (rm1.has_value() && rv1.has_value()),
              "attnact::atac: running statistics of BN1 are needed without batch statistics");
  TORCH_CHECK(batch2 || (rm2.has_value() && rv2.has_value()),
              "attnact::atac: running statistics of BN2 are needed without batch statistics");
  Fwd out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "atac_forward", [&] {
    out = forward_impl<scalar_t>(x, w1.contiguous(), g1, b1, w2.contiguous(), g2, b2,
                                 stat_or_empty(rm1, x), stat_or_empty(rv1, x),
                                 stat_or_empty(rm2, x), stat_or_empty(rv2, x), batch1, batch2,
                                 eps1, eps2, relu, keep_z1);
  });
  return out;
}

Bwd atac_backward(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& z1, const at::Tensor& w1,
                                      const at::Tensor& g1, const at::Tensor& b1,
                                      const at::Tensor& w2, const at::Tensor& g2,
                                      const at::Tensor& b2, const at::Tensor& mean1,
                                      const at::Tensor& var1, const at::Tensor& mean2,
                                      const at::Tensor& var2, bool batch1, bool batch2,
                                      double eps1, double eps2, bool relu) {
  check(x, w1, w2);
  TORCH_CHECK(grad.sizes() == x.sizes(), "attnact::atac_backward: grad must have x's shape");
  Bwd out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "atac_backward", [&] {
    out = backward_impl<scalar_t>(grad.to(x.scalar_type()), x, z1, w1.contiguous(), g1, b1,
                                  w2.contiguous(), g2, b2, mean1, var1, mean2, var2, batch1,
                                  batch2, eps1, eps2, relu);
  });
  return out;
}


// --- BatchNorm then ATAC (bn_atac_*): BN0 folded into the loads of the ATAC kernels ----------
//
// y = ATAC(BN0(c)) for the pre-activation sites BN -> ATAC: the kernels read c and normalise it
// in the tile buffer (load_x), so x = BN0(c) is never written, and backward needs only c (which
// the graph keeps anyway) and BN0's per-channel statistics instead of a saved x. BN0's backward
// is folded in too: the pass that makes dx adds up BN0's sums (Bn0Grad), and bn0_input_grad
// turns dx into dc in place.

// Per-channel mean and biased variance of c over (N, H, W) into double `mean` and `var`: BN0's
// batch statistics, in one pass over c. The lanes add in double: c, unlike z1 and z2, may carry
// a mean large against its spread (a residual stream), which float lane sums would lose.
template <typename T>
void channel_stats(const at::Tensor& c, at::Tensor& mean, at::Tensor& var) {
  const int64_t N = c.size(0), C = c.size(1), HW = c.size(2) * c.size(3);
  if constexpr (std::is_same<T, float>::value) {
    if (attnact_rows::usable(c)) {  // pixel rows: sums over pixels are vectors over channels
      auto parts = zero_parts(attnact_rows::Blocks(N * HW).chunks, 2 * C);
      attnact_rows::channel_sums(c.data_ptr<float>(), N * HW, C, parts);
      finish_stats(parts, C, static_cast<double>(N * HW), mean, var);
      return;
    }
  }
  const bool cl = !c.is_contiguous() && c.is_contiguous(at::MemoryFormat::ChannelsLast);
  const Layout L{N, HW, cl};
  const Tiles tiles(N, HW);
  const int64_t nchunks = chunk_count(tiles);
  std::vector<std::vector<double>> parts(nchunks, std::vector<double>(2 * C, 0.0));
  const T* cp = c.data_ptr<T>();
  using D = row_t<double>;
  for_chunks(nchunks, [&](int64_t k) {
    std::vector<T> xb(C * TILE);
    std::vector<double> lane(2 * C * TILE, 0.0);
    const int64_t lo = tiles.total * k / nchunks, hi = tiles.total * (k + 1) / nchunks;
    for (int64_t i = lo; i < hi; ++i) {
      int64_t n, q0, cnt;
      tiles.at(i, n, q0, cnt);
      load(cp, L, n, q0, cnt, C, xb.data());  // zero beyond cnt: adds nothing
      for (int64_t ch = 0; ch < C; ++ch) {
        const D v = __builtin_convertvector(ld(xb.data() + ch * TILE), D);
        st(lane.data() + ch * TILE, ld(lane.data() + ch * TILE) + v);
        st(lane.data() + (C + ch) * TILE, ld(lane.data() + (C + ch) * TILE) + v * v);
      }
    }
    flush(lane.data(), 2 * C, parts[k].data());
  });
  finish_stats(parts, C, static_cast<double>(N * HW), mean, var);
}

using FwdBn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor>;
using BwdBn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor>;

void check_bn0(const at::Tensor& c, const at::Tensor& g0, const at::Tensor& b0) {
  TORCH_CHECK(g0.dim() == 1 && g0.numel() == c.size(1) && b0.dim() == 1 &&
                  b0.numel() == c.size(1),
              "attnact::bn_atac: the BatchNorm's weight and bias must be (C,)");
  TORCH_CHECK(g0.scalar_type() == c.scalar_type() && b0.scalar_type() == c.scalar_type(),
              "attnact::bn_atac: c and the BatchNorm's weight and bias must share one dtype");
}

// BN0's input gradient in place of dx (its output gradient), one element-wise pass:
// dc = k0 (dx - mean dx - x^ mean(dx x^)) with batch statistics, k0 dx with running ones;
// k0 = gamma0 rstd0, x^ = (c - mean0) rstd0 (the subtraction first: c may carry a mean large
// against its spread). sums = [sum dx | sum dx x^] over the batch.
template <typename T>
void bn0_input_grad(at::Tensor& dx, const at::Tensor& c, const Folded& f0, const at::Tensor& g0,
                    const std::vector<double>& sums, bool batch0) {
  const int64_t N = c.size(0), C = c.size(1), HW = c.size(2) * c.size(3);
  const bool cl = !c.is_contiguous() && c.is_contiguous(at::MemoryFormat::ChannelsLast);
  const double count = static_cast<double>(N * HW);
  const std::vector<double> g0d = doubles(g0);
  std::vector<T> k0(C), off(C), kc(C), m0(C), r0(C);  // dc = k0 dx - off - kc x^
  for (int64_t ch = 0; ch < C; ++ch) {
    const double k = g0d[ch] * f0.rstd[ch];
    k0[ch] = static_cast<T>(k);
    off[ch] = static_cast<T>(batch0 ? k * sums[ch] / count : 0.0);
    kc[ch] = static_cast<T>(batch0 ? k * sums[C + ch] / count : 0.0);
    m0[ch] = static_cast<T>(f0.mean[ch]);
    r0[ch] = static_cast<T>(f0.rstd[ch]);
  }
  T* d = dx.data_ptr<T>();
  const T* cp = c.data_ptr<T>();
  const T *K = k0.data(), *O = off.data(), *KC = kc.data(), *M = m0.data(), *R = r0.data();
  if (cl) {  // pixel rows of C channels: the channel loop vectorises
    at::parallel_for(0, N * HW, 256, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        T* __restrict__ dr = d + p * C;
        const T* __restrict__ cr = cp + p * C;
        for (int64_t ch = 0; ch < C; ++ch)
          dr[ch] = K[ch] * dr[ch] - O[ch] - KC[ch] * ((cr[ch] - M[ch]) * R[ch]);
      }
    });
  } else {  // planes of HW pixels, one channel each
    at::parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const int64_t ch = pl % C;
        T* __restrict__ dr = d + pl * HW;
        const T* __restrict__ cr = cp + pl * HW;
        const T k = K[ch], o = O[ch], kc_ = KC[ch], m = M[ch], r = R[ch];
        for (int64_t q = 0; q < HW; ++q) dr[q] = k * dr[q] - o - kc_ * ((cr[q] - m) * r);
      }
    });
  }
}

FwdBn bn_atac_forward(const at::Tensor& c, const at::Tensor& g0, const at::Tensor& b0,
                      const c10::optional<at::Tensor>& rm0,
                      const c10::optional<at::Tensor>& rv0, bool batch0, double eps0,
                      const at::Tensor& w1, const at::Tensor& g1, const at::Tensor& b1,
                      const at::Tensor& w2, const at::Tensor& g2, const at::Tensor& b2,
                      const c10::optional<at::Tensor>& rm1,
                      const c10::optional<at::Tensor>& rv1,
                      const c10::optional<at::Tensor>& rm2,
                      const c10::optional<at::Tensor>& rv2, bool batch1, bool batch2,
                      double eps1, double eps2, bool relu, bool keep_z1) {
  check(c, w1, w2);
  check_bn0(c, g0, b0);
  TORCH_CHECK(batch0 || (rm0.has_value() && rv0.has_value()),
              "attnact::bn_atac: running statistics of BN0 are needed without batch statistics");
  TORCH_CHECK(batch1 || (rm1.has_value() && rv1.has_value()),
              "attnact::bn_atac: running statistics of BN1 are needed without batch statistics");
  TORCH_CHECK(batch2 || (rm2.has_value() && rv2.has_value()),
              "attnact::bn_atac: running statistics of BN2 are needed without batch statistics");
  const int64_t C = c.size(1);
  auto dopts = c.options().dtype(at::kDouble);
  at::Tensor mean0 = at::empty({C}, dopts), var0 = at::empty({C}, dopts);
  Fwd out;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "bn_atac_forward", [&] {
    if (batch0) {
      channel_stats<scalar_t>(c, mean0, var0);
    } else {
      mean0.copy_(rm0.value());
      var0.copy_(rv0.value());
    }
    const Folded f0 = fold(mean0, var0, g0, b0, eps0);
    out = forward_impl<scalar_t>(c, w1.contiguous(), g1, b1, w2.contiguous(), g2, b2,
                                 stat_or_empty(rm1, c), stat_or_empty(rv1, c),
                                 stat_or_empty(rm2, c), stat_or_empty(rv2, c), batch1, batch2,
                                 eps1, eps2, relu, keep_z1, cast<scalar_t>(f0.scale),
                                 cast<scalar_t>(f0.shift));
  });
  auto [y, z1, mean1, var1, mean2, var2] = out;
  return FwdBn{y, z1, mean0, var0, mean1, var1, mean2, var2};
}

BwdBn bn_atac_backward(const at::Tensor& grad, const at::Tensor& c, const at::Tensor& z1,
                       const at::Tensor& g0, const at::Tensor& b0, const at::Tensor& mean0,
                       const at::Tensor& var0, const at::Tensor& w1, const at::Tensor& g1,
                       const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& g2,
                       const at::Tensor& b2, const at::Tensor& mean1, const at::Tensor& var1,
                       const at::Tensor& mean2, const at::Tensor& var2, bool batch0,
                       bool batch1, bool batch2, double eps0, double eps1, double eps2,
                       bool relu) {
  check(c, w1, w2);
  check_bn0(c, g0, b0);
  TORCH_CHECK(grad.sizes() == c.sizes(), "attnact::bn_atac_backward: grad must have c's shape");
  Bwd out;
  at::Tensor dg0, db0;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "bn_atac_backward", [&] {
    const Folded f0 = fold(mean0, var0, g0, b0, eps0);
    Bn0Grad<scalar_t> bn0{cast<scalar_t>(f0.rstd), {}, {}};
    for (size_t ch = 0; ch < f0.mean.size(); ++ch)
      bn0.hsh.push_back(static_cast<scalar_t>(-f0.mean[ch] * f0.rstd[ch]));
    out = backward_impl<scalar_t>(grad.to(c.scalar_type()), c, z1, w1.contiguous(), g1, b1,
                                  w2.contiguous(), g2, b2, mean1, var1, mean2, var2, batch1,
                                  batch2, eps1, eps2, relu, cast<scalar_t>(f0.scale),
                                  cast<scalar_t>(f0.shift), &bn0);
    std::vector<double> sums(2 * c.size(1), 0.0);  // [sum dx | sum dx x^], chunks in order
    for (const auto& p : bn0.parts)
      for (size_t j = 0; j < sums.size(); ++j) sums[j] += p[j];
    bn0_input_grad<scalar_t>(std::get<0>(out), c, f0, g0, sums, batch0);
    const int64_t C = c.size(1);
    db0 = as_tensor(sums, {C}, c.scalar_type());
    dg0 = as_tensor(sums, {C}, c.scalar_type(), C);
  });
  auto [dc, dw1, dg1, db1, dw2, dg2, db2] = out;  // dc: dx, made BN0's input gradient in place
  return BwdBn{dc, dg0, db0, dw1, dg1, db1, dw2, dg2, db2};
}

}  // namespace

TORCH_LIBRARY(attnact, m) {
  m.def(
      "atac_forward(Tensor x, Tensor w1, Tensor g1, Tensor b1, Tensor w2, Tensor g2, "
      "Tensor b2, Tensor? rm1, Tensor? rv1, Tensor? rm2, Tensor? rv2, bool batch1, "
      "bool batch2, float eps1, float eps2, bool relu, bool keep_z1) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "atac_backward(Tensor grad, Tensor x, Tensor z1, Tensor w1, Tensor g1, Tensor b1, "
      "Tensor w2, Tensor g2, Tensor b2, Tensor mean1, Tensor var1, Tensor mean2, "
      "Tensor var2, bool batch1, bool batch2, float eps1, float eps2, bool relu) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "bn_atac_forward(Tensor c, Tensor g0, Tensor b0, Tensor? rm0, Tensor? rv0, bool batch0, "
      "float eps0, Tensor w1, Tensor g1, Tensor b1, Tensor w2, Tensor g2, Tensor b2, "
      "Tensor? rm1, Tensor? rv1, Tensor? rm2, Tensor? rv2, bool batch1, bool batch2, "
      "float eps1, float eps2, bool relu, bool keep_z1) -> (Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "bn_atac_backward(Tensor grad, Tensor c, Tensor z1, Tensor g0, Tensor b0, Tensor mean0, "
      "Tensor var0, Tensor w1, Tensor g1, Tensor b1, Tensor w2, Tensor g2, Tensor b2, "
      "Tensor mean1, Tensor var1, Tensor mean2, Tensor var2, bool batch0, bool batch1, "
      "bool batch2, float eps0, float eps1, float eps2, bool relu) -> (Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(attnact, CPU, m) {
  m.impl("atac_forward", &atac_forward);
  m.impl("bn_atac_forward", &bn_atac_forward);
  m.impl("bn_atac_backward", &bn_atac_backward);
  m.impl("atac_backward", &atac_backward);
}
