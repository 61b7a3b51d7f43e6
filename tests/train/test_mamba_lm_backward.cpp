// The Mamba LM's backward against central finite differences of MambaLM::forward + cross-entropy
// in double, for every element of every parameter (tied and untied heads, with and without
// biases); its loss against the forward's; the trainable-parameter API (parameters(),
// parameters_changed()) against a model built from the changed weights.
#include "testing.hpp"

#include <ssmkit/nn/grad/mamba_lm_backward.hpp>
#include <ssmkit/nn/grad/mamba_lm_init.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit {
namespace {

using nn::MambaLMConfig;
using nn::MambaLMWeights;
using testing::fill_random;
using testing::rel_error;

MambaLMConfig tiny_config(bool tied) {
  MambaLMConfig c;
  c.vocab_size = 7;
  c.n_layer = 2;
  c.block.d_model = 4, c.block.d_inner = 6, c.block.d_state = 3, c.block.d_conv = 3;
  c.block.dt_rank = 2;
  c.norm_eps = 1e-5;
  c.tie_embeddings = tied;
  return c;
}

/// Random weights of every tensor, distinct per tensor; biases of in/out_proj only with `biases`.
template <class T>
MambaLMWeights<T> random_weights(const MambaLMConfig& c, bool biases, std::uint64_t seed) {
  const Index V = c.vocab_size, dm = c.d_model(), di = c.block.d_inner, N = c.block.d_state;
  const Index R = c.block.dt_rank;
  MambaLMWeights<T> w;
  w.embedding = HostTensor<T, 2>({V, dm});
  w.norm_f = HostTensor<T, 1>({dm});
  if (!c.tie_embeddings)
    w.lm_head = HostTensor<T, 2>({V, dm});
  for (Index i = 0; i < c.n_layer; ++i) {
    nn::MambaLayerWeights<T> l;
    l.norm = HostTensor<T, 1>({dm});
    auto& m = l.mixer;
    m.in_proj_weight = HostTensor<T, 2>({2 * di, dm});
    m.conv1d_weight = HostTensor<T, 2>({di, c.block.d_conv});
    m.conv1d_bias = HostTensor<T, 1>({di});
    m.x_proj_weight = HostTensor<T, 2>({R + 2 * N, di});
    m.dt_proj_weight = HostTensor<T, 2>({di, R});
    m.dt_proj_bias = HostTensor<T, 1>({di});
    m.A_log = HostTensor<T, 2>({di, N});
    m.D = HostTensor<T, 1>({di});
    m.out_proj_weight = HostTensor<T, 2>({dm, di});
    if (biases) {
      m.in_proj_bias = HostTensor<T, 1>({2 * di});
      m.out_proj_bias = HostTensor<T, 1>({dm});
    }
    w.layers.push_back(std::move(l));
  }
  std::uint64_t s = seed;
  for (auto& p : nn::parameters(w)) {
    const bool norm = p.name.find("norm") != std::string::npos;
    const bool a_log = p.name.find("A_log") != std::string::npos;
    const bool dt_bias = p.name.find("dt_proj.bias") != std::string::npos;
    std::mt19937_64 rng(++s);
    std::uniform_real_distribution<double> dist(norm      ? 0.5
                                                : a_log   ? 0.0
                                                : dt_bias ? -1.0
                                                          : -0.7,
                                                norm      ? 1.5
                                                : a_log   ? 1.4
                                                : dt_bias ? 0.5
                                                          : 0.7);
    for (Index i = 0; i < p.value.size(0); ++i)
      p.value(i) = static_cast<T>(dist(rng));
  }
  return w;
}

template <class T>
MambaLMWeights<T> clone(MambaLMWeights<T>& w) {
  MambaLMWeights<T> c;
  c.embedding = w.embedding.clone(), c.norm_f = w.norm_f.clone(), c.lm_head = w.lm_head.clone();
  for (auto& l : w.layers) {
    const auto& m = l.mixer;
    c.layers.push_back({l.norm.clone(),
                        {m.in_proj_weight.clone(), m.in_proj_bias.clone(), m.conv1d_weight.clone(),
                         m.conv1d_bias.clone(), m.x_proj_weight.clone(), m.dt_proj_weight.clone(),
                         m.dt_proj_bias.clone(), m.A_log.clone(), m.D.clone(),
                         m.out_proj_weight.clone(), m.out_proj_bias.clone()}});
  }
  return c;
}

constexpr Index kBatch = 2, kLength = 5;

struct Data {
  std::vector<std::int64_t> ids, targets;
};

/// Random ids and targets, a few targets ignored (-100).
Data random_data(Index V, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> tok(0, V - 1);
  Data d;
  for (Index t = 0; t < kBatch * kLength; ++t) {
    d.ids.push_back(tok(rng));
    d.targets.push_back(t % 4 == 1 ? -100 : tok(rng));
  }
  return d;
}

TensorView<const std::int64_t, 2> view2(const std::vector<std::int64_t>& v) {
  return TensorView<const std::int64_t, 2>(v.data(), {kBatch, kLength}, "ids");
}

/// The forward's mean cross-entropy, through MambaLM::forward and nn::cross_entropy.
template <class T>
double forward_loss(const nn::MambaLM<T>& model, const Data& d) {
  const Index V = model.vocab_size();
  HostTensor<T, 3> logits({kBatch, kLength, V});
  model.forward(view2(d.ids), logits.view());
  return nn::cross_entropy<T, std::int64_t>(
      TensorView<const T, 2>(logits.data(), {kBatch * kLength, V}, "logits"),
      TensorView<const std::int64_t, 1>(d.targets.data(), {kBatch * kLength}, "targets"), {});
}

class MambaLMBackward : public ::testing::TestWithParam<std::pair<bool, bool>> {};

TEST_P(MambaLMBackward, EveryParameterMatchesFiniteDifferences) {
  const auto [tied, biases] = GetParam();
  const MambaLMConfig cfg = tiny_config(tied);
  // Thousands of tiny forwards: one thread spares each its parallel-region start-up.
  const int threads = max_threads();
  set_num_threads(1);
  MambaLMWeights<double> w = random_weights<double>(cfg, biases, 100);
  const Data d = random_data(cfg.vocab_size, 7);
  const nn::MambaLM<double> model(cfg, clone(w));
  MambaLMWeights<double> grads = nn::zeros_like(model);
  for (auto& p : nn::parameters(grads))
    for (Index i = 0; i < p.value.size(0); ++i)
      p.value(i) = std::numeric_limits<double>::quiet_NaN();
  const double loss = nn::mamba_lm_backward<double>(model, view2(d.ids), view2(d.targets), grads);
  EXPECT_NEAR(loss, forward_loss(model, d), 1e-12 * std::abs(loss));

  constexpr double eps = 1e-5;
  const auto want = nn::parameters(w), got = nn::parameters(grads);
  ASSERT_EQ(want.size(), got.size());
  // 2 layers × 9 or 11 tensors, the embedding, norm_f and, untied, lm_head.
  EXPECT_EQ(want.size(), static_cast<std::size_t>(2 * (biases ? 12 : 10) + 2 + (tied ? 0 : 1)));
  for (std::size_t k = 0; k < want.size(); ++k) {
    ASSERT_EQ(want[k].name, got[k].name);
    ASSERT_EQ(want[k].value.size(0), got[k].value.size(0)) << want[k].name;
    std::vector<double> fd(static_cast<std::size_t>(want[k].value.size(0)));
    for (Index i = 0; i < want[k].value.size(0); ++i) {
      double& p = want[k].value(i);
      const double p0 = p;
      p = p0 + eps;
      const double plus = forward_loss(nn::MambaLM<double>(cfg, clone(w)), d);
      p = p0 - eps;
      const double minus = forward_loss(nn::MambaLM<double>(cfg, clone(w)), d);
      p = p0;
      fd[static_cast<std::size_t>(i)] = (plus - minus) / (2 * eps);
    }
    EXPECT_LE(rel_error(got[k].value.data(), fd.data(), got[k].value.size(0)), 1e-6)
        << want[k].name;
  }
  set_num_threads(threads);
}

INSTANTIATE_TEST_SUITE_P(TiedAndBiases, MambaLMBackward,
                         ::testing::Values(std::pair(true, false), std::pair(true, true),
                                           std::pair(false, true)),
                         [](const auto& info) {
                           return std::string(info.param.first ? "Tied" : "Untied") +
                                  (info.param.second ? "Biases" : "NoBiases");
                         });

TEST(MambaLMBackward, GivenDlogitsEqualsTheGradientOfTheLinearLoss) {
  // ℓ = Σ G·logits has ∂ℓ/∂logits = G: the dlogits overload against finite differences.
  const MambaLMConfig cfg = tiny_config(false);
  const int threads = max_threads();
  set_num_threads(1);
  MambaLMWeights<double> w = random_weights<double>(cfg, true, 200);
  const Data d = random_data(cfg.vocab_size, 8);
  HostTensor<double, 3> G({kBatch, kLength, cfg.vocab_size});
  fill_random(G, 9);
  auto linear_loss = [&](const nn::MambaLM<double>& m) {
    HostTensor<double, 3> logits(G.shape());
    m.forward(view2(d.ids), logits.view());
    double l = 0;
    for (Index i = 0; i < G.numel(); ++i)
      l += G.data()[i] * logits.data()[i];
    return l;
  };
  const nn::MambaLM<double> model(cfg, clone(w));
  MambaLMWeights<double> grads = nn::zeros_like(model);
  nn::mamba_lm_backward<double>(model, view2(d.ids), G.view(), grads);
  const auto want = nn::parameters(w), got = nn::parameters(grads);
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    std::vector<double> fd(static_cast<std::size_t>(want[k].value.size(0)));
    for (Index i = 0; i < want[k].value.size(0); ++i) {
      double& p = want[k].value(i);
      const double p0 = p;
      p = p0 + 1e-5;
      const double plus = linear_loss(nn::MambaLM<double>(cfg, clone(w)));
      p = p0 - 1e-5;
      const double minus = linear_loss(nn::MambaLM<double>(cfg, clone(w)));
      p = p0;
      fd[static_cast<std::size_t>(i)] = (plus - minus) / 2e-5;
    }
    EXPECT_LE(rel_error(got[k].value.data(), fd.data(), got[k].value.size(0)), 1e-6)
        << want[k].name;
  }
  set_num_threads(threads);
}

TEST(MambaLMBackward, BatchSplitAcrossThreadsEqualsOneThread) {
  // Three sequences over two threads: uneven shards, the answers' shares reweighted.
  const MambaLMConfig cfg = tiny_config(true);
  const nn::MambaLM<double> model(cfg, random_weights<double>(cfg, true, 600));
  constexpr Index batch = 3, L = 6;
  std::mt19937_64 rng(13);
  std::vector<std::int64_t> ids, targets;
  for (Index t = 0; t < batch * L; ++t) {
    ids.push_back(static_cast<std::int64_t>(rng() % cfg.vocab_size));
    targets.push_back(t < L + 4 ? -100 : static_cast<std::int64_t>(rng() % cfg.vocab_size));
  }
  const TensorView<const std::int64_t, 2> id_view(ids.data(), {batch, L}, "ids");
  const TensorView<const std::int64_t, 2> target_view(targets.data(), {batch, L}, "targets");
  HostTensor<double, 3> G({batch, L, cfg.vocab_size});
  fill_random(G, 14);
  const int threads = max_threads();
  auto run = [&](int n, double& loss, MambaLMWeights<double>& ce, MambaLMWeights<double>& lin) {
    set_num_threads(n);
    ce = nn::zeros_like(model), lin = nn::zeros_like(model);
    loss = nn::mamba_lm_backward<double>(model, id_view, target_view, ce);
    nn::mamba_lm_backward<double>(model, id_view, G.view(), lin);
  };
  double loss1 = 0, loss2 = 0;
  MambaLMWeights<double> ce1, lin1, ce2, lin2;
  run(1, loss1, ce1, lin1);
  run(2, loss2, ce2, lin2);
  set_num_threads(threads);
  if (max_threads() == 1 && threads == 1)
    GTEST_SKIP() << "built without OpenMP: one thread only";
  EXPECT_NEAR(loss2, loss1, 1e-13 * loss1);
  const auto a = nn::parameters(ce1), b = nn::parameters(ce2);
  const auto c = nn::parameters(lin1), d = nn::parameters(lin2);
  for (std::size_t k = 0; k < a.size(); ++k) {
    EXPECT_LE(rel_error(b[k].value.data(), a[k].value.data(), a[k].value.size(0)), 1e-13)
        << a[k].name;
    EXPECT_LE(rel_error(d[k].value.data(), c[k].value.data(), c[k].value.size(0)), 1e-13)
        << c[k].name;
  }
}

TEST(MambaLMBackward, BuffersKeptAcrossCallsGiveTheGradientsOfFreshOnes) {
  // One MambaLMBackwardBuffers through calls of other shapes and another model (so that every
  // call finds the last one's values in its buffers), on two threads where there are two (so that
  // the shards' gradient sets are kept too): each call's gradients bit for bit those of a call
  // with buffers of its own.
  MambaLMConfig big;
  big.vocab_size = 18;
  big.n_layer = 2;
  big.block = {64, 128, 16, 4, 4};
  const nn::MambaLM<float> model(big, nn::init_mamba_lm<float>(big, 5));
  MambaLMConfig small_cfg = tiny_config(false);
  small_cfg.vocab_size = 50, small_cfg.block.d_model = 16, small_cfg.block.d_inner = 32;
  const nn::MambaLM<float> small(small_cfg, random_weights<float>(small_cfg, true, 800));
  const int threads = max_threads();
  set_num_threads(std::min(threads, 2));
  nn::MambaLMBackwardBuffers<float> kept;
  std::uint64_t seed = 20;
  const auto check = [&](const nn::MambaLM<float>& m, Index batch, Index L) {
    std::mt19937_64 rng(++seed);
    std::vector<std::int64_t> ids, targets;
    for (Index t = 0; t < batch * L; ++t) {
      ids.push_back(static_cast<std::int64_t>(rng() % m.vocab_size()));
      targets.push_back(t % 3 ? static_cast<std::int64_t>(rng() % m.vocab_size()) : -100);
    }
    const TensorView<const std::int64_t, 2> id_view(ids.data(), {batch, L}, "ids");
    const TensorView<const std::int64_t, 2> target_view(targets.data(), {batch, L}, "targets");
    HostTensor<float, 3> G({batch, L, m.vocab_size()});
    fill_random(G, seed);
    auto fresh = nn::zeros_like(m), reused = nn::zeros_like(m);
    auto fresh_lin = nn::zeros_like(m), reused_lin = nn::zeros_like(m);
    const double want = nn::mamba_lm_backward<float>(m, id_view, target_view, fresh);
    const double got = nn::mamba_lm_backward<float>(m, id_view, target_view, reused, kept);
    nn::mamba_lm_backward<float>(m, id_view, G.view(), fresh_lin);
    nn::mamba_lm_backward<float>(m, id_view, G.view(), reused_lin, kept);
    SCOPED_TRACE(::testing::Message() << "batch " << batch << " L " << L);
    EXPECT_EQ(got, want);
    const auto a = nn::parameters(fresh), b = nn::parameters(reused);
    const auto c = nn::parameters(fresh_lin), d = nn::parameters(reused_lin);
    for (std::size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(rel_error(b[k].value.data(), a[k].value.data(), a[k].value.size(0)), 0.0)
          << a[k].name;
      EXPECT_EQ(rel_error(d[k].value.data(), c[k].value.data(), c[k].value.size(0)), 0.0)
          << c[k].name;
    }
  };
  check(model, 2, 64);
  check(model, 3, 40);
  check(small, 4, 9);
  check(model, 2, 64);
  check(model, 1, 17);
  set_num_threads(threads);
}

TEST(MambaLMBackward, EmptyBatchGivesZeroGradients) {
  const MambaLMConfig cfg = tiny_config(false);
  const nn::MambaLM<double> model(cfg, random_weights<double>(cfg, false, 700));
  auto grads = nn::zeros_like(model);
  for (auto& p : nn::parameters(grads))
    for (Index i = 0; i < p.value.size(0); ++i)
      p.value(i) = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::int64_t> none;
  const TensorView<const std::int64_t, 2> empty(none.data(), {0, 4}, "ids");
  EXPECT_EQ(nn::mamba_lm_backward<double>(model, empty, empty, grads), 0.0);
  for (auto& p : nn::parameters(grads))
    for (Index i = 0; i < p.value.size(0); ++i)
      ASSERT_EQ(p.value(i), 0.0) << p.name;
}

TEST(MambaLMBackward, FloatAgreesWithDoubleOnTheSelectiveCopyingModel) {
  // The example's model (d_inner 128: whole SIMD lanes in the float kernels, unlike the tiny
  // models above) from nn::init_mamba_lm, its float gradients against the double ones.
  MambaLMConfig cfg;
  cfg.vocab_size = 18;
  cfg.n_layer = 2;
  cfg.block = {64, 128, 16, 4, 4};
  auto wd = nn::init_mamba_lm<double>(cfg, 3);
  for (auto& p : nn::parameters(wd))  // off the structured init, so every path carries signal
    for (Index i = 0; i < p.value.size(0); ++i)
      p.value(i) += 0.02 * std::sin(static_cast<double>(3 * i + p.value.size(0)));
  MambaLMWeights<float> wf = nn::init_mamba_lm<float>(cfg, 3);
  {
    const auto from = nn::parameters(wd);
    const auto to = nn::parameters(wf);
    for (std::size_t k = 0; k < from.size(); ++k)
      for (Index i = 0; i < from[k].value.size(0); ++i)
        to[k].value(i) = static_cast<float>(from[k].value(i));
  }
  constexpr Index batch = 2, L = 64;
  std::mt19937_64 rng(15);
  std::vector<std::int64_t> ids, targets;
  for (Index t = 0; t < batch * L; ++t) {
    ids.push_back(static_cast<std::int64_t>(rng() % cfg.vocab_size));
    targets.push_back(t % L < L - 16 ? -100 : static_cast<std::int64_t>(rng() % cfg.vocab_size));
  }
  const TensorView<const std::int64_t, 2> id_view(ids.data(), {batch, L}, "ids");
  const TensorView<const std::int64_t, 2> target_view(targets.data(), {batch, L}, "targets");
  const nn::MambaLM<double> md(cfg, std::move(wd));
  const nn::MambaLM<float> mf(cfg, std::move(wf));
  auto gd = nn::zeros_like(md);
  auto gf = nn::zeros_like(mf);
  const double ld = nn::mamba_lm_backward<double>(md, id_view, target_view, gd);
  const double lf = nn::mamba_lm_backward<float>(mf, id_view, target_view, gf);
  EXPECT_NEAR(lf, ld, 1e-5 * ld);
  const auto a = nn::parameters(gd);
  const auto b = nn::parameters(gf);
  // Float against double: at most 1.4e-6 measured (x_proj.weight of layer 1) over the AVX-512,
  // AVX2 and portable paths on 1 to 32 threads.
  for (std::size_t k = 0; k < a.size(); ++k)
    EXPECT_LE(rel_error(b[k].value.data(), a[k].value.data(), a[k].value.size(0)), 2e-5)
        << a[k].name;
}

TEST(MambaLMBackward, LossEqualsTheForwardCrossEntropyInFloat) {
  MambaLMConfig cfg = tiny_config(true);
  cfg.vocab_size = 50, cfg.block.d_model = 16, cfg.block.d_inner = 32, cfg.block.d_state = 8;
  auto w = random_weights<float>(cfg, false, 300);
  const nn::MambaLM<float> model(cfg, std::move(w));
  const Data d = random_data(cfg.vocab_size, 10);
  auto grads = nn::zeros_like(model);
  const double loss = nn::mamba_lm_backward<float>(model, view2(d.ids), view2(d.targets), grads);
  const double want = forward_loss(model, d);
  EXPECT_GT(want, 1.0);  // a real loss, not a degenerate zero
  EXPECT_NEAR(loss, want, 1e-6 * want);
}

TEST(MambaLM, ParametersChangedMatchesAModelBuiltFromTheChangedWeights) {
  const MambaLMConfig cfg = tiny_config(false);
  MambaLMWeights<double> w = random_weights<double>(cfg, true, 400);
  nn::MambaLM<double> model(cfg, clone(w));
  auto params = model.parameters();
  const auto mirror = nn::parameters(w);
  ASSERT_EQ(params.size(), mirror.size());
  // One step of every parameter, A_log's included, through the views.
  for (std::size_t k = 0; k < params.size(); ++k) {
    ASSERT_EQ(params[k].name, mirror[k].name);
    for (Index i = 0; i < params[k].value.size(0); ++i) {
      const double delta = 0.05 * std::sin(static_cast<double>(7 * k + i));
      params[k].value(i) += delta;
      mirror[k].value(i) += delta;
    }
  }
  model.parameters_changed();
  const Data d = random_data(cfg.vocab_size, 11);
  const double got = forward_loss(model, d);
  const double want = forward_loss(nn::MambaLM<double>(cfg, clone(w)), d);
  EXPECT_NEAR(got, want, 1e-13 * want);
  // Weight decay goes to matrices other than A_log only.
  for (const auto& p : params) {
    const bool matrix =
        p.name.find(".weight") != std::string::npos && p.name.find("norm") == std::string::npos;
    EXPECT_EQ(p.decay, matrix) << p.name;
  }
}

// Options that are not finite (or a negative embedding_std) gave NaN or infinite weights
// without an error.
TEST(MambaLMInit, RejectsNonFiniteOptions) {
  const MambaLMConfig cfg = tiny_config(false);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  nn::MambaInitOptions o;
  o.embedding_std = nan;
  SSMKIT_EXPECT_ERROR(nn::init_mamba_lm<float>(cfg, 1, o), "embedding_std");
  o.embedding_std = -0.02;
  SSMKIT_EXPECT_ERROR(nn::init_mamba_lm<float>(cfg, 1, o), "embedding_std");
  o = {};
  o.dt_max = inf;
  SSMKIT_EXPECT_ERROR(nn::init_mamba_lm<float>(cfg, 1, o), "dt_max");
  o = {};
  o.dt_floor = inf;
  SSMKIT_EXPECT_ERROR(nn::init_mamba_lm<float>(cfg, 1, o), "dt_floor");
  o = {};
  o.embedding_std = 0;  // as torch.nn.init.normal_(std=0): zeros
  const auto w = nn::init_mamba_lm<float>(cfg, 1, o);
  EXPECT_EQ(w.embedding.data()[0], 0.0f);
}

TEST(MambaLMBackward, RejectsBadArguments) {
  const MambaLMConfig cfg = tiny_config(true);
  const nn::MambaLM<double> model(cfg, random_weights<double>(cfg, false, 500));
  auto grads = nn::zeros_like(model);
  Data d = random_data(cfg.vocab_size, 12);
  d.targets[3] = cfg.vocab_size;
  SSMKIT_EXPECT_ERROR(nn::mamba_lm_backward<double>(model, view2(d.ids), view2(d.targets), grads),
                      "targets", "element (0, 3)");
  d = random_data(cfg.vocab_size, 12);
  d.ids[6] = -1;
  SSMKIT_EXPECT_ERROR(nn::mamba_lm_backward<double>(model, view2(d.ids), view2(d.targets), grads),
                      "ids", "element (1, 1)");
  d = random_data(cfg.vocab_size, 12);
  grads.layers.pop_back();
  SSMKIT_EXPECT_ERROR(nn::mamba_lm_backward<double>(model, view2(d.ids), view2(d.targets), grads),
                      "grads", "zeros_like");
}

}  // namespace
}  // namespace ssmkit
