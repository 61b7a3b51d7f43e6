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

nn::MambaBlockConfig small_config() {
  nn::MambaBlockConfig cfg;
  cfg.d_model = 4, cfg.d_inner = 6, cfg.d_state = 3, cfg.d_conv = 3, cfg.dt_rank = 2;
  return cfg;
}

/// Random weights for `cfg`, with or without the in/out_proj biases.
MambaBlockWeights<double> random_weights(const nn::MambaBlockConfig& cfg, bool biases) {
  const Index di = cfg.d_inner, dm = cfg.d_model;
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
  return w;
}

TEST(MambaBlockBackward, MatchesFiniteDifferences) {
  const nn::MambaBlockConfig cfg = small_config();
  const Index batch = 2, L = 5, dm = cfg.d_model;
  // Hundreds of tiny forwards: one thread spares each its parallel-region start-up.
  const int threads = max_threads();
  set_num_threads(1);
  for (bool biases : {false, true}) {
    SCOPED_TRACE(biases ? "with in/out_proj biases" : "without in/out_proj biases");
    MambaBlockWeights<double> w = random_weights(cfg, biases);
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

// dx may be x's or dout's memory: the gradients equal those of separate buffers.
TEST(MambaBlockBackward, DxMayBeXOrDout) {
  const nn::MambaBlockConfig cfg = small_config();
  const nn::MambaBlock<double> block(cfg, random_weights(cfg, true));
  const Index batch = 2, L = 5, dm = cfg.d_model;
  HostTensor<double, 3> x({batch, L, dm}), dout({batch, L, dm}), dx({batch, L, dm});
  fill_random(x, 12), fill_random(dout, 13);
  auto want = nn::zeros_like(block.weights());
  nn::mamba_block_backward<double>(block, x.view(), dout.view(), dx.view(), want);
  for (bool over_x : {true, false}) {
    SCOPED_TRACE(over_x ? "dx over x" : "dx over dout");
    HostTensor<double, 3> x2 = x.clone(), dout2 = dout.clone();
    auto got = nn::zeros_like(block.weights());
    const TensorView<double, 3> dx2 = over_x ? x2.view() : dout2.view();
    nn::mamba_block_backward<double>(block, x2.view(), dout2.view(), dx2, got);
    EXPECT_LE(rel_error(dx2.data(), dx.data(), dx.numel()), 1e-15);
    const auto g = slices(got), w = slices(want);
    for (std::size_t k = 0; k < w.size(); ++k)
      EXPECT_LE(rel_error(g[k].data, w[k].data, w[k].n), 1e-15) << w[k].name;
  }
}

// An empty batch has zero gradients: every tensor of grads is overwritten with 0.
TEST(MambaBlockBackward, EmptyBatchZeroesTheGradients) {
  const nn::MambaBlockConfig cfg = small_config();
  const nn::MambaBlock<double> block(cfg, random_weights(cfg, true));
  auto grads = nn::zeros_like(block.weights());
  for (Index batch : {0, 2}) {
    for (auto& s : slices(grads))
      std::fill_n(s.data, s.n, 123.0);  // a previous step's gradients
    const Index L = batch ? 0 : 5;
    HostTensor<double, 3> x({batch, L, cfg.d_model}), dout(x.shape()), dx(x.shape());
    nn::mamba_block_backward<double>(block, x.view(), dout.view(), dx.view(), grads);
    for (const auto& s : slices(grads))
      for (Index i = 0; i < s.n; ++i)
        ASSERT_EQ(s.data[i], 0.0) << s.name << " element " << i << ", batch " << batch;
  }
}

TEST(MambaBlockBackward, RejectsBadArguments) {
  const nn::MambaBlockConfig cfg = small_config();
  const nn::MambaBlock<double> block(cfg, random_weights(cfg, false));
  HostTensor<double, 3> x({1, 5, cfg.d_model}), dout(x.shape()), dx(x.shape());
  auto grads = nn::zeros_like(block.weights());
  SSMKIT_EXPECT_ERROR(
      nn::mamba_block_backward<double>(
          block, x.view(),
          TensorView<const double, 3>(dout.data(), dout.shape(), "dout", Device::CUDA), dx.view(),
          grads),
      "dout", "device", "cpu", "cuda");
  SSMKIT_EXPECT_ERROR(nn::mamba_block_backward<double>(
                          block, x.view(), dout.view(),
                          TensorView<double, 3>(dx.data(), dx.shape(), "dx", Device::CUDA), grads),
                      "dx", "device", "cpu", "cuda");
  grads.x_proj_weight = HostTensor<double, 2>({cfg.dt_rank + 2 * cfg.d_state, cfg.d_inner - 1});
  SSMKIT_EXPECT_ERROR(
      nn::mamba_block_backward<double>(block, x.view(), dout.view(), dx.view(), grads),
      "grads.x_proj.weight", "shape", "(8, 6)", "(8, 5)", "zeros_like");
  grads = nn::zeros_like(block.weights());
  grads.in_proj_bias = HostTensor<double, 1>({2 * cfg.d_inner});  // the block has none
  SSMKIT_EXPECT_ERROR(
      nn::mamba_block_backward<double>(block, x.view(), dout.view(), dx.view(), grads),
      "grads.in_proj.bias", "(0)", "(12)");
}

}  // namespace
}  // namespace ssmkit
