// Convolution kernel of a diagonal SSM, K[h,l] = 2 Re sum_n C[h,n] A_bar[h,n]^l B_bar[h,n] for
// l < L: a Vandermonde product (S4D, arXiv 2206.11893, Sec. 3.2), conjugate modes implied.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/math/discretize.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <string>
#include <vector>

namespace ssmkit::cpu {

/// A diagonal SSM of H channels with M complex modes each (a real state of size 2M).
template <class T>
struct DiagonalSsm {
  TensorView<const std::complex<T>, 2> Lambda;  ///< (H, M) continuous eigenvalues, Re < 0
  TensorView<const std::complex<T>, 2> B;       ///< (H, M)
  TensorView<const std::complex<T>, 2> C;       ///< (H, M)
  TensorView<const T, 1> dt;                    ///< (H) step sizes, > 0

  Index channels() const { return Lambda.size(0); }
  Index modes() const { return Lambda.size(1); }
};

namespace detail {

template <class T>
void check_stable_modes(const TensorView<const std::complex<T>, 2>& Lambda, const char* arg) {
  for (Index h = 0; h < Lambda.size(0); ++h)
    for (Index n = 0; n < Lambda.size(1); ++n) {
      const std::complex<T> l = Lambda(h, n);
      SSMKIT_CHECK(
          std::isfinite(l.real()) && std::isfinite(l.imag()) && l.real() < T(0), arg,
          ("real part of element (" + std::to_string(h) + ", " + std::to_string(n) + ")").c_str(),
          "< 0 (a stable mode)", l);
    }
}

template <class T>
void check_steps(const TensorView<const T, 1>& dt, const char* arg) {
  for (Index h = 0; h < dt.size(0); ++h)
    math::check_step(dt(h), (std::string(arg) + "[" + std::to_string(h) + "]").c_str());
}

template <class T>
void check_finite_modes(const TensorView<const std::complex<T>, 2>& v, const char* arg) {
  for (Index h = 0; h < v.size(0); ++h)
    for (Index n = 0; n < v.size(1); ++n)
      SSMKIT_CHECK(std::isfinite(v(h, n).real()) && std::isfinite(v(h, n).imag()), arg, "elements",
                   "finite", v(h, n));
}

}  // namespace detail

/// Validates a diagonal SSM: shapes, CPU memory, finite B and C, Re Lambda < 0, dt finite > 0.
template <class T>
void validate(const DiagonalSsm<T>& s) {
  const Index H = s.Lambda.size(0), M = s.Lambda.size(1);
  SSMKIT_CHECK(H >= 1, "Lambda", "channels (dim 0)", ">= 1", H);
  SSMKIT_CHECK(M >= 1, "Lambda", "modes (dim 1)", ">= 1", M);
  check_device(s.Lambda, "Lambda", Device::CPU);
  check_shape(s.B, "B", {H, M});
  check_device(s.B, "B", Device::CPU);
  check_shape(s.C, "C", {H, M});
  check_device(s.C, "C", Device::CPU);
  check_shape(s.dt, "dt", {H});
  check_device(s.dt, "dt", Device::CPU);
  detail::check_stable_modes(s.Lambda, "Lambda");
  detail::check_finite_modes(s.B, "B");
  detail::check_finite_modes(s.C, "C");
  detail::check_steps(s.dt, "dt");
}

/// K (H, L): the first L taps of each channel's kernel. Each term is the product of two exact
/// exponentials, exp(l0 log A_bar) for the block start and exp(j log A_bar) for the offset, so
/// the error does not grow with l as repeated multiplication's would. Computed in double.
template <class T>
void ssm_kernel_vandermonde(const DiagonalSsm<T>& s, math::Discretization method,
                            const TensorView<T, 2>& K) {
  validate(s);
  const Index H = s.channels(), M = s.modes();
  SSMKIT_CHECK(K.size(1) >= 1, "K", "length (dim 1)", ">= 1", K.size(1));
  check_shape(K, "K", {H, K.size(1)});
  check_device(K, "K", Device::CPU);
  const Index L = K.size(1);
  constexpr Index kBlock = 64;
  using cd = std::complex<double>;

  // A_bar^k = exp(k log A_bar), except A_bar = 0 (bilinear at dt·Lambda = −2, log A_bar = −inf):
  // its powers are 1, 0, 0, ..., where exp(0·(−inf)) would be NaN.
  const auto power = [](cd log_a, Index k) {
    return std::isinf(log_a.real()) ? cd(k == 0 ? 1.0 : 0.0) : std::exp(double(k) * log_a);
  };
  parallel_for(0, H, [&](Index h) {
    std::vector<double> pw_re(M * kBlock), pw_im(M * kBlock), acc(kBlock);
    std::vector<cd> logA(M), q(M);
    for (Index n = 0; n < M; ++n) {
      const auto mode = math::discretize_mode<double>(cd(s.Lambda(h, n)), double(s.dt(h)), method);
      logA[n] = mode.log_A_bar;
      q[n] = 2.0 * cd(s.C(h, n)) * mode.B_scale * cd(s.B(h, n));
      for (Index j = 0; j < kBlock; ++j) {
        const cd p = power(logA[n], j);
        pw_re[n * kBlock + j] = p.real();
        pw_im[n * kBlock + j] = p.imag();
      }
    }
    for (Index l0 = 0; l0 < L; l0 += kBlock) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (Index n = 0; n < M; ++n) {
        const cd anchor = q[n] * power(logA[n], l0);
        if (anchor == cd(0))
          continue;  // underflowed: this mode has decayed for good
        const double ar = anchor.real(), ai = anchor.imag();
        const double* pr = &pw_re[n * kBlock];
        const double* pi = &pw_im[n * kBlock];
        for (Index j = 0; j < kBlock; ++j)
          acc[j] += ar * pr[j] - ai * pi[j];
      }
      const Index len = std::min(kBlock, L - l0);
      for (Index j = 0; j < len; ++j)
        K(h, l0 + j) = static_cast<T>(acc[j]);
    }
  });
}

}  // namespace ssmkit::cpu
