// HiPPO transition pairs (A, B) of the LegS, LegT, LagT and FouT measures (Gu et al., HiPPO,
// arXiv 2008.07669, Sec. 2-3 and App. D; normalised as in the S4 repository's transition()).
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <ostream>

namespace ssmkit::math {

/// The measure a HiPPO operator projects onto.
///  LegS: Legendre on [0, t] (scaled).  LegT: Legendre on the window [t - 2, t] (translated,
///  window length 2 as in S4; scale A and B by 2/theta for a window theta).
///  LagT: Laguerre (translated).  FouT: truncated Fourier on a unit window (N even).
enum class Measure { LegS, LegT, LagT, FouT };

inline std::ostream& operator<<(std::ostream& os, Measure m) {
  const char* names[] = {"LegS", "LegT", "LagT", "FouT"};
  return os << names[static_cast<int>(m)];
}

/// A continuous-time state space pair h' = A h + B u.
template <class T>
struct Transition {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> A;
  Eigen::Matrix<T, Eigen::Dynamic, 1> B;
};

namespace detail {
inline void check_state_size(Measure m, Index N) {
  SSMKIT_CHECK(N >= 1, "N", "state size", ">= 1", N);
  if (m == Measure::FouT)
    SSMKIT_CHECK(N % 2 == 0, "N", "state size of FouT (cosine/sine pairs)", "even", N);
}
}  // namespace detail

/// The HiPPO pair of `measure` with state size N.
template <class T = double>
Transition<T> hippo(Measure measure, Index N) {
  detail::check_state_size(measure, N);
  using std::sqrt;
  Transition<T> t{Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Zero(N, N),
                  Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(N)};
  auto r = [](Index n) { return sqrt(T(2 * n + 1)); };
  switch (measure) {
    case Measure::LegS:
      // A[n,k] = -sqrt(2n+1) sqrt(2k+1) below the diagonal, -(n+1) on it; B[n] = sqrt(2n+1).
      for (Index n = 0; n < N; ++n) {
        for (Index k = 0; k < n; ++k)
          t.A(n, k) = -r(n) * r(k);
        t.A(n, n) = -T(n + 1);
        t.B(n) = r(n);
      }
      break;
    case Measure::LegT:
      // A[n,k] = -r_n r_k / 2 for k <= n and -(-1)^(n-k) r_n r_k / 2 above; B[n] = r_n / 2.
      for (Index n = 0; n < N; ++n) {
        for (Index k = 0; k < N; ++k) {
          const T sign = (k <= n || (k - n) % 2 == 0) ? T(1) : T(-1);
          t.A(n, k) = -T(0.5) * sign * r(n) * r(k);
        }
        t.B(n) = T(0.5) * r(n);
      }
      break;
    case Measure::LagT:
      // A = I/2 - tril(ones), B = ones.
      for (Index n = 0; n < N; ++n) {
        for (Index k = 0; k <= n; ++k)
          t.A(n, k) = T(-1);
        t.A(n, n) = T(-0.5);
        t.B(n) = T(1);
      }
      break;
    case Measure::FouT: {
      // State 2j holds the cosine and 2j+1 the sine of frequency j: a rotation at pi*j between
      // them, minus the rank-one correction B B^T that accounts for the window's far endpoint.
      for (Index n = 0; n < N; n += 2)
        t.B(n) = n == 0 ? T(1) : sqrt(T(2));
      for (Index n = 2; n + 1 < N; n += 2) {
        const T freq = T(M_PI) * T(n / 2);
        t.A(n, n + 1) = -freq;
        t.A(n + 1, n) = freq;
      }
      t.A -= t.B * t.B.transpose();
      break;
    }
  }
  return t;
}

}  // namespace ssmkit::math
