// SSM convolution kernels against the impulse response of the dense recurrence: Vandermonde vs
// the diagonal system in real form, DPLR (Cauchy + Woodbury + iFFT) vs the dense bilinear
// recurrence of the original HiPPO matrix; the diagonal recurrence vs the dense one.
#include "golden.hpp"

#include <ssmkit/kernels/cpu/fft_conv.hpp>
#include <ssmkit/kernels/cpu/ssm_kernel_dplr.hpp>
#include <ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp>
#include <ssmkit/kernels/cpu/ssm_recurrence.hpp>
#include <ssmkit/math/nplr.hpp>
#include <ssmkit/math/s4d_init.hpp>

#include "testing.hpp"

#include <limits>

namespace {

using namespace ssmkit;
using math::Discretization;
using cd = std::complex<double>;

/// K[l] = c^T A_bar^l B_bar by repeated multiplication, in double.
std::vector<double> impulse_response(const math::Transition<double>& d,
                                     const math::RVector<double>& c, Index L) {
  std::vector<double> K(L);
  math::RVector<double> x = d.B;
  for (Index l = 0; l < L; ++l) {
    K[l] = c.dot(x);
    x = d.A * x;
  }
  return K;
}

/// Random stable modes: Re in [-1, -0.05], Im in [-20, 20].
struct RandomModes {
  HostTensor<cd, 2> Lambda, B, C;
  HostTensor<cd, 3> P;
  HostTensor<double, 1> dt;
  RandomModes(Index H, Index M, Index R, std::uint64_t seed)
      : Lambda({H, M}), B({H, M}), C({H, M}), P({H, M, R}), dt({H}) {
    const auto v = ssmkit::testing::random_vector<double>(8 * H * M * (R + 1) + H, seed);
    std::size_t k = 0;
    for (Index h = 0; h < H; ++h) {
      for (Index n = 0; n < M; ++n) {
        Lambda(h, n) = cd(-0.05 - 0.95 * std::abs(v[k]), 20 * v[k + 1]);
        B(h, n) = cd(v[k + 2], v[k + 3]);
        C(h, n) = cd(v[k + 4], v[k + 5]);
        k += 6;
        for (Index r = 0; r < R; ++r, k += 2)
          P(h, n, r) = cd(0.7 * v[k], 0.7 * v[k + 1]);
      }
      dt(h) = std::pow(10.0, -2.5 + 1.5 * std::abs(v[k++]));
    }
  }
  /// Rounds every parameter to T, so that a double reference sees what a T kernel sees.
  template <class T>
  void round_to() {
    // Through volatile T: GCC 12's SLP vectoriser at -O2 folds a double -> float -> double round
    // trip into the identity, which left the reference unrounded (and the test flaky by build).
    auto r = [](cd x) {
      volatile T re = T(x.real()), im = T(x.imag());
      return cd(double(re), double(im));
    };
    for (auto* t : {&Lambda, &B, &C})
      for (Index i = 0; i < t->numel(); ++i)
        t->data()[i] = r(t->data()[i]);
    for (Index i = 0; i < P.numel(); ++i)
      P.data()[i] = r(P.data()[i]);
    for (Index i = 0; i < dt.numel(); ++i) {
      volatile T d = T(dt.data()[i]);
      dt.data()[i] = double(d);
    }
  }
};

math::CVector<double> row(const HostTensor<cd, 2>& t, Index h) {
  math::CVector<double> r(t.size(1));
  for (Index n = 0; n < t.size(1); ++n)
    r(n) = t(h, n);
  return r;
}
math::CMatrix<double> rows(const HostTensor<cd, 3>& t, Index h) {
  math::CMatrix<double> r(t.size(1), t.size(2));
  for (Index n = 0; n < t.size(1); ++n)
    for (Index j = 0; j < t.size(2); ++j)
      r(n, j) = t(h, n, j);
  return r;
}

/// The dense real form of channel h discretised with `method`, and its impulse response.
std::vector<double> reference_kernel(const RandomModes& s, Index h, Discretization method,
                                     Index L) {
  const auto f =
      math::dplr_real_form<double>(row(s.Lambda, h), rows(s.P, h), row(s.B, h), row(s.C, h));
  return impulse_response(math::discretize(math::Transition<double>{f.A, f.B}, s.dt(h), method),
                          f.C, L);
}

template <class T>
HostTensor<std::complex<T>, 2> cast(const HostTensor<cd, 2>& t) {
  HostTensor<std::complex<T>, 2> out(t.shape());
  for (Index i = 0; i < t.numel(); ++i)
    out.data()[i] = std::complex<T>(t.data()[i]);
  return out;
}
template <class T>
HostTensor<std::complex<T>, 3> cast(const HostTensor<cd, 3>& t) {
  HostTensor<std::complex<T>, 3> out(t.shape());
  for (Index i = 0; i < t.numel(); ++i)
    out.data()[i] = std::complex<T>(t.data()[i]);
  return out;
}
template <class T>
HostTensor<T, 1> cast(const HostTensor<double, 1>& t) {
  HostTensor<T, 1> out(t.shape());
  for (Index i = 0; i < t.numel(); ++i)
    out.data()[i] = T(t.data()[i]);
  return out;
}

template <class T>
void poison(HostTensor<T, 2>& t) {
  t.fill(std::numeric_limits<T>::quiet_NaN());
}

template <class T>
void check_vandermonde(double tol) {
  const Index H = 3, M = 8, L = 4096;
  RandomModes s(H, M, 0, 11);
  s.round_to<T>();
  const auto Lambda = cast<T>(s.Lambda), B = cast<T>(s.B), C = cast<T>(s.C);
  const auto dt = cast<T>(s.dt);
  for (auto method : {Discretization::ZOH, Discretization::Bilinear}) {
    HostTensor<T, 2> K({H, L});
    poison(K);
    cpu::ssm_kernel_vandermonde(cpu::DiagonalSsm<T>{Lambda.view(), B.view(), C.view(), dt.view()},
                                method, K.view());
    for (Index h = 0; h < H; ++h) {
      const auto ref = reference_kernel(s, h, method, L);
      EXPECT_LE(ssmkit::testing::rel_error(&K(h, 0), ref.data(), L), tol)
          << "channel " << h << " " << method;
    }
  }
}

TEST(SsmKernel, VandermondeEqualsDiagonalRecurrence) {
  check_vandermonde<double>(1e-11);
  check_vandermonde<float>(1e-6);
}

// Bilinear at dt·Lambda = −2 exactly gives A_bar = 0 (log A_bar = −inf): that mode contributes at
// l = 0 only, as the dense recurrence has it, and nothing turns NaN.
TEST(SsmKernel, VandermondeBilinearWithZeroTransition) {
  const Index H = 2, M = 4, L = 150;
  RandomModes s(H, M, 0, 17);
  for (Index h = 0; h < H; ++h) {
    s.dt(h) = 0.5;
    s.Lambda(h, h + 1) = cd(-4, 0);
  }
  EXPECT_EQ(math::discretize_mode(s.Lambda(0, 1), s.dt(0), Discretization::Bilinear).A_bar, cd(0));
  HostTensor<double, 2> K({H, L});
  poison(K);
  cpu::ssm_kernel_vandermonde(
      cpu::DiagonalSsm<double>{s.Lambda.view(), s.B.view(), s.C.view(), s.dt.view()},
      Discretization::Bilinear, K.view());
  for (Index h = 0; h < H; ++h) {
    const auto ref = reference_kernel(s, h, Discretization::Bilinear, L);
    EXPECT_LE(ssmkit::testing::rel_error(&K(h, 0), ref.data(), L), 1e-11) << "channel " << h;
  }
}

// The HiPPO-LegS matrix itself, discretised densely: its kernel for a random real output c must
// equal the DPLR kernel of its NPLR form with C~ = (c V_h)(I - A_bar^L).
template <class T>
void check_dplr_legs(Index L, double dt, double tol) {
  const Index N = 16, M = N / 2;
  const auto t = math::hippo<double>(math::Measure::LegS, N);
  const auto d = math::dplr<double>(math::Measure::LegS, N);
  const auto cv = ssmkit::testing::random_vector<double>(N, 5 + L);
  const math::RVector<double> c = Eigen::Map<const math::RVector<double>>(cv.data(), N);
  const math::CVector<double> Ch = (c.transpose().template cast<cd>() * d.V).transpose();
  HostTensor<std::complex<T>, 2> Lambda({1, M}), B({1, M}), C({1, M}), Ct({1, M});
  HostTensor<std::complex<T>, 3> P({1, M, 1});
  HostTensor<T, 1> dts({1});
  dts(0) = T(dt);
  for (Index n = 0; n < M; ++n) {
    Lambda(0, n) = std::complex<T>(d.Lambda(n));
    B(0, n) = std::complex<T>(d.B(n));
    C(0, n) = std::complex<T>(Ch(n));
    P(0, n, 0) = std::complex<T>(d.P(n, 0));
  }
  cpu::DplrSsm<T> sys{Lambda.view(), P.view(), B.view(), C.view(), dts.view()};
  cpu::dplr_c_tilde(sys, L, Ct.view());
  sys.C = Ct.view();
  HostTensor<T, 2> K({1, L});
  poison(K);
  cpu::ssm_kernel_dplr(sys, K.view());
  const auto ref = impulse_response(math::discretize(t, dt, Discretization::Bilinear), c, L);
  EXPECT_LE(ssmkit::testing::rel_error(K.data(), ref.data(), L), tol) << "L " << L << " dt " << dt;
}

TEST(SsmKernel, DplrEqualsDenseBilinearHippoLegS) {
  for (Index L : {4096, 1000, 999, 1})
    for (double dt : {0.01, 0.1})
      check_dplr_legs<double>(L, dt, 1e-10);
  check_dplr_legs<float>(4096, 1.0 / 128, 1e-5);  // dt exact in float
}

template <class T>
void check_dplr_random(Index R, double tol) {
  const Index H = 3, M = 6, L = 2048;
  RandomModes s(H, M, R, 21 + R);
  s.round_to<T>();
  const auto Lambda = cast<T>(s.Lambda), B = cast<T>(s.B), C = cast<T>(s.C);
  const auto P = cast<T>(s.P);
  const auto dt = cast<T>(s.dt);
  HostTensor<std::complex<T>, 2> Ct({H, M});
  cpu::DplrSsm<T> sys{Lambda.view(), P.view(), B.view(), C.view(), dt.view()};
  cpu::dplr_c_tilde(sys, L, Ct.view());
  sys.C = Ct.view();
  HostTensor<T, 2> K({H, L});
  poison(K);
  cpu::ssm_kernel_dplr(sys, K.view());
  for (Index h = 0; h < H; ++h) {
    const auto ref = reference_kernel(s, h, Discretization::Bilinear, L);
    EXPECT_LE(ssmkit::testing::rel_error(&K(h, 0), ref.data(), L), tol)
        << "rank " << R << " channel " << h;
  }
}

TEST(SsmKernel, DplrEqualsDenseRecurrenceForRandomLowRank) {
  for (Index R : {1, 2, 3})
    check_dplr_random<double>(R, 1e-10);
  check_dplr_random<float>(2, 1e-5);
}

// The diagonal recurrence equals the dense recurrence of the real form, and carrying the state
// across two calls equals one call.
TEST(SsmRecurrence, DiagonalEqualsDenseRealFormAndStateCarries) {
  const Index H = 19, M = 5, N = 2 * M, Bt = 2, L = 300;
  const RandomModes s(H, M, 0, 31);
  HostTensor<cd, 2> Ab({H, M}), Bb({H, M});
  cpu::discretize_diagonal(
      cpu::DiagonalSsm<double>{s.Lambda.view(), s.B.view(), s.C.view(), s.dt.view()},
      Discretization::ZOH, Ab.view(), Bb.view());
  HostTensor<double, 3> Ad({H, N, N});
  HostTensor<double, 2> Bd({H, N}), Cd({H, N});
  HostTensor<double, 1> D({H});
  ssmkit::testing::fill_random(D, 3);
  for (Index h = 0; h < H; ++h) {
    const auto f = math::dplr_real_form<double>(row(s.Lambda, h), math::CMatrix<double>(M, 0),
                                                row(s.B, h), row(s.C, h));
    const auto d =
        math::discretize(math::Transition<double>{f.A, f.B}, s.dt(h), Discretization::ZOH);
    for (Index i = 0; i < N; ++i) {
      for (Index j = 0; j < N; ++j)
        Ad(h, i, j) = d.A(i, j);
      Bd(h, i) = d.B(i);
      Cd(h, i) = f.C(i);
    }
  }
  HostTensor<double, 3> u({Bt, L, H}), y_diag({Bt, L, H}), y_dense({Bt, L, H}), y_split({Bt, L, H});
  ssmkit::testing::fill_random(u, 4);
  y_diag.fill(std::nan(""));
  y_dense.fill(std::nan(""));
  y_split.fill(std::nan(""));
  cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<double>{
      Ab.view(), Bb.view(), s.C.view(), D.view(), u.view(), y_diag.view(), {}});
  cpu::ssm_recurrence_dense(cpu::DenseRecurrenceParams<double>{
      Ad.view(), Bd.view(), Cd.view(), D.view(), u.view(), y_dense.view(), {}});
  EXPECT_LE(ssmkit::testing::rel_error(y_diag.data(), y_dense.data(), y_dense.numel()), 1e-12);

  HostTensor<cd, 3> state({Bt, H, M});
  const Index cut = 123;
  auto part = [&](HostTensor<double, 3>& t, Index t0, Index len) {
    return TensorView<double, 3>::unchecked(&t(0, t0, 0), {Bt, len, H}, {L * H, H, 1}, Device::CPU);
  };
  for (auto [t0, len] : {std::pair<Index, Index>{0, cut}, {cut, L - cut}})
    cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<double>{
        Ab.view(), Bb.view(), s.C.view(), D.view(), part(u, t0, len), part(y_split, t0, len),
        state.view()});
  EXPECT_LE(ssmkit::testing::rel_error(y_split.data(), y_diag.data(), y_diag.numel()), 1e-14);
}

}  // namespace

namespace {

using namespace ssmkit;

// A slow mode (|dt·lambda·L| << 1): C~ = C (1 - A_bar^L) is small, and forming A_bar^L before
// subtracting it from 1 cancels about L·eps / |1 - A_bar^L| of it. The DPLR kernel (P = 0 here,
// so the system is one bilinear mode) must still match the closed form, computed in long double.
TEST(SsmKernel, DplrIsAccurateForSlowModes) {
  using cd = std::complex<double>;
  using cl = std::complex<long double>;
  const Index L = 8192;
  const cd lambda(-1e-8, 2e-6), Bv(1, 0), Cv(0.3, -0.7);
  const double dt = 0.01;
  HostTensor<cd, 2> Lm({1, 1}), B({1, 1}), C({1, 1}), Ct({1, 1});
  HostTensor<cd, 3> P({1, 1, 1});
  HostTensor<double, 1> dts({1});
  Lm(0, 0) = lambda;
  B(0, 0) = Bv;
  C(0, 0) = Cv;
  dts(0) = dt;
  cpu::DplrSsm<double> sys{Lm.view(), P.view(), B.view(), C.view(), dts.view()};
  cpu::dplr_c_tilde(sys, L, Ct.view());
  sys.C = Ct.view();
  HostTensor<double, 2> K({1, L});
  cpu::ssm_kernel_dplr(sys, K.view());
  const cl z = (long double)dt * cl(lambda.real(), lambda.imag());
  const cl a = (1.0L + z / 2.0L) / (1.0L - z / 2.0L);
  cl q = 2.0L * cl(Cv.real(), Cv.imag()) * ((long double)dt / (1.0L - z / 2.0L)) *
         cl(Bv.real(), Bv.imag());
  std::vector<double> ref(L);
  for (Index l = 0; l < L; ++l, q *= a)
    ref[l] = double(q.real());
  EXPECT_LE(ssmkit::testing::rel_error(K.data(), ref.data(), L), 1e-11);
}

// The FFTs behind the DPLR kernel and fft_conv take int lengths: longer requests are refused
// before anything is read or allocated (the views below cover one element).
TEST(SsmKernel, LengthsPastTheFftsIntAreRefused) {
  using cd = std::complex<double>;
  HostTensor<cd, 2> Lm({1, 1}), B({1, 1}), C({1, 1});
  HostTensor<cd, 3> P({1, 1, 1});
  HostTensor<double, 1> dts({1});
  Lm(0, 0) = cd(-0.5, 1);
  dts(0) = 0.01;
  const cpu::DplrSsm<double> sys{Lm.view(), P.view(), B.view(), C.view(), dts.view()};
  double one = 0;
  const Index too_long = Index{1} << 31;
  SSMKIT_EXPECT_ERROR(cpu::ssm_kernel_dplr(sys, TensorView<double, 2>::unchecked(
                                                    &one, {1, too_long}, {0, 0}, Device::CPU)),
                      "K", "[1, 2^31 - 1]");
  const Index L = (Index{1} << 29) + 1;
  const auto seq = TensorView<double, 3>::unchecked(&one, {1, L, 1}, {0, 0, 0}, Device::CPU);
  SSMKIT_EXPECT_ERROR(
      cpu::fft_conv(cpu::FftConvParams<double>{
          seq, TensorView<const double, 2>::unchecked(&one, {1, L}, {0, 0}, Device::CPU), {}, seq}),
      "u", "[1, 2^29]");
}

}  // namespace
