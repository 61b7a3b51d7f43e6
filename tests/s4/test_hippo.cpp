// HiPPO pairs against the S4 repository's transition() (golden), the papers' closed forms, the
// NPLR identities, and what HiPPO is for: reconstructing a signal's history from the state.
#include "golden.hpp"

#include <ssmkit/kernels/cpu/ssm_recurrence.hpp>
#include <ssmkit/math/discretize.hpp>
#include <ssmkit/math/hippo.hpp>
#include <ssmkit/math/nplr.hpp>

#include "testing.hpp"

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

using namespace ssmkit;
using math::Measure;
using ssmkit::testing::rel_err;

const std::pair<Measure, const char*> kMeasures[] = {{Measure::LegS, "legs"},
                                                     {Measure::LegT, "legt"},
                                                     {Measure::LagT, "lagt"},
                                                     {Measure::FouT, "fout"}};

TEST(Hippo, MatchesS4RepositoryTransition) {
  const ssmkit::testing::Golden g("hippo.txt");
  for (const auto& [m, name] : kMeasures)
    for (Index N : {4, 6}) {
      const std::string key = name + std::to_string(N);
      const auto t = math::hippo<double>(m, N);
      EXPECT_LE(rel_err(t.A, g.matrix(key + ".A", N, N)), 1e-15) << key;
      EXPECT_LE(rel_err(t.B, g.matrix(key + ".B", N, 1)), 1e-15) << key;
      const auto P = math::rank_correction<double>(m, N);
      EXPECT_LE(rel_err(P, g.matrix(key + ".P", N, P.cols())), 1e-15) << key;
    }
}

// Hand-evaluated from the papers: LegS (HiPPO eq. (2) / S4 eq. (2)) and LegT (HiPPO App. D.1,
// window theta = 2: A = -(1/theta) A~, B = (1/theta) B~), for N = 3.
TEST(Hippo, ClosedFormsSmallN) {
  const double s3 = std::sqrt(3.0), s5 = std::sqrt(5.0), s15 = std::sqrt(15.0);
  math::RMatrix<double> legs(3, 3), legt(3, 3);
  legs << -1, 0, 0, -s3, -2, 0, -s5, -s15, -3;
  legt << 1, -s3, s5, s3, 3, -s15, s5, s15, 5;
  legt *= -0.5;
  const auto a = math::hippo<double>(Measure::LegS, 3);
  const auto b = math::hippo<double>(Measure::LegT, 3);
  EXPECT_LE(rel_err(a.A, legs), 1e-15);
  EXPECT_LE(rel_err(a.B, Eigen::Vector3d(1, s3, s5)), 1e-15);
  EXPECT_LE(rel_err(b.A, legt), 1e-15);
  EXPECT_LE(rel_err(b.B, Eigen::Vector3d(0.5, 0.5 * s3, 0.5 * s5)), 1e-15);
  // LagT (HiPPO App. D.3, tilted by exp(t/2)): A = I/2 - tril(1); FouT's rotation at pi j.
  const auto c = math::hippo<double>(Measure::LagT, 3);
  math::RMatrix<double> lagt(3, 3);
  lagt << -0.5, 0, 0, -1, -0.5, 0, -1, -1, -0.5;
  EXPECT_LE(rel_err(c.A, lagt), 1e-15);
  const auto f = math::hippo<double>(Measure::FouT, 4);
  math::RMatrix<double> fout(4, 4);
  const double r2 = std::sqrt(2.0);
  fout << -1, 0, -r2, 0, 0, 0, 0, 0, -r2, 0, -2, -M_PI, 0, 0, M_PI, 0;
  EXPECT_LE(rel_err(f.A, fout), 1e-15);
}

// A = V diag(Lambda) V^H - P P^T with V unitary and Lambda in conjugate pairs; the DPLR half
// in real form is similar to A through x_real = [Re V_h^H; Im V_h^H] x.
TEST(Nplr, ReconstructsHippoAndRealFormIsSimilar) {
  for (const auto& [m, name] : kMeasures) {
    const Index N = 16, M = N / 2;
    const auto t = math::hippo<double>(m, N);
    const auto f = math::nplr<double>(m, N);
    const math::CMatrix<double> I = math::CMatrix<double>::Identity(N, N);
    EXPECT_LE((f.V.adjoint() * f.V - I).norm(), 1e-12) << name;
    const math::CMatrix<double> normal = f.V * f.Lambda.asDiagonal() * f.V.adjoint();
    EXPECT_LE(normal.imag().norm(), 1e-12 * normal.norm()) << name;
    EXPECT_LE(rel_err(math::RMatrix<double>(normal.real() - f.P * f.P.transpose()), t.A), 1e-13)
        << name;
    EXPECT_LE((f.Lambda.tail(M) - f.Lambda.head(M).conjugate()).norm(), 0.0) << name;
    const double re = m == Measure::LegS ? -0.5 : 0.0;
    for (Index n = 0; n < N; ++n)
      EXPECT_NEAR(f.Lambda(n).real(), re, 1e-12) << name;

    const auto d = f.dplr();
    const math::CVector<double> C = math::CVector<double>::Random(M);
    const auto r = math::dplr_real_form<double>(d.Lambda, d.P, d.B, C);
    math::RMatrix<double> T(N, N);
    T << d.V.adjoint().real(), d.V.adjoint().imag();
    EXPECT_LE(rel_err(math::RMatrix<double>(r.A * T), math::RMatrix<double>(T * t.A)), 1e-12)
        << name;
    EXPECT_LE(rel_err(r.B, math::RVector<double>(T * t.B)), 1e-12) << name;
  }
}

/// Legendre polynomials P_0..P_{N-1} at x.
std::vector<double> legendre(Index N, double x) {
  std::vector<double> p(N);
  p[0] = 1;
  if (N > 1)
    p[1] = x;
  for (Index n = 2; n < N; ++n)
    p[n] = ((2 * n - 1) * x * p[n - 1] - (n - 1) * p[n - 2]) / n;
  return p;
}

double signal(double t) {
  return std::sin(3 * t) + 0.5 * std::cos(7 * t + 1) + 0.3 * t * t;
}

/// LegS: c' = (A c + B f) / t. From t0 = h (c = f(0) e_0) to t = 1 by the trapezoidal rule, then
/// f(x) ~ sum_n c_n sqrt(2n+1) P_n(2x - 1) on [0, 1].
double legs_reconstruction_error(Index N) {
  const auto t = math::hippo<double>(Measure::LegS, N);
  const Index steps = 4000;
  const double h = 1.0 / steps;
  Eigen::VectorXd c = Eigen::VectorXd::Zero(N);
  c(0) = signal(0);
  const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(N, N);
  for (Index k = 1; k < steps; ++k) {
    const double t0 = k * h, t1 = t0 + h, tm = t0 + h / 2;
    const Eigen::VectorXd rhs =
        (I + h / (2 * tm) * t.A) * c + h / (2 * tm) * t.B * (signal(t0) + signal(t1));
    c = (I - h / (2 * tm) * t.A).partialPivLu().solve(rhs);
  }
  double num = 0, den = 0;
  for (int i = 0; i <= 200; ++i) {
    const double x = i / 200.0;
    const auto p = legendre(N, 2 * x - 1);
    double rec = 0;
    for (Index n = 0; n < N; ++n)
      rec += c(n) * std::sqrt(2.0 * n + 1) * p[n];
    num += (rec - signal(x)) * (rec - signal(x));
    den += signal(x) * signal(x);
  }
  return std::sqrt(num / den);
}

TEST(Hippo, LegSReconstructsTheHistory) {
  const double e4 = legs_reconstruction_error(4), e8 = legs_reconstruction_error(8),
               e16 = legs_reconstruction_error(16);
  RecordProperty("errors",
                 std::to_string(e4) + " " + std::to_string(e8) + " " + std::to_string(e16));
  std::printf("LegS reconstruction errors N=4,8,16: %.3g %.3g %.3g\n", e4, e8, e16);
  EXPECT_LT(e8, e4 / 10);
  EXPECT_LT(e16, e8 / 10);
  EXPECT_LT(e16, 1e-5);
}

/// LegT over a window theta = 1: the S4 pair is the window-2 operator, so c' = 2 (A c + B f).
/// The state at t = 0 is the exact projection of f on [-1, 0]; the library's bilinear
/// discretisation and dense recurrence advance it to t = 2, and the Legendre basis on [1, 2]
/// reconstructs f there.
double legt_reconstruction_error(Index N) {
  auto t = math::hippo<double>(Measure::LegT, N);
  t.A *= 2;
  t.B *= 2;
  const Index steps = 4000;
  const double h = 2.0 / steps;
  const auto d = math::discretize(t, h, math::Discretization::Bilinear);
  HostTensor<double, 3> A({1, N, N});
  HostTensor<double, 2> B({1, N}), C({1, N});
  HostTensor<double, 3> u({1, steps, 1}), y({1, steps, 1}), state({1, 1, N});
  for (Index i = 0; i < N; ++i) {
    for (Index j = 0; j < N; ++j)
      A(0, i, j) = d.A(i, j);
    B(0, i) = d.B(i);
    C(0, i) = 1;
  }
  // The bilinear rule samples the input at the midpoint of each step.
  for (Index k = 0; k < steps; ++k)
    u(0, k, 0) = signal((k + 0.5) * h);
  // c_n(0) = int_{-1}^{0} f(x) sqrt(2n+1) P_n(2x + 1) dx, Gauss-Legendre-free: fine trapezoid.
  const int Q = 20000;
  for (int q = 0; q <= Q; ++q) {
    const double x = -1.0 + double(q) / Q, w = (q == 0 || q == Q) ? 0.5 / Q : 1.0 / Q;
    const auto p = legendre(N, 2 * x + 1);
    for (Index n = 0; n < N; ++n)
      state(0, 0, n) += w * signal(x) * std::sqrt(2.0 * n + 1) * p[n];
  }
  cpu::ssm_recurrence_dense(cpu::DenseRecurrenceParams<double>{
      A.view(), B.view(), C.view(), {}, u.view(), y.view(), state.view()});
  double num = 0, den = 0;
  for (int i = 0; i <= 200; ++i) {
    const double x = 1.0 + i / 200.0;
    const auto p = legendre(N, 2 * (x - 2) + 1);
    double rec = 0;
    for (Index n = 0; n < N; ++n)
      rec += state(0, 0, n) * std::sqrt(2.0 * n + 1) * p[n];
    num += (rec - signal(x)) * (rec - signal(x));
    den += signal(x) * signal(x);
  }
  return std::sqrt(num / den);
}

TEST(Hippo, LegTReconstructsTheWindow) {
  const double e4 = legt_reconstruction_error(4), e8 = legt_reconstruction_error(8),
               e16 = legt_reconstruction_error(16);
  RecordProperty("errors",
                 std::to_string(e4) + " " + std::to_string(e8) + " " + std::to_string(e16));
  std::printf("LegT reconstruction errors N=4,8,16: %.3g %.3g %.3g\n", e4, e8, e16);
  EXPECT_LT(e8, e4 / 4);
  EXPECT_LT(e16, e8 / 4);
  EXPECT_LT(e16, 1e-4);
}

}  // namespace
