// SIMD packs for the CPU kernels and the elementary functions the selective scan needs on them:
// exp2 (split into 2^n · 2^f, a degree-6 fit of 2^f on [-1/2, 1/2], ~1e-7 relative),
// log1p on [0, 1] (2·atanh(e/(2+e)) series), and the softplus, sigmoid and SiLU built from them.
#pragma once

#include "ssmkit/math/activations.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace ssmkit::cpu::simd {

/// Portable pack of W lanes of F (plain loops the compiler may vectorise): the fallback of
/// every instruction set, and the double-precision pack.
template <class F, int W>
struct Portable {
  using scalar = F;
  static constexpr int width = W;
  F v[W];

  static Portable load(const F* p) {
    Portable r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  void store(F* p) const { std::memcpy(p, v, sizeof(v)); }
  static Portable broadcast(F x) {
    Portable r;
    for (int i = 0; i < W; ++i)
      r.v[i] = x;
    return r;
  }
  /// Lane i: the sum of row i of the W×W row-major matrix m.
  static Portable sum_rows(const F* m) {
    Portable r;
    for (int i = 0; i < W; ++i) {
      F s = 0;
      for (int j = 0; j < W; ++j)
        s += m[i * W + j];
      r.v[i] = s;
    }
    return r;
  }
  template <class Op>
  static Portable map(const Portable& a, const Portable& b, Op op) {
    Portable r;
    for (int i = 0; i < W; ++i)
      r.v[i] = op(a.v[i], b.v[i]);
    return r;
  }
  friend Portable operator+(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x + y; });
  }
  friend Portable operator-(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x - y; });
  }
  friend Portable operator*(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x * y; });
  }
  friend Portable operator/(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x / y; });
  }
  friend Portable fma(const Portable& a, const Portable& b, const Portable& c) {
    Portable r;
    for (int i = 0; i < W; ++i)
      r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  /// max and min return b when a lane is unordered, as the SSE/AVX instructions do.
  friend Portable max(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x > y ? x : y; });
  }
  friend Portable min(const Portable& a, const Portable& b) {
    return map(a, b, [](F x, F y) { return x < y ? x : y; });
  }
  friend Portable abs(const Portable& a) {
    return map(a, a, [](F x, F) { return std::abs(x); });
  }
  friend Portable reciprocal(const Portable& a) {
    return map(a, a, [](F x, F) { return F(1) / x; });
  }
  /// as_float(as_int(n) << 23): 2^(k-127) when the low mantissa bits of n hold the integer k
  /// in [1, 254] (float lanes only; the exponent trick of exp2).
  friend Portable exponent_bits(const Portable& n) {
    static_assert(std::is_same_v<F, float>, "float packs only");
    Portable r;
    for (int i = 0; i < W; ++i) {
      std::uint32_t k;
      std::memcpy(&k, &n.v[i], 4);
      k <<= 23;
      std::memcpy(&r.v[i], &k, 4);
    }
    return r;
  }
};

#if defined(__AVX2__) && defined(__FMA__)
/// Eight float lanes in an AVX2 register.
struct Avx2 {
  using scalar = float;
  static constexpr int width = 8;
  __m256 v;

  static Avx2 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  static Avx2 broadcast(float x) { return {_mm256_set1_ps(x)}; }
  /// Lane i: the sum of row i of the 8×8 row-major matrix m, by a transpose-and-add tree (halves,
  /// then pairs, then single lanes: 14 shuffles and 7 adds for the 8 sums). The tree leaves row
  /// k in lane π(k), π = (0 2 1 3 4 6 5 7), an involution, so rows are read in π order.
  static Avx2 sum_rows(const float* m) {
    constexpr int pi[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    __m256 a[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 x = _mm256_loadu_ps(m + 8 * pi[i]), y = _mm256_loadu_ps(m + 8 * pi[i + 4]);
      a[i] = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
    }
    __m256 b[2];
    for (int i = 0; i < 2; ++i) {
      const __m256d x = _mm256_castps_pd(a[i]), y = _mm256_castps_pd(a[i + 2]);
      b[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)),
                           _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
    }
    return {
        _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], 0x88), _mm256_shuffle_ps(b[0], b[1], 0xdd))};
  }
  friend Avx2 operator+(Avx2 a, Avx2 b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend Avx2 operator-(Avx2 a, Avx2 b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend Avx2 operator*(Avx2 a, Avx2 b) { return {_mm256_mul_ps(a.v, b.v)}; }
  friend Avx2 operator/(Avx2 a, Avx2 b) { return {_mm256_div_ps(a.v, b.v)}; }
  friend Avx2 fma(Avx2 a, Avx2 b, Avx2 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  friend Avx2 max(Avx2 a, Avx2 b) { return {_mm256_max_ps(a.v, b.v)}; }
  friend Avx2 min(Avx2 a, Avx2 b) { return {_mm256_min_ps(a.v, b.v)}; }
  friend Avx2 abs(Avx2 a) {
    return {_mm256_and_ps(a.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))};
  }
  /// 1/a to ~2e-7 relative: the 12-bit estimate and one Newton step, cheaper than a division.
  friend Avx2 reciprocal(Avx2 a) {
    const __m256 r = _mm256_rcp_ps(a.v);
    return {_mm256_fmadd_ps(r, _mm256_fnmadd_ps(a.v, r, _mm256_set1_ps(1.0f)), r)};
  }
  friend Avx2 exponent_bits(Avx2 n) {
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(n.v), 23))};
  }
};
#endif

#if defined(__AVX512F__)
/// Sixteen float lanes in an AVX-512 register.
struct Avx512 {
  using scalar = float;
  static constexpr int width = 16;
  __m512 v;

  static Avx512 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  static Avx512 broadcast(float x) { return {_mm512_set1_ps(x)}; }
  /// Lane i: the sum of row i of the 16×16 row-major matrix m, by a transpose-and-add tree
  /// (256-bit halves, 128-bit quarters, pairs, single lanes: 30 shuffles and 15 adds for the 16
  /// sums). The tree leaves row k in lane π(k), an involution, so rows are read in π order.
  static Avx512 sum_rows(const float* m) {
    constexpr int pi[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};
    __m512 a[8];
    for (int i = 0; i < 8; ++i) {
      const __m512 x = _mm512_loadu_ps(m + 16 * pi[i]), y = _mm512_loadu_ps(m + 16 * pi[i + 8]);
      a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xee));
    }
    __m512 b[4];
    for (int i = 0; i < 4; ++i)
      b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 4], 0x88),
                           _mm512_shuffle_f32x4(a[i], a[i + 4], 0xdd));
    __m512 c[2];
    for (int i = 0; i < 2; ++i) {
      const __m512d x = _mm512_castps_pd(b[i]), y = _mm512_castps_pd(b[i + 2]);
      c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    return {
        _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xdd))};
  }
  friend Avx512 operator+(Avx512 a, Avx512 b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend Avx512 operator-(Avx512 a, Avx512 b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend Avx512 operator*(Avx512 a, Avx512 b) { return {_mm512_mul_ps(a.v, b.v)}; }
  friend Avx512 operator/(Avx512 a, Avx512 b) { return {_mm512_div_ps(a.v, b.v)}; }
  friend Avx512 fma(Avx512 a, Avx512 b, Avx512 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  // The masked forms with an explicit source: GCC 12's unmasked ones pass _mm512_undefined_ps()
  // and trip -Wuninitialized once inlined.
  friend Avx512 max(Avx512 a, Avx512 b) { return {_mm512_mask_max_ps(a.v, 0xffff, a.v, b.v)}; }
  friend Avx512 min(Avx512 a, Avx512 b) { return {_mm512_mask_min_ps(a.v, 0xffff, a.v, b.v)}; }
  friend Avx512 abs(Avx512 a) { return {_mm512_abs_ps(a.v)}; }
  /// 1/a to ~1e-7 relative: the 14-bit estimate and one Newton step.
  friend Avx512 reciprocal(Avx512 a) {
    const __m512 r = _mm512_mask_rcp14_ps(a.v, 0xffff, a.v);
    return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(1.0f)), r)};
  }
  friend Avx512 exponent_bits(Avx512 n) {
    const __m512i bits = _mm512_castps_si512(n.v);
    return {_mm512_castsi512_ps(_mm512_mask_slli_epi32(bits, 0xffff, bits, 23))};
  }
};
#endif

/// The widest float pack the compiler targets; the portable one where no intrinsics apply.
#if defined(__AVX512F__)
using BestF32 = Avx512;
#elif defined(__AVX2__) && defined(__FMA__)
using BestF32 = Avx2;
#else
using BestF32 = Portable<float, 8>;
#endif

template <class P>
inline constexpr bool is_f32_pack = std::is_same_v<typename P::scalar, float>;

/// 2^x. Float packs: the polynomial, accurate to ~1.2e-7 relative for x in [-125, 127], and
/// clamped to that range (never inf, never subnormal: the scan needs neither); kClampHigh = false
/// skips the upper clamp for callers that guarantee x <= 0. Double packs use std::exp2 per lane.
template <class P, bool kClampHigh = true>
P exp2(P x) {
  if constexpr (!is_f32_pack<P>) {
    for (int i = 0; i < P::width; ++i)
      x.v[i] = std::exp2(x.v[i]);
    return x;
  } else {
    // Adding 1.5·2^23 + 127 rounds x to the integer n held, plus 127, in the low mantissa bits;
    // 2^f for the remainder f in [-1/2, 1/2] is a polynomial, multiplied by 2^n made by shifting
    // those bits into the exponent field (exact while the result stays normal). A multiply, not
    // an integer add to the exponent field: that would add a NaN's payload bits to it and could
    // turn the NaN into a number. The clamps return their second operand for a NaN lane (the
    // SSE/AVX rule, which the portable pack follows), so x goes second and a NaN propagates.
    const P magic = P::broadcast(12583039.0f);
    x = max(P::broadcast(-125.0f), x);
    if constexpr (kClampHigh)
      x = min(P::broadcast(127.0f), x);
    const P rounded = x + magic;
    const P f = x - (rounded - magic);
    P poly = P::broadcast(1.5332502e-4f);
    poly = fma(poly, f, P::broadcast(1.3394706e-3f));
    poly = fma(poly, f, P::broadcast(9.6184909e-3f));
    poly = fma(poly, f, P::broadcast(5.5503424e-2f));
    poly = fma(poly, f, P::broadcast(2.4022648e-1f));
    poly = fma(poly, f, P::broadcast(6.9314718e-1f));
    poly = fma(poly, f, P::broadcast(1.0f));
    return poly * exponent_bits(rounded);
  }
}

/// log(1 + e) for e in [0, 1], to ~1e-7 relative even for tiny e: with s = e/(2+e) in [0, 1/3],
/// log1p(e) = 2·atanh(s) = 2s·Σ_k s^2k/(2k+1), eight terms.
template <class P>
P log1p_unit(P e) {
  using F = typename P::scalar;
  const P s = e / (P::broadcast(F(2)) + e);
  const P s2 = s * s;
  P series = P::broadcast(F(1) / F(15));
  for (int k = 6; k >= 0; --k)
    series = fma(series, s2, P::broadcast(F(1) / F(2 * k + 1)));
  return (s + s) * series;
}

/// softplus(x) = max(x, 0) + log1p(e^-|x|), which rounds to x itself above 20 in float, as
/// PyTorch's threshold does. Double packs use the scalar ssmkit::softplus.
template <class P>
P softplus(P x) {
  using F = typename P::scalar;
  if constexpr (!is_f32_pack<P>) {
    for (int i = 0; i < P::width; ++i)
      x.v[i] = ssmkit::softplus(x.v[i]);
    return x;
  } else {
    const P e = exp2(abs(x) * P::broadcast(F(-1.4426950408889634)));
    return max(P::broadcast(F(0)), x) + log1p_unit(e);  // x second: a NaN lane stays NaN
  }
}

/// σ(x) = 1 / (1 + e^-x); e^-x saturates at 2^127, which gives the correct ~0 for x << 0.
template <class P>
P sigmoid(P x) {
  using F = typename P::scalar;
  if constexpr (!is_f32_pack<P>) {
    for (int i = 0; i < P::width; ++i)
      x.v[i] = ssmkit::sigmoid(x.v[i]);
    return x;
  } else {
    return reciprocal(P::broadcast(F(1)) + exp2(x * P::broadcast(F(-1.4426950408889634))));
  }
}

/// silu(x) = x·σ(x).
template <class P>
P silu(P x) {
  if constexpr (!is_f32_pack<P>) {
    for (int i = 0; i < P::width; ++i)
      x.v[i] = ssmkit::silu(x.v[i]);
    return x;
  } else {
    return x * sigmoid(x);
  }
}

}  // namespace ssmkit::cpu::simd
