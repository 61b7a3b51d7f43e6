// Bad parameters raise ssmkit::Error naming the argument.
#include <ssmkit/nn/s4_layer.hpp>

#include "testing.hpp"

#include <limits>

namespace {

using namespace ssmkit;
using cd = std::complex<double>;

TEST(S4Errors, StateSize) {
  SSMKIT_EXPECT_ERROR(math::hippo<double>(math::Measure::LegS, 0), "N", ">= 1", "got 0");
  SSMKIT_EXPECT_ERROR(math::hippo<double>(math::Measure::FouT, 5), "N", "even");
  SSMKIT_EXPECT_ERROR(math::nplr<double>(math::Measure::LegS, 7), "N", "even");
  SSMKIT_EXPECT_ERROR(math::s4d_init<double>(math::S4DInit::Lin, 0), "N");
  nn::S4Config cfg;
  cfg.state_size = 0;
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.state_size", "got 0");
  cfg.state_size = 8;
  cfg.channels = 0;
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.channels");
}

TEST(S4Errors, StepSize) {
  const auto t = math::hippo<double>(math::Measure::LegS, 4);
  for (double dt : {0.0, -0.1, std::nan(""), std::numeric_limits<double>::infinity()})
    SSMKIT_EXPECT_ERROR(math::discretize(t, dt, math::Discretization::ZOH), "dt", "> 0");
  HostTensor<cd, 2> L({2, 3}), B({2, 3}), C({2, 3});
  HostTensor<double, 1> dt({2});
  L.fill(cd(-0.5, 1));
  B.fill(cd(1, 0));
  C.fill(cd(0.3, 0.2));
  dt(0) = 0.1;
  dt(1) = 0.0;
  HostTensor<double, 2> K({2, 16});
  const cpu::DiagonalSsm<double> s{L.view(), B.view(), C.view(), dt.view()};
  SSMKIT_EXPECT_ERROR(cpu::ssm_kernel_vandermonde(s, math::Discretization::ZOH, K.view()), "dt[1]",
                      "> 0", "got 0");
  dt(1) = std::nan("");
  SSMKIT_EXPECT_ERROR(cpu::ssm_kernel_vandermonde(s, math::Discretization::ZOH, K.view()), "dt[1]");
  nn::S4Layer<double> layer(nn::S4Config{});
  layer.dt(0) = -1;
  HostTensor<double, 3> u({1, 8, 1}), y({1, 8, 1});
  SSMKIT_EXPECT_ERROR(layer.forward_conv(u.view(), y.view()), "dt[0]");
}

// A non-finite A or B is named as such.
TEST(S4Errors, NonFiniteTransition) {
  auto t = math::hippo<double>(math::Measure::LegS, 4);
  t.B(1) = std::nan("");
  SSMKIT_EXPECT_ERROR(math::discretize(t, 0.1, math::Discretization::ZOH), "ssmkit: B:", "entries",
                      "finite");
  t = math::hippo<double>(math::Measure::LegS, 4);
  t.A(2, 3) = std::numeric_limits<double>::infinity();
  SSMKIT_EXPECT_ERROR(math::discretize(t, 0.1, math::Discretization::Bilinear),
                      "ssmkit: A:", "entries", "finite");
}

TEST(S4Errors, UnstableModes) {
  HostTensor<cd, 2> L({1, 3}), B({1, 3}), C({1, 3});
  HostTensor<cd, 3> P({1, 3, 1});
  HostTensor<double, 1> dt({1});
  L.fill(cd(-0.5, 1));
  L(0, 2) = cd(0.25, 3);  // growing mode
  B.fill(cd(1, 0));
  C.fill(cd(1, 0));
  P.fill(cd(0.1, 0));
  dt(0) = 0.1;
  HostTensor<double, 2> K({1, 16});
  SSMKIT_EXPECT_ERROR(
      cpu::ssm_kernel_vandermonde(cpu::DiagonalSsm<double>{L.view(), B.view(), C.view(), dt.view()},
                                  math::Discretization::Bilinear, K.view()),
      "Lambda", "(0, 2)", "< 0");
  SSMKIT_EXPECT_ERROR(
      cpu::ssm_kernel_dplr(cpu::DplrSsm<double>{L.view(), P.view(), B.view(), C.view(), dt.view()},
                           K.view()),
      "Lambda", "< 0");
  L(0, 2) = cd(0, 3);  // marginal: not strictly stable either
  SSMKIT_EXPECT_ERROR(
      cpu::ssm_kernel_vandermonde(cpu::DiagonalSsm<double>{L.view(), B.view(), C.view(), dt.view()},
                                  math::Discretization::ZOH, K.view()),
      "Lambda");
  nn::S4Layer<double> layer(nn::S4Config{});
  layer.Lambda(0, 1) = cd(1.0, 0.0);
  HostTensor<double, 3> u({1, 8, 1}), y({1, 8, 1});
  SSMKIT_EXPECT_ERROR(layer.forward_recurrent(u.view(), y.view()), "Lambda");
  // LegT's normal part is purely imaginary: not a stable DPLR initialisation.
  nn::S4Config cfg;
  cfg.param = nn::S4Parameterization::Dplr;
  cfg.discretization = math::Discretization::Bilinear;
  cfg.measure = math::Measure::LegT;
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.measure", "< 0");
  cfg.measure = math::Measure::LegS;
  cfg.discretization = math::Discretization::ZOH;
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.discretization", "bilinear");
}

TEST(S4Errors, MismatchedShapes) {
  nn::S4Config cfg;
  cfg.channels = 3;
  cfg.state_size = 8;
  const nn::S4Layer<double> layer(cfg);
  HostTensor<double, 3> u({2, 16, 3}), u_bad({2, 16, 4}), y({2, 16, 3}), y_bad({2, 15, 3});
  SSMKIT_EXPECT_ERROR(layer.forward_conv(u_bad.view(), y.view()), "u", "shape");
  SSMKIT_EXPECT_ERROR(layer.forward_conv(u.view(), y_bad.view()), "y", "shape", "(2, 16, 3)");
  SSMKIT_EXPECT_ERROR(layer.forward_recurrent(u_bad.view(), y.view()), "u", "shape");
  auto state = layer.make_state(1);
  SSMKIT_EXPECT_ERROR(layer.forward_recurrent(state, u.view(), y.view()), "u", "batch");
  HostTensor<double, 2> K({2, 10});
  SSMKIT_EXPECT_ERROR(layer.kernel(K.view()), "K", "shape", "(3, 10)");
  HostTensor<double, 2> K_short({3, 10});
  SSMKIT_EXPECT_ERROR(
      cpu::fft_conv(cpu::FftConvParams<double>{u.view(), K_short.view(), {}, y.view()}), "K",
      ">= 16");
  HostTensor<double, 1> D_bad({2});
  HostTensor<double, 2> K_ok({3, 16});
  SSMKIT_EXPECT_ERROR(
      cpu::fft_conv(cpu::FftConvParams<double>{u.view(), K_ok.view(), D_bad.view(), y.view()}), "D",
      "(3)");
  HostTensor<cd, 2> L({3, 4}), B({3, 5}), C({3, 4});
  HostTensor<double, 1> dt({3});
  L.fill(cd(-1, 0));
  dt.fill(0.1);
  SSMKIT_EXPECT_ERROR(
      cpu::ssm_kernel_vandermonde(cpu::DiagonalSsm<double>{L.view(), B.view(), C.view(), dt.view()},
                                  math::Discretization::ZOH, K_ok.view()),
      "B", "(3, 4)", "(3, 5)");
  HostTensor<cd, 3> st({2, 3, 5});
  HostTensor<cd, 2> Ab({3, 4}), Bb({3, 4});
  SSMKIT_EXPECT_ERROR(cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<double>{
                          Ab.view(), Bb.view(), C.view(), {}, u.view(), y.view(), st.view()}),
                      "state", "(2, 3, 4)");
}

}  // namespace
