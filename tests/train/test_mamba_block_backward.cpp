// The whole Mamba block's backward against central finite differences of MambaBlock::forward in
// double, for every weight (A_log included) and the input, with and without the optional biases.
#include "testing.hpp"

#include <ssmkit/nn/grad/mamba_block_backward.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit {
namespace {

using nn::MambaBlockWeights;
using testing::fill_random;
using testing::rel_error;

struct Slice {
  const char* name;
  double* data;
  Index n;
};

/// Every tensor of a weight set, in a fixed order (absent biases have n = 0).
std::vector<Slice> slices(MambaBlockWeights<double>& w) {
  return {{"in_proj.weight", w.in_proj_weight.data(), w.in_proj_weight.numel()},
          {"in_proj.bias", w.in_proj_bias.data(), w.in_proj_bias.numel()},
          {"conv1d.weight", w.conv1d_weight.data(), w.conv1d_weight.numel()},
          {"conv1d.bias", w.conv1d_bias.data(), w.conv1d_bias.numel()},
          {"x_proj.weight", w.x_proj_weight.data(), w.x_proj_weight.numel()},
          {"dt_proj.weight", w.dt_proj_weight.data(), w.dt_proj_weight.numel()},
          {"dt_proj.bias", w.dt_proj_bias.data(), w.dt_proj_bias.numel()},
          {"A_log", w.A_log.data(), w.A_log.numel()},
          {"D", w.D.data(), w.D.numel()},
          {"out_proj.weight", w.out_proj_weight.data(), w.out_proj_weight.numel()},
          {"out_proj.bias", w.out_proj_bias.data(), w.out_proj_bias.numel()}};
}

MambaBlockWeights<double> clone(const MambaBlockWeights<double>& w) {
  MambaBlockWeights<double> c;
  c.in_proj_weight = w.in_proj_weight.clone(), c.in_proj_bias = w.in_proj_bias.clone();
  c.conv1d_weight = w.conv1d_weight.clone(), c.conv1d_bias = w.conv1d_bias.clone();
  c.x_proj_weight = w.x_proj_weight.clone();
  c.dt_proj_weight = w.dt_proj_weight.clone(), c.dt_proj_bias = w.dt_proj_bias.clone();
  c.A_log = w.A_log.clone(), c.D = w.D.clone();
  c.out_proj_weight = w.out_proj_weight.clone(), c.out_proj_bias = w.out_proj_bias.clone();
  return c;
}

TEST(MambaBlockBackward, MatchesFiniteDifferences) {
  nn::MambaBlockConfig cfg;
  cfg.d_model = 4, cfg.d_inner = 6, cfg.d_state = 3, cfg.d_conv = 3, cfg.dt_rank = 2;
  const Index batch = 2, L = 5, di = cfg.d_inner, dm = cfg.d_model;
  // Hundreds of tiny forwards: one thread spares each its parallel-region start-up.
  const int threads = max_threads();
  set_num_threads(1);
  for (bool biases : {false, true}) {
    SCOPED_TRACE(biases ? "with in/out_proj biases" : "without in/out_proj biases");
    MambaBlockWeights<double> w;
    w.in_proj_weight = HostTensor<double, 2>({2 * di, dm});
    w.conv1d_weight = HostTensor<double, 2>({di, cfg.d_conv});
    w.conv1d_bias = HostTensor<double, 1>({di});
    w.x_proj_weight = HostTensor<double, 2>({cfg.dt_rank + 2 * cfg.d_state, di});
    w.dt_proj_weight = HostTensor<double, 2>({di, cfg.dt_rank});
    w.dt_proj_bias = HostTensor<double, 1>({di});
    w.A_log = HostTensor<double, 2>({di, cfg.d_state});
    w.D = HostTensor<double, 1>({di});
    w.out_proj_weight = HostTensor<double, 2>({dm, di});
    if (biases) {
      w.in_proj_bias = HostTensor<double, 1>({2 * di});
      w.out_proj_bias = HostTensor<double, 1>({dm});
      fill_random(w.in_proj_bias, 1, -0.5, 0.5);
      fill_random(w.out_proj_bias, 2, -0.5, 0.5);
    }
    fill_random(w.in_proj_weight, 3, -0.7, 0.7);
    fill_random(w.conv1d_weight, 4, -0.7, 0.7);
    fill_random(w.conv1d_bias, 5, -0.3, 0.3);
    fill_random(w.x_proj_weight, 6, -0.7, 0.7);
    fill_random(w.dt_proj_weight, 7, -0.7, 0.7);
    fill_random(w.dt_proj_bias, 8, -1.0, 0.5);
    fill_random(w.A_log, 9, 0.0, 1.4);
    fill_random(w.D, 10, -1.0, 1.0);
    fill_random(w.out_proj_weight, 11, -0.7, 0.7);
    HostTensor<double, 3> x({batch, L, dm}), dout({batch, L, dm}), dx({batch, L, dm});
    fill_random(x, 12), fill_random(dout, 13);
    dx.fill(std::numeric_limits<double>::quiet_NaN());

    const nn::MambaBlock<double> block(cfg, clone(w));
    auto grads = nn::zeros_like(w);
    for (auto& s : slices(grads))
      std::fill_n(s.data, s.n, std::numeric_limits<double>::quiet_NaN());
    nn::mamba_block_backward<double>(block, x.view(), dout.view(), dx.view(), grads);

    auto loss = [&](const MambaBlockWeights<double>& weights) {
      const nn::MambaBlock<double> b(cfg, clone(weights));
      HostTensor<double, 3> out({batch, L, dm});
      b.forward(x.view(), out.view());
      double l = 0;
      for (Index i = 0; i < out.numel(); ++i)
        l += out.data()[i] * dout.data()[i];
      return l;
    };
    constexpr double eps = 1e-5;  // the Δ path's gradients are ~1e-4: keep roundoff small
    auto fd = [&](double* p, Index n) {
      std::vector<double> g(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) {
        const double p0 = p[i];
        p[i] = p0 + eps;
        const double plus = loss(w);
        p[i] = p0 - eps;
        const double minus = loss(w);
        p[i] = p0;
        g[static_cast<std::size_t>(i)] = (plus - minus) / (2 * eps);
      }
      return g;
    };
    const auto want = slices(w), got = slices(grads);
    for (std::size_t k = 0; k < want.size(); ++k) {
      ASSERT_EQ(want[k].n, got[k].n) << want[k].name;
      EXPECT_LE(rel_error(got[k].data, fd(want[k].data, want[k].n).data(), got[k].n), 1e-6)
          << want[k].name;
    }
    EXPECT_LE(rel_error(dx.data(), fd(x.data(), x.numel()).data(), x.numel()), 1e-6) << "x";
  }
  set_num_threads(threads);
}

}  // namespace
}  // namespace ssmkit
