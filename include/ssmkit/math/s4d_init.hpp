// Diagonal initialisations of S4D (Gu et al., On the Parameterization and Initialization of
// Diagonal State Space Models, arXiv 2206.11893, Sec. 4): S4D-Lin, S4D-Inv, S4D-Real, S4D-LegS.
#pragma once

#include "ssmkit/math/nplr.hpp"

#include <cmath>
#include <complex>

namespace ssmkit::math {

enum class S4DInit { Lin, Inv, Real, LegS };

/// M = N/2 diagonal modes (conjugates implied) and their input vector.
template <class T>
struct DiagonalInit {
  CVector<T> Lambda;
  CVector<T> B;
};

/// The S4D initialisation `init` for a real state of size N (N even; N/2 complex modes).
///  Lin:  Lambda_n = -1/2 + i pi n.           Inv:  Lambda_n = -1/2 + i (N/pi) (N/(2n+1) - 1).
///  Real: Lambda_n = -(n+1).                  LegS: the eigenvalues of LegS's normal part.
/// B = 1, except LegS which keeps the HiPPO B in the eigenbasis.
template <class T = double>
DiagonalInit<T> s4d_init(S4DInit init, Index N) {
  SSMKIT_CHECK(N >= 2 && N % 2 == 0, "N", "state size (conjugate pairs)", "even and >= 2", N);
  const Index M = N / 2;
  if (init == S4DInit::LegS) {
    const Dplr<T> d = dplr<T>(Measure::LegS, N);
    return {d.Lambda, d.B};
  }
  DiagonalInit<T> out{CVector<T>(M), CVector<T>::Ones(M)};
  for (Index n = 0; n < M; ++n) {
    switch (init) {
      case S4DInit::Lin:
        out.Lambda(n) = {T(-0.5), T(M_PI) * T(n)};
        break;
      case S4DInit::Inv:
        out.Lambda(n) = {T(-0.5), T(N) / T(M_PI) * (T(N) / T(2 * n + 1) - T(1))};
        break;
      case S4DInit::Real:
        out.Lambda(n) = {-T(n + 1), T(0)};
        break;
      case S4DInit::LegS:
        break;
    }
  }
  return out;
}

}  // namespace ssmkit::math
