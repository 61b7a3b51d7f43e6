// Discretisation of h' = A h + B u with step dt: zero-order hold (A_bar = exp(dt A),
// B_bar = A^-1 (exp(dt A) - I) B) and bilinear (A_bar = (I - dt/2 A)^-1 (I + dt/2 A),
// B_bar = (I - dt/2 A)^-1 dt B), dense and diagonal (S4, arXiv 2111.00396, Sec. 2.3; S4D Sec. 3).
#pragma once

#include "ssmkit/math/hippo.hpp"

#include <Eigen/Dense>
#include <unsupported/Eigen/MatrixFunctions>

#include <algorithm>
#include <cmath>
#include <complex>
#include <ostream>
#include <string>

namespace ssmkit::math {

enum class Discretization { ZOH, Bilinear };

inline std::ostream& operator<<(std::ostream& os, Discretization d) {
  return os << (d == Discretization::ZOH ? "ZOH" : "bilinear");
}

/// Checks a step size: finite and > 0.
template <class T>
void check_step(T dt, const char* arg = "dt") {
  SSMKIT_CHECK(std::isfinite(dt) && dt > T(0), arg, "step size", "finite and > 0", dt);
}

/// Dense discretisation of a real or complex pair (A, B). ZOH exponentiates the block matrix
/// dt [[A, B], [0, 0]], whose top-right block is B_bar, so no inverse of A is needed.
///
/// The scaling and squaring is done here rather than by exp() of the whole block: Eigen's Padé
/// approximant returns the corner exp(0) = 1 as 1 - u, and its s squarings carried that into B_bar
/// as a relative error 2^s u (9.3e-10 at dt = 1e6 for a mode -0.05 + 30i, whose B_bar is
/// conditioned to u). [[E, F], [0, 1]]^2 = [[E^2, E F + F], [0, 1]] keeps the corner exact. The
/// squarings come from dt A alone: B_bar is linear in B, so dt B gets a power of two of its own and
/// a large B costs A_bar no squarings (each multiplies the relative error of a slow mode's
/// exp(dt lambda) by 2).
template <class Scalar, class T>
Transition<Scalar> discretize(const Transition<Scalar>& c, T dt, Discretization method) {
  check_step(dt);
  const Index N = c.A.rows();
  SSMKIT_CHECK(N >= 1 && c.A.cols() == N, "A", "shape", "square N x N with N >= 1",
               std::to_string(c.A.rows()) + " x " + std::to_string(c.A.cols()));
  SSMKIT_CHECK_EQ("B", "size", N, c.B.size());
  SSMKIT_CHECK(c.A.allFinite(), "A", "entries", "finite", "NaN or Inf");
  SSMKIT_CHECK(c.B.allFinite(), "B", "entries", "finite", "NaN or Inf");
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Real = typename Eigen::NumTraits<Scalar>::Real;
  Transition<Scalar> d;
  if (method == Discretization::ZOH) {
    // Squarings to bring a 1-norm under theta_13 = 5.37 (Higham 2005), where Eigen's double exp()
    // takes its degree-13 Padé approximant unsquared (other precisions square at most once more).
    const auto squarings = [](Real norm) {
      int e = 0;
      std::frexp(norm / Real(5.371920351148152), &e);
      return std::max(e, 0);
    };
    const Mat X = Scalar(dt) * c.A;
    const int s = squarings(X.cwiseAbs().colwise().sum().maxCoeff());
    const int t = squarings(std::ldexp((Scalar(dt) * c.B).cwiseAbs().sum(), -s));
    Mat M = Mat::Zero(N + 1, N + 1);
    M.topLeftCorner(N, N) = X * std::ldexp(Real(1), -s);
    M.topRightCorner(N, 1) = (Scalar(dt) * c.B) * std::ldexp(Real(1), -s - t);
    const Mat E = M.exp();
    d.A = E.topLeftCorner(N, N);
    d.B = E.topRightCorner(N, 1) * std::ldexp(Real(1), t);
    for (int k = 0; k < s; ++k) {
      d.B += d.A * d.B;  // the product goes to a temporary first (Eigen assumes it aliases)
      d.A = d.A * d.A;
    }
  } else {
    const Mat I = Mat::Identity(N, N);
    const auto lhs = (I - Scalar(dt / 2) * c.A).partialPivLu();
    // A pivot lost to rounding means I - dt/2 A is singular (an eigenvalue of A at 2/dt): the
    // bilinear rule has no value there, where the solve would return inf/NaN.
    const auto pivots = lhs.matrixLU().diagonal().cwiseAbs();
    SSMKIT_CHECK(
        pivots.minCoeff() > Real(N) * Eigen::NumTraits<Real>::epsilon() * pivots.maxCoeff(), "dt",
        "step of the bilinear rule", "I - dt/2 A not singular (no eigenvalue 2/dt)", dt);
    d.A = lhs.solve(I + Scalar(dt / 2) * c.A);
    d.B = lhs.solve(Scalar(dt) * c.B);
  }
  return d;
}

/// Complex expm1, accurate for small |z| (the ZOH input factor (exp(z) - 1) / z needs it).
template <class T>
std::complex<T> expm1(std::complex<T> z) {
  const T s = std::sin(z.imag() / 2);
  return {std::expm1(z.real()) * std::cos(z.imag()) - 2 * s * s,
          std::exp(z.real()) * std::sin(z.imag())};
}

/// One diagonal mode lambda discretised with step dt: A_bar, the input factor B_bar / B, and
/// log A_bar (the exponent that powers A_bar^l = exp(l log A_bar) stably). Bilinear at
/// dt·lambda = −2 gives A_bar = 0 and log A_bar = −inf, whose power 0 the caller must take as 1.
template <class T>
struct DiagonalMode {
  std::complex<T> A_bar;
  std::complex<T> B_scale;
  std::complex<T> log_A_bar;
};

template <class T>
DiagonalMode<T> discretize_mode(std::complex<T> lambda, T dt, Discretization method) {
  check_step(dt);
  const std::complex<T> z = dt * lambda;
  if (method == Discretization::ZOH) {
    // (exp(z) - 1) / z * dt, with the limit dt at z = 0.
    const std::complex<T> scale = std::abs(z) == T(0) ? std::complex<T>(dt) : expm1(z) / lambda;
    return {std::exp(z), scale, z};
  }
  const std::complex<T> den = T(1) - z / T(2);
  SSMKIT_CHECK(den != std::complex<T>(0), "lambda", "mode of the bilinear rule",
               "dt·lambda != 2 (1 - dt·lambda/2 singular)", lambda);
  const std::complex<T> a = (T(1) + z / T(2)) / den;
  // log((1 + w) / (1 - w)) = 2 atanh(w): the log of the rounded quotient would lose all but
  // eps / |w| of it for small steps, which A_bar^l = exp(l log A_bar) multiplies by l.
  return {a, dt / den, T(2) * std::atanh(z / T(2))};
}

}  // namespace ssmkit::math
