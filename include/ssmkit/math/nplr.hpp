// Normal plus low-rank (NPLR) form of the HiPPO matrices, A = V (Lambda - P~ P~^H) V^H, and the
// conjugate-symmetric DPLR parameters that keep N/2 eigenvalues (S4, arXiv 2111.00396, Thm. 1,
// Sec. 3.3).
#pragma once

#include "ssmkit/math/hippo.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numeric>
#include <vector>

namespace ssmkit::math {

template <class T>
using CMatrix = Eigen::Matrix<std::complex<T>, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using CVector = Eigen::Matrix<std::complex<T>, Eigen::Dynamic, 1>;
template <class T>
using RMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using RVector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Rank of the correction that makes the HiPPO matrix of `measure` normal (LegT needs two).
inline Index nplr_rank(Measure measure) {
  return measure == Measure::LegT ? 2 : 1;
}

/// The real low-rank factor P (N x rank) such that A + P P^T is normal (skew-symmetric plus a
/// multiple of the identity).
template <class T = double>
RMatrix<T> rank_correction(Measure measure, Index N) {
  detail::check_state_size(measure, N);
  RMatrix<T> P = RMatrix<T>::Zero(N, nplr_rank(measure));
  for (Index n = 0; n < N; ++n) {
    switch (measure) {
      case Measure::LegS:
        P(n, 0) = std::sqrt(T(n) + T(0.5));
        break;
      case Measure::LegT:
        // The two parities separately, halved like A itself.
        P(n, n % 2 == 0 ? 1 : 0) = std::sqrt(T(2 * n + 1) / T(2));
        break;
      case Measure::LagT:
        P(n, 0) = std::sqrt(T(0.5));
        break;
      case Measure::FouT:
        P(n, 0) = n == 0 ? T(1) : (n % 2 == 0 ? std::sqrt(T(2)) : T(0));
        break;
    }
  }
  return P;
}

/// Diagonal plus low-rank parameters of a real system of size 2M kept as M complex modes whose
/// conjugates are implied: the full system is diag(Lambda, conj Lambda) - [P; conj P][P; conj P]^H,
/// input [B; conj B], output [C, conj C]; so y = 2 Re(C h) for the kept half h.
template <class T>
struct Dplr {
  CVector<T> Lambda;  ///< (M) eigenvalues of the normal part, Im >= 0
  CMatrix<T> P;       ///< (M x rank) low-rank factor in the eigenbasis
  CVector<T> B;       ///< (M) input vector in the eigenbasis
  CMatrix<T> V;       ///< (N x M) eigenvectors kept: the basis change of the real system
};

/// The NPLR form of a HiPPO matrix: A = V diag(Lambda) V^H - P P^T with V unitary, Lambda in
/// conjugate pairs (the first N/2 with Im >= 0, then their conjugates in the same order).
template <class T>
struct Nplr {
  CVector<T> Lambda;  ///< (N)
  CMatrix<T> V;       ///< (N x N) unitary
  RMatrix<T> P;       ///< (N x rank) the real low-rank factor, original basis
  RVector<T> B;       ///< (N) original basis

  /// The kept half: Lambda[:N/2], P~ = V_h^H P, B~ = V_h^H B.
  Dplr<T> dplr() const {
    const Index M = Lambda.size() / 2;
    const CMatrix<T> Vh = V.leftCols(M);
    return {Lambda.head(M), Vh.adjoint() * P.template cast<std::complex<T>>(),
            Vh.adjoint() * B.template cast<std::complex<T>>(), Vh};
  }
};

/// Diagonalises A + P P^T of `measure` (N even). The normal part is skew-symmetric plus w I, so
/// the eigenvectors come from the Hermitian matrix -i (skew part): exact conjugate pairs, unitary
/// V.
template <class T = double>
Nplr<T> nplr(Measure measure, Index N) {
  detail::check_state_size(measure, N);
  SSMKIT_CHECK(N % 2 == 0, "N", "state size of an NPLR form (conjugate pairs)", "even", N);
  using C = std::complex<T>;
  const Transition<T> t = hippo<T>(measure, N);
  const RMatrix<T> P = rank_correction<T>(measure, N);
  const RMatrix<T> AP = t.A + P * P.transpose();
  const T w_re = AP.diagonal().mean();
  const RMatrix<T> S = AP - w_re * RMatrix<T>::Identity(N, N);
  SSMKIT_CHECK((S + S.transpose()).norm() <= T(1e-8) * (T(1) + S.norm()), "measure", "A + P P^T",
               "skew-symmetric plus a multiple of I", measure);

  const Eigen::SelfAdjointEigenSolver<CMatrix<T>> eig(C(0, -1) * S.template cast<C>());
  const RVector<T>& mu = eig.eigenvalues();  // ascending, in +-pairs
  const T tol = T(1e-8) * (T(1) + mu.cwiseAbs().maxCoeff());

  // Positive frequencies keep their eigenvector; the null space (FouT's zero frequency) is real,
  // and pairs of real basis vectors q1, q2 make the conjugate pair (q1 +- i q2) / sqrt(2).
  std::vector<Index> pos;
  for (Index k = N - 1; k >= 0; --k)
    if (mu(k) > tol)
      pos.push_back(k);
  const Index zeros = N - 2 * static_cast<Index>(pos.size());
  const Index M = N / 2;
  CMatrix<T> Vh(N, M);
  CVector<T> Lh(M);
  for (Index j = 0; j < static_cast<Index>(pos.size()); ++j) {
    Vh.col(j) = eig.eigenvectors().col(pos[j]);
    Lh(j) = C(w_re, mu(pos[j]));
  }
  if (zeros > 0) {
    const Eigen::SelfAdjointEigenSolver<RMatrix<T>> null(S.transpose() * S);
    for (Index j = 0; j < zeros / 2; ++j) {
      Vh.col(pos.size() + j) = (null.eigenvectors().col(2 * j).template cast<C>() +
                                C(0, 1) * null.eigenvectors().col(2 * j + 1).template cast<C>()) /
                               std::sqrt(T(2));
      Lh(pos.size() + j) = C(w_re, 0);
    }
  }
  Nplr<T> out;
  out.Lambda.resize(N);
  out.Lambda << Lh, Lh.conjugate();
  out.V.resize(N, N);
  out.V << Vh, Vh.conjugate();
  out.P = P;
  out.B = t.B;
  return out;
}

/// The DPLR parameters of `measure` with N/2 kept modes.
template <class T = double>
Dplr<T> dplr(Measure measure, Index N) {
  return nplr<T>(measure, N).dplr();
}

/// The real system of size 2M equivalent to conjugate-symmetric DPLR modes (Lambda, P, B, C), in
/// the basis x = [Re h; Im h]: x' = A x + B u, y = C x. P may have zero columns (diagonal system).
template <class T>
struct RealForm {
  RMatrix<T> A;
  RVector<T> B;
  RVector<T> C;  ///< the output row, as a column
};

template <class T>
RealForm<T> dplr_real_form(const CVector<T>& Lambda, const CMatrix<T>& P, const CVector<T>& B,
                           const CVector<T>& Cout) {
  const Index M = Lambda.size();
  SSMKIT_CHECK_EQ("P", "rows", M, P.rows());
  SSMKIT_CHECK_EQ("B", "size", M, B.size());
  SSMKIT_CHECK_EQ("C", "size", M, Cout.size());
  RealForm<T> r{RMatrix<T>::Zero(2 * M, 2 * M), RVector<T>(2 * M), RVector<T>(2 * M)};
  for (Index n = 0; n < M; ++n) {
    r.A(n, n) = Lambda(n).real();
    r.A(n, M + n) = -Lambda(n).imag();
    r.A(M + n, n) = Lambda(n).imag();
    r.A(M + n, M + n) = Lambda(n).real();
  }
  // h' -= P * 2 Re(P^H h): with h = a + ib, Re(P^H h) = Pr^T a + Pi^T b.
  RMatrix<T> Pri(2 * M, P.cols());
  Pri << P.real(), P.imag();
  r.A.noalias() -= T(2) * Pri * Pri.transpose();
  r.B << B.real(), B.imag();
  r.C << T(2) * Cout.real(), T(-2) * Cout.imag();
  return r;
}

}  // namespace ssmkit::math
