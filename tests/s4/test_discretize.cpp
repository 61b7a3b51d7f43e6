// ZOH and bilinear discretisation against scipy.signal.cont2discrete and scipy.linalg.expm
// (tests/data/s4/discretize.txt), and the diagonal closed forms against the dense path.
#include "golden.hpp"

#include <ssmkit/math/discretize.hpp>
#include <ssmkit/math/nplr.hpp>

#include "testing.hpp"

namespace {

using namespace ssmkit;
using math::Discretization;
using ssmkit::testing::rel_err;

TEST(Discretize, MatchesScipy) {
  const ssmkit::testing::Golden g("discretize.txt");
  for (const auto& [name, N] : std::vector<std::pair<std::string, Index>>{
           {"rand4", 4}, {"rand7", 7}, {"rand12", 12}, {"legs8", 8}, {"legt6", 6}}) {
    const double dt = g[name + ".dt"].at(0);
    const math::Transition<double> c{g.matrix(name + ".A", N, N), g.matrix(name + ".B", N, 1)};
    const auto zoh = math::discretize(c, dt, Discretization::ZOH);
    const auto bil = math::discretize(c, dt, Discretization::Bilinear);
    EXPECT_LE(rel_err(zoh.A, g.matrix(name + ".expm", N, N)), 1e-10) << name;
    EXPECT_LE(rel_err(zoh.A, g.matrix(name + ".zoh.A", N, N)), 1e-10) << name;
    EXPECT_LE(rel_err(zoh.B, g.matrix(name + ".zoh.B", N, 1)), 1e-10) << name;
    EXPECT_LE(rel_err(bil.A, g.matrix(name + ".bilinear.A", N, N)), 1e-10) << name;
    EXPECT_LE(rel_err(bil.B, g.matrix(name + ".bilinear.B", N, 1)), 1e-10) << name;
  }
}

// A complex mode and its conjugate are the real 2x2 block [[a, -b], [b, a]] acting on
// [Re h; Im h]: its dense discretisation must equal the diagonal closed forms.
TEST(Discretize, DiagonalModeEqualsDenseRealBlock) {
  const auto params = ssmkit::testing::random_vector<double>(60, 7);
  for (int i = 0; i < 20; ++i) {
    const std::complex<double> lambda(-0.05 - 2.0 * std::abs(params[3 * i]),
                                      30.0 * params[3 * i + 1]);
    const double dt = std::pow(10.0, -3.0 + 2.5 * std::abs(params[3 * i + 2]));
    for (auto method : {Discretization::ZOH, Discretization::Bilinear}) {
      const auto m = math::discretize_mode(lambda, dt, method);
      math::CVector<double> L(1), B(1), C(1);
      L << lambda;
      B << std::complex<double>(1, 0);
      C << std::complex<double>(1, 0);
      const auto r = math::dplr_real_form<double>(L, math::CMatrix<double>(1, 0), B, C);
      const auto d = math::discretize(math::Transition<double>{r.A, r.B}, dt, method);
      math::RMatrix<double> A_expect(2, 2);
      A_expect << m.A_bar.real(), -m.A_bar.imag(), m.A_bar.imag(), m.A_bar.real();
      EXPECT_LE(rel_err(d.A, A_expect), 1e-13) << lambda << " " << dt << " " << method;
      EXPECT_LE(rel_err(d.B, Eigen::Vector2d(m.B_scale.real(), m.B_scale.imag())), 1e-12)
          << lambda << " " << dt << " " << method;
      EXPECT_LE(std::abs(std::exp(m.log_A_bar) - m.A_bar), 1e-15 * 4) << lambda << " " << dt;
    }
  }
}

// At large steps B_bar = A^-1 (exp(dt A) - I) B tends to -A^-1 B, conditioned by A alone: dt must
// not show in its error. It did, as 2^s u for s squarings, when exp() of the whole block let its
// corner exp(0) = 1 drift to 1 - 2^s u: for these modes (kappa(A) = 1) 5.7e-14 to 7.5e-9 from
// dt = 1e3 on (9.3e-10 at dt = 1e6 for -0.05 + 30i), and for the non-normal triangle (kappa_1(A) =
// 5.1e3, so kappa u = 5.7e-13) 3.6e-12 to 3.7e-9. Measured after the fix: at most 1.3e-15 and
// 1.0e-14.
TEST(Discretize, ZohInputMatrixIsAccurateAtLargeSteps) {
  math::CVector<double> one(1);
  one << std::complex<double>(1, 0);
  math::RMatrix<double> tri(2, 2);  // eigenvalues -1 and -2
  tri << -1, 100, 0, -2;
  const Eigen::Vector2d tri_B(1, 1), tri_expect(51, 0.5);  // -A^-1 B
  for (const double dt : {1e2, 1e3, 1e4, 1e5, 1e6}) {
    for (const std::complex<double> lambda :
         {std::complex<double>(-0.05, 30.0), std::complex<double>(-1.0, 0.5),
          std::complex<double>(-3.0, 300.0)}) {
      math::CVector<double> L(1);
      L << lambda;
      const auto r = math::dplr_real_form<double>(L, math::CMatrix<double>(1, 0), one, one);
      const auto m = math::discretize_mode(lambda, dt, Discretization::ZOH);
      const auto d = math::discretize(math::Transition<double>{r.A, r.B}, dt, Discretization::ZOH);
      EXPECT_LE(rel_err(d.B, Eigen::Vector2d(m.B_scale.real(), m.B_scale.imag())), 5e-15)
          << lambda << " " << dt;
    }
    if (dt >= 1e3) {  // exp(dt A) B is below 1e-400 of B_bar
      const auto t =
          math::discretize(math::Transition<double>{tri, tri_B}, dt, Discretization::ZOH);
      EXPECT_LE(rel_err(t.B, tri_expect), 1e-13) << dt;
      EXPECT_EQ(t.A.norm(), 0.0) << dt;
    }
  }
}

// A large B must not add squarings: B_bar is linear in B, and each squaring of exp(dt A) doubles
// the relative error of a slow mode's exp(dt lambda). Here dt A = -1 needs none; with dt B = 1e6
// in the norm it took 18 and A_bar was 1.9e-11 off (2.6e-13 at dt = 1e4). Measured after: at most
// 1.9e-16 for A_bar and B_bar alike, with dt lambda rounded as both sides round it.
TEST(Discretize, ZohLargeInputAddsNoSquarings) {
  const double a = -1e-6;
  math::RMatrix<double> A(1, 1);
  A << a;
  for (const double dt : {1e2, 1e4, 1e6}) {
    const auto d = math::discretize(math::Transition<double>{A, Eigen::VectorXd::Ones(1)}, dt,
                                    Discretization::ZOH);
    const double z = dt * a;
    EXPECT_LE(std::abs(d.A(0, 0) - std::exp(z)) / std::exp(z), 1e-15) << dt;
    EXPECT_LE(std::abs(d.B(0) - std::expm1(z) / a) / std::abs(std::expm1(z) / a), 1e-15) << dt;
  }
}

// ZOH's input factor (exp(dt lambda) - 1) / lambda must not cancel for tiny dt lambda.
TEST(Discretize, ZohInputFactorIsAccurateForTinySteps) {
  const std::complex<double> lambda(-1e-3, 2e-3);
  const double dt = 1e-9;
  const auto m = math::discretize_mode(lambda, dt, Discretization::ZOH);
  const std::complex<double> z = dt * lambda;
  const std::complex<double> series = dt * (1.0 + z / 2.0 + z * z / 6.0);
  EXPECT_LE(std::abs(m.B_scale - series) / std::abs(series), 1e-15);
}

// The bilinear log A_bar = log((1 + w) / (1 - w)), w = dt lambda / 2, must not cancel for tiny
// steps either (the Vandermonde kernel raises it to exp(l log A_bar) for l up to L).
TEST(Discretize, BilinearLogIsAccurateForTinySteps) {
  const std::complex<double> lambda(-1e-3, 2e-3);
  for (const double dt : {1e-9, 1e-6, 1e-3}) {
    const auto m = math::discretize_mode(lambda, dt, Discretization::Bilinear);
    const std::complex<double> w = dt * lambda / 2.0;
    const std::complex<double> series = 2.0 * (w + w * w * w / 3.0 + w * w * w * w * w / 5.0);
    EXPECT_LE(std::abs(m.log_A_bar - series) / std::abs(series), 1e-15) << dt;
  }
}

}  // namespace

// discretize_mode is public: it checks its step like discretize does, and the bilinear rule at
// dt·lambda = 2 (a zero resolvent) is an error, not inf/NaN. The dense bilinear rule likewise
// refuses a singular I - dt/2 A.
TEST(Discretize, ModeAndDenseBilinearRejectBadSteps) {
  for (double dt : {0.0, -0.1, std::nan("")})
    for (auto method : {Discretization::ZOH, Discretization::Bilinear})
      SSMKIT_EXPECT_ERROR(math::discretize_mode(std::complex<double>(-0.5, 1), dt, method), "dt",
                          "> 0");
  SSMKIT_EXPECT_ERROR(
      math::discretize_mode(std::complex<double>(2, 0), 1.0, Discretization::Bilinear), "lambda",
      "singular");
  math::Transition<double> t{math::RMatrix<double>(2, 2), math::RVector<double>::Ones(2)};
  t.A << 1, 1, 0, 2;  // eigenvalue 2 = 2/dt
  SSMKIT_EXPECT_ERROR(math::discretize(t, 1.0, Discretization::Bilinear), "dt", "singular");
  // Away from the singular step the same matrix discretises to finite values.
  const auto d = math::discretize(t, 0.5, Discretization::Bilinear);
  EXPECT_TRUE(d.A.allFinite() && d.B.allFinite());
}
