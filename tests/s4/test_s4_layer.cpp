// The S4 layer: convolution mode equals recurrent mode (L = 4096) for every parameterisation,
// streaming step() equals the recurrent forward, float agrees with double.
#include <ssmkit/nn/s4_layer.hpp>

#include "testing.hpp"

#include <cstdio>
#include <limits>

namespace {

using namespace ssmkit;
using nn::S4Config;
using nn::S4Parameterization;

struct Case {
  const char* name;
  S4Parameterization param;
  math::S4DInit init;
  math::Discretization disc;
};

const Case kCases[] = {
    {"S4D-Lin ZOH", S4Parameterization::Diagonal, math::S4DInit::Lin, math::Discretization::ZOH},
    {"S4D-Inv bilinear", S4Parameterization::Diagonal, math::S4DInit::Inv,
     math::Discretization::Bilinear},
    {"S4D-Real ZOH", S4Parameterization::Diagonal, math::S4DInit::Real, math::Discretization::ZOH},
    {"S4D-LegS ZOH", S4Parameterization::Diagonal, math::S4DInit::LegS, math::Discretization::ZOH},
    {"DPLR LegS bilinear", S4Parameterization::Dplr, math::S4DInit::Lin,
     math::Discretization::Bilinear},
};

S4Config config(const Case& c, Index H, Index N, std::uint64_t seed) {
  S4Config cfg;
  cfg.channels = H;
  cfg.state_size = N;
  cfg.param = c.param;
  cfg.diagonal_init = c.init;
  cfg.discretization = c.disc;
  cfg.seed = seed;
  return cfg;
}

template <class T>
void run_modes(const Case& c, const HostTensor<T, 3>& u, HostTensor<T, 3>& y_conv,
               HostTensor<T, 3>& y_rec) {
  const nn::S4Layer<T> layer(config(c, u.size(2), 16, 42));
  y_conv.fill(std::numeric_limits<T>::quiet_NaN());
  y_rec.fill(std::numeric_limits<T>::quiet_NaN());
  layer.forward_conv(u.view(), y_conv.view());
  layer.forward_recurrent(u.view(), y_rec.view());
}

TEST(S4Layer, ConvolutionEqualsRecurrentL4096) {
  const Index Bt = 2, L = 4096, H = 4;
  HostTensor<double, 3> u({Bt, L, H}), yc({Bt, L, H}), yr({Bt, L, H});
  HostTensor<float, 3> uf({Bt, L, H}), ycf({Bt, L, H}), yrf({Bt, L, H});
  ssmkit::testing::fill_random(u, 9);
  for (Index i = 0; i < u.numel(); ++i)
    uf.data()[i] = float(u.data()[i]);
  for (const Case& c : kCases) {
    run_modes<double>(c, u, yc, yr);
    const double e = ssmkit::testing::rel_error(yc.data(), yr.data(), yr.numel());
    EXPECT_LE(e, 1e-10) << c.name;
    run_modes<float>(c, uf, ycf, yrf);
    const double ef = ssmkit::testing::rel_error(ycf.data(), yrf.data(), yrf.numel());
    EXPECT_LE(ef, 1e-5) << c.name;
    // Both float modes against the double layer (same seed; parameters rounded to float).
    EXPECT_LE(ssmkit::testing::rel_error(ycf.data(), yr.data(), yr.numel()), 1e-5) << c.name;
    EXPECT_LE(ssmkit::testing::rel_error(yrf.data(), yr.data(), yr.numel()), 1e-5) << c.name;
    std::printf("%-20s conv vs recurrent: double %.2e, float %.2e\n", c.name, e, ef);
  }
}

TEST(S4Layer, StepEqualsRecurrentAndChannelMajorWorks) {
  const Index Bt = 3, L = 50, H = 5;
  for (const Case& c : kCases) {
    const nn::S4Layer<double> layer(config(c, H, 8, 7));
    HostTensor<double, 3> u({Bt, L, H}), y({Bt, L, H}), y_step({Bt, L, H});
    ssmkit::testing::fill_random(u, 17);
    y.fill(std::nan(""));
    y_step.fill(std::nan(""));
    layer.forward_recurrent(u.view(), y.view());
    auto state = layer.make_state(Bt);
    for (Index t = 0; t < L; ++t) {
      const TensorView<const double, 2> ut(&u(0, t, 0), {Bt, H}, {L * H, 1});
      const TensorView<double, 2> yt(&y_step(0, t, 0), {Bt, H}, {L * H, 1});
      layer.step(state, ut, yt);
    }
    EXPECT_LE(ssmkit::testing::rel_error(y_step.data(), y.data(), y.numel()), 1e-14) << c.name;

    // Channel-major (batch, H, L) memory through strided views, in both modes.
    HostTensor<double, 3> u_cm({Bt, H, L}), y_cm({Bt, H, L});
    for (Index b = 0; b < Bt; ++b)
      for (Index t = 0; t < L; ++t)
        for (Index h = 0; h < H; ++h)
          u_cm(b, h, t) = u(b, t, h);
    const TensorView<const double, 3> uv(u_cm.data(), {Bt, L, H}, {H * L, 1, L});
    const TensorView<double, 3> yv(y_cm.data(), {Bt, L, H}, {H * L, 1, L});
    for (bool conv : {true, false}) {
      y_cm.fill(std::nan(""));
      conv ? layer.forward_conv(uv, yv) : layer.forward_recurrent(uv, yv);
      double num = 0, den = 0;
      for (Index b = 0; b < Bt; ++b)
        for (Index t = 0; t < L; ++t)
          for (Index h = 0; h < H; ++h) {
            num += std::pow(y_cm(b, h, t) - y(b, t, h), 2);
            den += y(b, t, h) * y(b, t, h);
          }
      EXPECT_LE(std::sqrt(num / den), 1e-12) << c.name << (conv ? " conv" : " recurrent");
    }
  }
}

}  // namespace

namespace {

using namespace ssmkit;

// The config is validated whole: a non-finite dt_max is refused at construction (naming it), a
// DPLR layer whose public config was switched to ZOH refuses to run rather than silently use the
// bilinear rule, and a DPLR kernel of length 0 names K.
TEST(S4Layer, ConfigAndKernelArgumentsAreValidated) {
  S4Config cfg;
  cfg.dt_max = std::numeric_limits<double>::infinity();
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.dt_max");
  cfg.dt_max = std::nan("");
  SSMKIT_EXPECT_ERROR(nn::S4Layer<double>{cfg}, "config.dt_max");

  S4Config dc;
  dc.state_size = 8;
  dc.param = S4Parameterization::Dplr;
  dc.discretization = math::Discretization::Bilinear;
  nn::S4Layer<double> layer(dc);
  HostTensor<double, 2> K0({1, 0}), K({1, 16});
  SSMKIT_EXPECT_ERROR(layer.kernel(K0.view()), "K", "length");
  layer.config.discretization = math::Discretization::ZOH;
  SSMKIT_EXPECT_ERROR(layer.kernel(K.view()), "config.discretization", "bilinear");
  HostTensor<double, 3> u({1, 16, 1}), y({1, 16, 1});
  SSMKIT_EXPECT_ERROR(layer.forward_recurrent(u.view(), y.view()), "config.discretization");
}

}  // namespace
