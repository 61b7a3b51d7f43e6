// Causal long convolution y[b,t,h] = sum_{s<=t} K[h,s] u[b,t-s,h] + D[h] u[b,t,h] in O(L log L):
// zero-padded real FFTs of length >= 2L, so the circular product equals the linear one
// (S4, arXiv 2111.00396, Sec. 3.3, convolution mode).
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <unsupported/Eigen/FFT>

#include <algorithm>
#include <cmath>
#include <complex>
#include <string>
#include <vector>

namespace ssmkit::cpu {

/// Arguments of fft_conv. Views are logical (batch, length, channels) in any memory order.
template <class T>
struct FftConvParams {
  TensorView<const T, 3> u;       ///< (batch, L, H)
  TensorView<const T, 2> K;       ///< (H, Lk), Lk >= L: only the first L taps are used
  TensorView<const T, 1> D_skip;  ///< (H) optional skip
  TensorView<T, 3> y;             ///< (batch, L, H)
};

template <class T>
void validate(const FftConvParams<T>& p) {
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.u.size(2);
  check_device(p.u, "u", Device::CPU);
  // Eigen's kissfft sizes its transforms, of length >= 2L - 1, as int.
  SSMKIT_CHECK(L >= 1 && L <= (Index{1} << 29), "u", "length (dim 1)", "in [1, 2^29]", L);
  SSMKIT_CHECK(H >= 1, "u", "channels (dim 2)", ">= 1", H);
  SSMKIT_CHECK(p.K.size(0) == H && p.K.size(1) >= L, "K", "shape",
               "(" + std::to_string(H) + ", >= " + std::to_string(L) + ")",
               ssmkit::detail::shape_string<2>(p.K.shape()));
  check_device(p.K, "K", Device::CPU);
  if (!p.D_skip.absent()) {
    check_shape(p.D_skip, "D", {H});
    check_device(p.D_skip, "D", Device::CPU);
  }
  check_shape(p.y, "y", {Bt, L, H});
  check_device(p.y, "y", Device::CPU);
  // y may be u itself (each element is read before it is written), but no other overlap.
  check_disjoint_or_same(p.y, "y", p.u, "u");
  check_disjoint(p.y, "y", p.K, "K");
  check_disjoint(p.y, "y", p.D_skip, "D");
}

/// Smallest FFT length >= 2L - 1 that is a power of two (at least 4: kissfft's real path).
inline Index fft_conv_length(Index L) {
  Index n = 4;
  while (n < 2 * L - 1)
    n *= 2;
  return n;
}

/// y = causal_conv(u, K) + D u; y may be u (in place) but must not overlap it otherwise. Channels
/// go in tiles so that token-major rows are read and written a tile at a time; every tile owns its
/// FFT plans (kissfft plans are not shared).
template <class T>
void fft_conv(const FftConvParams<T>& p) {
  validate(p);
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.u.size(2);
  const Index n = fft_conv_length(L), F = n / 2 + 1;
  constexpr Index kTile = 8;
  using C = std::complex<T>;
  const Index tiles = (H + kTile - 1) / kTile;

  parallel_for(0, tiles, [&](Index tile) {
    const Index h0 = tile * kTile, w = std::min(kTile, H - h0);
    Eigen::FFT<T> fft;
    fft.SetFlag(Eigen::FFT<T>::HalfSpectrum);
    std::vector<T> buf(kTile * n);
    std::vector<C> Khat(kTile * F), spec(F);
    for (Index j = 0; j < w; ++j) {
      T* b = &buf[j * n];
      for (Index t = 0; t < L; ++t)
        b[t] = p.K(h0 + j, t);
      std::fill(b + L, b + n, T(0));
      fft.fwd(&Khat[j * F], b, n);
    }
    for (Index bi = 0; bi < Bt; ++bi) {
      for (Index j = 0; j < w; ++j)
        std::fill(&buf[j * n + L], &buf[j * n] + n, T(0));
      for (Index t = 0; t < L; ++t)
        for (Index j = 0; j < w; ++j)
          buf[j * n + t] = p.u(bi, t, h0 + j);
      for (Index j = 0; j < w; ++j) {
        T* b = &buf[j * n];
        fft.fwd(spec.data(), b, n);
        const C* kh = &Khat[j * F];
        for (Index f = 0; f < F; ++f)
          spec[f] *= kh[f];
        fft.inv(b, spec.data(), n);
      }
      for (Index t = 0; t < L; ++t)
        for (Index j = 0; j < w; ++j) {
          const T skip = p.D_skip.absent() ? T(0) : p.D_skip(h0 + j) * p.u(bi, t, h0 + j);
          p.y(bi, t, h0 + j) = buf[j * n + t] + skip;
        }
    }
  });
}

}  // namespace ssmkit::cpu
