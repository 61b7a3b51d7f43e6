// Convolution kernel of a DPLR SSM with the bilinear discretisation (S4, arXiv 2111.00396,
// Algorithm 1): truncated generating function at the roots of unity by Cauchy sums and the
// Woodbury identity, then an inverse FFT. Conjugate modes are implied (y = 2 Re C h).
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp"
#include "ssmkit/math/discretize.hpp"
#include "ssmkit/math/nplr.hpp"

#include <unsupported/Eigen/FFT>

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <utility>
#include <vector>

namespace ssmkit::cpu {

/// H channels of DPLR systems with M kept modes: A = diag(Lambda) - P P^H on the full
/// conjugate-symmetric state (see math::Dplr).
template <class T>
struct DplrSsm {
  TensorView<const std::complex<T>, 2> Lambda;  ///< (H, M) Re < 0
  TensorView<const std::complex<T>, 3> P;       ///< (H, M, R) low-rank factor
  TensorView<const std::complex<T>, 2> B;       ///< (H, M)
  TensorView<const std::complex<T>, 2> C;       ///< (H, M) output; C~ for ssm_kernel_dplr
  TensorView<const T, 1> dt;                    ///< (H) > 0

  Index channels() const { return Lambda.size(0); }
  Index modes() const { return Lambda.size(1); }
  Index rank() const { return P.size(2); }
};

template <class T>
void validate(const DplrSsm<T>& s) {
  validate(DiagonalSsm<T>{s.Lambda, s.B, s.C, s.dt});
  const Index H = s.channels(), M = s.modes();
  SSMKIT_CHECK(s.P.size(2) >= 1, "P", "rank (dim 2)", ">= 1", s.P.size(2));
  check_shape(s.P, "P", {H, M, s.P.size(2)});
  check_device(s.P, "P", Device::CPU);
  for (Index h = 0; h < H; ++h)
    detail::check_finite_modes(TensorView<const std::complex<T>, 2>(s.P[h]), "P");
}

namespace detail {

/// The continuous real form of channel h (math::dplr_real_form) in double.
template <class T>
math::RealForm<double> dplr_real_form_of(const DplrSsm<T>& s, Index h,
                                         const math::CVector<double>& Cout) {
  const Index M = s.modes(), R = s.rank();
  math::CVector<double> L(M), B(M);
  math::CMatrix<double> P(M, R);
  for (Index n = 0; n < M; ++n) {
    L(n) = std::complex<double>(s.Lambda(h, n));
    B(n) = std::complex<double>(s.B(h, n));
    for (Index r = 0; r < R; ++r)
      P(n, r) = std::complex<double>(s.P(h, n, r));
  }
  return math::dplr_real_form<double>(L, P, B, Cout);
}

/// The real form of channel h (math::dplr_real_form), discretised with the bilinear rule.
template <class T>
math::Transition<double> dplr_bilinear_real(const DplrSsm<T>& s, Index h,
                                            const math::CVector<double>& Cout,
                                            math::RVector<double>* C_real) {
  const math::RealForm<double> f = dplr_real_form_of(s, h, Cout);
  if (C_real != nullptr)
    *C_real = f.C;
  return math::discretize(math::Transition<double>{f.A, f.B}, double(s.dt(h)),
                          math::Discretization::Bilinear);
}

/// Solves the small complex system M x = b in place (partial pivoting; M is R x R row-major).
inline void solve_small(std::complex<double>* Mx, std::complex<double>* b, Index R) {
  for (Index c = 0; c < R; ++c) {
    Index piv = c;
    for (Index r = c + 1; r < R; ++r)
      if (std::abs(Mx[r * R + c]) > std::abs(Mx[piv * R + c]))
        piv = r;
    if (piv != c) {
      for (Index k = 0; k < R; ++k)
        std::swap(Mx[c * R + k], Mx[piv * R + k]);
      std::swap(b[c], b[piv]);
    }
    for (Index r = c + 1; r < R; ++r) {
      const std::complex<double> f = Mx[r * R + c] / Mx[c * R + c];
      for (Index k = c; k < R; ++k)
        Mx[r * R + k] -= f * Mx[c * R + k];
      b[r] -= f * b[c];
    }
  }
  for (Index c = R - 1; c >= 0; --c) {
    for (Index k = c + 1; k < R; ++k)
      b[c] -= Mx[c * R + k] * b[k];
    b[c] /= Mx[c * R + c];
  }
}

}  // namespace detail

/// C~ = C (I - A_bar^L) (H, M): the output vector whose truncated generating function gives
/// exactly the first L taps (S4, Sec. 3.3). A_bar^L by repeated squaring of the real form.
template <class T>
void dplr_c_tilde(const DplrSsm<T>& s, Index L, const TensorView<std::complex<T>, 2>& C_tilde) {
  validate(s);
  SSMKIT_CHECK(L >= 1, "L", "kernel length", ">= 1", L);
  const Index H = s.channels(), M = s.modes();
  check_shape(C_tilde, "C_tilde", {H, M});
  check_device(C_tilde, "C_tilde", Device::CPU);
  parallel_for(0, H, [&](Index h) {
    math::CVector<double> Cout(M);
    for (Index n = 0; n < M; ++n)
      Cout(n) = std::complex<double>(s.C(h, n));
    math::RVector<double> c;
    const math::RealForm<double> f = detail::dplr_real_form_of(s, h, Cout);
    c = f.C;
    // A_bar = I + F with F = (I - dt/2 A)^-1 dt A formed directly: for slow modes A_bar is within
    // rounding of I, and 1 - A_bar^L computed as the difference of two near-1 numbers would lose
    // about L·eps / |1 - A_bar^L| of it. Binary powering keeps everything as "minus I":
    // (I + F)^2 - I = 2F + F^2, and w = c^T ((I + G)(I + F) - I) = w + (c^T + w) F.
    const double dt = double(s.dt(h));
    const Index N = f.A.rows();
    const auto lhs = (math::RMatrix<double>::Identity(N, N) - (dt / 2) * f.A).partialPivLu();
    math::RMatrix<double> pw = lhs.solve(dt * f.A);
    Eigen::RowVectorXd w = Eigen::RowVectorXd::Zero(N);  // c^T (A_bar^e - I) so far
    for (Index e = L; e > 0; e >>= 1) {
      if (e & 1)
        w += (c.transpose() + w) * pw;
      if (e > 1)
        pw = (2.0 * pw + pw * pw).eval();
    }
    const Eigen::RowVectorXd ct = -w;  // c^T (I - A_bar^L)
    // Back from the real output row [2 Re C~, -2 Im C~].
    for (Index n = 0; n < M; ++n)
      C_tilde(h, n) = std::complex<T>(T(ct(n) / 2), T(-ct(M + n) / 2));
  });
}

/// K (H, L) = the first L taps C A_bar^l B_bar of each channel, with `s.C` holding C~ for this L
/// (dplr_c_tilde). At z = exp(-2 pi i k / L), with A = Lambda - P P^H and bilinear A_bar:
///   K^(z) = 2 C~ M(z)^-1 B,  M(z) = (2/dt)(1 - z) - (1 + z) A  (no division by 1 + z),
/// and Woodbury on D(z) = diag((2/dt)(1 - z) - (1 + z) Lambda) plus the rank-R term gives
///   K^ = 2 [k_CB - (1+z) k_CP (I + (1+z) k_PP)^-1 k_PB],  k_XY = sum_n X_n Y_n / D_n(z)
/// summed over the modes and their conjugates. Computed in double.
template <class T>
void ssm_kernel_dplr(const DplrSsm<T>& s, const TensorView<T, 2>& K) {
  validate(s);
  const Index H = s.channels(), M = s.modes(), R = s.rank();
  // Eigen's kissfft sizes the inverse transform, of length L, as int.
  SSMKIT_CHECK(K.size(1) >= 1 && K.size(1) <= Index{std::numeric_limits<int>::max()}, "K",
               "length (dim 1)", "in [1, 2^31 - 1]", K.size(1));
  check_shape(K, "K", {H, K.size(1)});
  check_device(K, "K", Device::CPU);
  const Index L = K.size(1);
  const Index F = L / 2 + 1;  // frequencies of the real kernel's half spectrum
  const Index S = (1 + R) * (1 + R);
  constexpr Index kBlock = 64;
  using cd = std::complex<double>;

  parallel_for(0, H, [&](Index h) {
    // v[s][n] = x_i[n] y_j[n] for x in {C~, conj P_r}, y in {B, P_r}, s = i (1+R) + j.
    std::vector<double> v_re(S * M), v_im(S * M), lr(M), li(M);
    for (Index n = 0; n < M; ++n) {
      lr[n] = double(s.Lambda(h, n).real());
      li[n] = double(s.Lambda(h, n).imag());
      for (Index i = 0; i <= R; ++i)
        for (Index j = 0; j <= R; ++j) {
          const cd x = i == 0 ? cd(s.C(h, n)) : std::conj(cd(s.P(h, n, i - 1)));
          const cd y = j == 0 ? cd(s.B(h, n)) : cd(s.P(h, n, j - 1));
          v_re[(i * (1 + R) + j) * M + n] = (x * y).real();
          v_im[(i * (1 + R) + j) * M + n] = (x * y).imag();
        }
    }
    const double two_dt = 2.0 / double(s.dt(h));
    std::vector<cd> Khat(F);
    std::vector<double> acc_re(S * kBlock), acc_im(S * kBlock), zr(kBlock), zi(kBlock);
    std::vector<cd> Mx(R * R), rhs(R);
    for (Index k0 = 0; k0 < F; k0 += kBlock) {
      const Index nk = std::min(kBlock, F - k0);
      for (Index k = 0; k < kBlock; ++k) {
        const double theta = -2.0 * M_PI * double(std::min(k0 + k, F - 1)) / double(L);
        zr[k] = std::cos(theta);
        zi[k] = std::sin(theta);
      }
      std::fill(acc_re.begin(), acc_re.end(), 0.0);
      std::fill(acc_im.begin(), acc_im.end(), 0.0);
      for (Index n = 0; n < M; ++n) {
        double sr[kBlock], dr[kBlock], si[kBlock], di[kBlock];
        for (Index k = 0; k < kBlock; ++k) {
          // D = (2/dt)(1 - z) - (1 + z) lambda, and Dc the same with conj(lambda).
          const double d0r = two_dt * (1.0 - zr[k]), d0i = -two_dt * zi[k];
          const double er = 1.0 + zr[k], ei = zi[k];
          const double Dr = d0r - (er * lr[n] - ei * li[n]), Di = d0i - (er * li[n] + ei * lr[n]);
          const double Cr = d0r - (er * lr[n] + ei * li[n]), Ci = d0i - (ei * lr[n] - er * li[n]);
          const double inv = 1.0 / (Dr * Dr + Di * Di), invc = 1.0 / (Cr * Cr + Ci * Ci);
          const double rnr = Dr * inv, rni = -Di * inv, rcr = Cr * invc, rci = -Ci * invc;
          // v/D + conj(v)/Dc = v_re (rn + rc) + i v_im (rn - rc) written out in real parts.
          sr[k] = rnr + rcr;
          dr[k] = rci - rni;
          si[k] = rni + rci;
          di[k] = rnr - rcr;
        }
        for (Index t = 0; t < S; ++t) {
          const double vr = v_re[t * M + n], vi = v_im[t * M + n];
          double* ar = &acc_re[t * kBlock];
          double* ai = &acc_im[t * kBlock];
          for (Index k = 0; k < kBlock; ++k) {
            ar[k] += vr * sr[k] + vi * dr[k];
            ai[k] += vr * si[k] + vi * di[k];
          }
        }
      }
      for (Index k = 0; k < nk; ++k) {
        auto sum = [&](Index i, Index j) {
          const Index t = i * (1 + R) + j;
          return cd(acc_re[t * kBlock + k], acc_im[t * kBlock + k]);
        };
        const cd e(1.0 + zr[k], zi[k]);
        for (Index i = 0; i < R; ++i) {
          rhs[i] = sum(1 + i, 0);
          for (Index j = 0; j < R; ++j)
            Mx[i * R + j] = (i == j ? cd(1.0) : cd(0.0)) + e * sum(1 + i, 1 + j);
        }
        detail::solve_small(Mx.data(), rhs.data(), R);
        cd corr = 0;
        for (Index j = 0; j < R; ++j)
          corr += sum(0, 1 + j) * rhs[j];
        Khat[k0 + k] = 2.0 * (sum(0, 0) - e * corr);
      }
    }
    std::vector<double> k_time(L, 0.0);
    if (L >= 4) {
      Eigen::FFT<double> fft;
      fft.SetFlag(Eigen::FFT<double>::HalfSpectrum);
      fft.inv(k_time.data(), Khat.data(), L);
    } else {
      // kissfft has no plan for lengths 1 and 2 and 3: the inverse DFT directly.
      for (Index l = 0; l < L; ++l)
        for (Index k = 0; k < L; ++k) {
          const cd X = k < F ? Khat[k] : std::conj(Khat[L - k]);
          k_time[l] += (X * std::polar(1.0, 2.0 * M_PI * double(k * l) / double(L))).real() / L;
        }
    }
    for (Index l = 0; l < L; ++l)
      K(h, l) = static_cast<T>(k_time[l]);
  });
}

}  // namespace ssmkit::cpu
