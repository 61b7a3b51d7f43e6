// Backward passes of the layers around the scan (causal conv1d, linear, RMSNorm) and the
// cross-entropy loss against central finite differences of their forwards in double; AdamW,
// gradient clipping and cross-entropy against PyTorch goldens (tools/make_train_goldens.py).
#include "testing.hpp"

#include <ssmkit/kernels/cpu/causal_conv1d.hpp>
#include <ssmkit/kernels/cpu/causal_conv1d_backward.hpp>
#include <ssmkit/nn/grad/cross_entropy.hpp>
#include <ssmkit/nn/grad/embedding_backward.hpp>
#include <ssmkit/nn/grad/linear_backward.hpp>
#include <ssmkit/nn/grad/rms_norm_backward.hpp>
#include <ssmkit/optim/adamw.hpp>
#include <ssmkit/optim/clip_grad_norm.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>

namespace ssmkit {
namespace {

using testing::random_vector;
using testing::rel_error;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Central differences of loss() w.r.t. every element of x.
std::vector<double> numeric_gradient(const std::function<double()>& loss, std::vector<double>& x) {
  constexpr double eps = 1e-6;
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double plus = loss();
    x[i] = x0 - eps;
    const double minus = loss();
    x[i] = x0;
    g[i] = (plus - minus) / (2 * eps);
  }
  return g;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

TEST(CausalConv1dBackward, MatchesFiniteDifferences) {
  const Index batch = 2, L = 7, C = 5, K = 4;
  const int threads = max_threads();
  set_num_threads(1);  // hundreds of tiny convolutions
  for (int mask = 0; mask < 8; ++mask) {
    const bool has_bias = mask & 1, has_state = mask & 2, silu = mask & 4;
    SCOPED_TRACE("bias " + std::to_string(has_bias) + " state " + std::to_string(has_state) +
                 " silu " + std::to_string(silu));
    auto x = random_vector<double>(batch * L * C, 1 + mask);
    auto w = random_vector<double>(C * K, 2 + mask);
    auto bias = has_bias ? random_vector<double>(C, 3 + mask) : std::vector<double>{};
    auto state =
        has_state ? random_vector<double>(batch * C * (K - 1), 4 + mask) : std::vector<double>{};
    const auto dout = random_vector<double>(batch * L * C, 5 + mask);
    CausalConv1dBackwardParams<double> p;
    p.x = TensorView<const double, 3>(x.data(), {batch, L, C});
    p.weight = TensorView<const double, 2>(w.data(), {C, K});
    if (has_bias)
      p.bias = TensorView<const double, 1>(bias.data(), {C});
    if (has_state)
      p.initial_state = TensorView<const double, 3>(state.data(), {batch, C, K - 1});
    p.silu = silu;
    p.dout = TensorView<const double, 3>(dout.data(), {batch, L, C});
    std::vector<double> dx(x.size(), kNaN), dw(w.size(), kNaN), db(bias.size(), kNaN),
        dstate(state.size(), kNaN);
    p.dx = TensorView<double, 3>(dx.data(), {batch, L, C});
    p.dweight = TensorView<double, 2>(dw.data(), {C, K});
    if (has_bias)
      p.dbias = TensorView<double, 1>(db.data(), {C});
    if (has_state)
      p.dinitial_state = TensorView<double, 3>(dstate.data(), {batch, C, K - 1});
    cpu::causal_conv1d_backward(p);

    std::vector<double> out(x.size());
    auto loss = [&] {
      cpu::causal_conv1d(p.forward(TensorView<double, 3>(out.data(), {batch, L, C})));
      return dot(out, dout);
    };
    EXPECT_LE(rel_error(dx, numeric_gradient(loss, x)), 1e-6) << "dx";
    EXPECT_LE(rel_error(dw, numeric_gradient(loss, w)), 1e-6) << "dweight";
    EXPECT_LE(rel_error(db, numeric_gradient(loss, bias)), 1e-6) << "dbias";
    EXPECT_LE(rel_error(dstate, numeric_gradient(loss, state)), 1e-6) << "dinitial_state";
  }
  set_num_threads(threads);
}

TEST(CausalConv1dBackward, FloatMatchesDoubleInEveryLayout) {
  // Float against the double backward above (checked by finite differences): 37 channels are
  // whole SIMD packs and a tail, so both the packed rows and the channel-by-channel path run;
  // the rows of x strided as a Mamba block's (x is half of in_proj's output), and channel-major.
  const Index batch = 2, L = 29, C = 37;
  for (Index K : {1, 3, 4})
    for (int mask = 0; mask < 8; ++mask)
      for (int layout = 0; layout < 3; ++layout) {
        const bool has_bias = mask & 1, has_state = mask & 2, silu = mask & 4;
        SCOPED_TRACE("K " + std::to_string(K) + " mask " + std::to_string(mask) + " layout " +
                     std::to_string(layout));
        // layout 0: (batch, L, C) contiguous; 1: token stride 2C; 2: (batch, C, L) in memory.
        const Index row = layout == 1 ? 2 * C : C;
        const Shape<3> shape{batch, L, C};
        const Shape<3> strides = layout == 2 ? Shape<3>{C * L, 1, L} : Shape<3>{L * row, row, 1};
        const Index n = batch * L * row;
        const auto x = random_vector<double>(n, 11 + mask), w = random_vector<double>(C * K, 12);
        const auto bias = random_vector<double>(C, 13),
                   state = random_vector<double>(batch * C * (K - 1), 14);
        const auto dout = random_vector<double>(n, 15 + mask);
        const auto run = [&](auto zero, std::vector<double>* result) {
          using T = decltype(zero);
          std::vector<T> xt(x.begin(), x.end()), wt(w.begin(), w.end()),
              bt(bias.begin(), bias.end());
          std::vector<T> st(state.begin(), state.end()), dt(dout.begin(), dout.end());
          std::vector<T> dx(n, T(kNaN)), dw(C * K, T(kNaN)), db(C, T(kNaN)),
              ds(state.size(), T(kNaN));
          CausalConv1dBackwardParams<T> p;
          p.x = TensorView<const T, 3>(xt.data(), shape, strides, "x");
          p.weight = TensorView<const T, 2>(wt.data(), {C, K});
          if (has_bias)
            p.bias = TensorView<const T, 1>(bt.data(), {C}),
            p.dbias = TensorView<T, 1>(db.data(), {C});
          if (has_state) {
            p.initial_state = TensorView<const T, 3>(st.data(), {batch, C, K - 1});
            p.dinitial_state = TensorView<T, 3>(ds.data(), {batch, C, K - 1});
          }
          p.silu = silu;
          p.dout = TensorView<const T, 3>(dt.data(), shape, strides, "dout");
          p.dx = TensorView<T, 3>(dx.data(), shape, strides, "dx");
          p.dweight = TensorView<T, 2>(dw.data(), {C, K});
          cpu::causal_conv1d_backward(p);
          result[0].assign(dw.begin(), dw.end());
          result[1].assign(db.begin(), db.end());
          result[2].assign(ds.begin(), ds.end());
          result[3].clear();  // dx at the logical elements (layout 1 leaves gaps unwritten)
          for (Index b = 0; b < batch; ++b)
            for (Index t = 0; t < L; ++t)
              for (Index c = 0; c < C; ++c)
                result[3].push_back(static_cast<double>(p.dx(b, t, c)));
        };
        std::vector<double> want[4], got[4];
        run(double(0), want);
        run(float(0), got);
        const char* names[4] = {"dweight", "dbias", "dinitial_state", "dx"};
        for (int i = 0; i < 4; ++i) {
          if (want[i].empty() || (i == 1 && !has_bias) || (i == 2 && (!has_state || K == 1)))
            continue;
          EXPECT_LE(rel_error(got[i], want[i]), 1e-5) << names[i];
        }
      }
}

TEST(CausalConv1dBackward, RejectsMismatchedGradients) {
  std::vector<float> x(12, 1.0f), w(6, 1.0f), bias(3, 0.0f), g(12), dw(6);
  CausalConv1dBackwardParams<float> p;
  p.x = TensorView<const float, 3>(x.data(), {1, 4, 3});
  p.weight = TensorView<const float, 2>(w.data(), {3, 2});
  p.bias = TensorView<const float, 1>(bias.data(), {3});
  p.dout = p.x;
  p.dx = TensorView<float, 3>(g.data(), {1, 4, 3});
  p.dweight = TensorView<float, 2>(dw.data(), {3, 2});
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dbias", "present, as bias is");
  p.bias = {};
  p.dweight = TensorView<float, 2>(dw.data(), {2, 3});
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dweight", "(3, 2)", "(2, 3)");
  p.dweight = TensorView<float, 2>(dw.data(), {3, 2});
  p.dx = TensorView<float, 3>(x.data(), {1, 4, 3});
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dx", "x", "overlap");
}

// dx one element before dout in one buffer once gave wrong dx (errors up to 0.61) and dweight
// (up to 1.59) silently: no gradient may overlap an input or another gradient.
TEST(CausalConv1dBackward, RejectsGradientsOverlappingInputsOrEachOther) {
  std::vector<float> x(12, 1.0f), w(6, 1.0f), bias(3, 0.0f), mem(40);
  CausalConv1dBackwardParams<float> p;
  p.x = TensorView<const float, 3>(x.data(), {1, 4, 3});
  p.weight = TensorView<const float, 2>(w.data(), {3, 2});
  p.bias = TensorView<const float, 1>(bias.data(), {3});
  p.dout = TensorView<const float, 3>(mem.data() + 1, {1, 4, 3}, "dout");
  p.dx = TensorView<float, 3>(mem.data(), {1, 4, 3}, "dx");
  p.dweight = TensorView<float, 2>(mem.data() + 20, {3, 2}, "dweight");
  p.dbias = TensorView<float, 1>(mem.data() + 30, {3}, "dbias");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dx", "disjoint from dout");
  p.dout = TensorView<const float, 3>(mem.data() + 12, {1, 4, 3}, "dout");
  p.dx = TensorView<float, 3>(mem.data(), {1, 4, 3}, "dx");
  p.dweight = TensorView<float, 2>(w.data(), {3, 2}, "dweight");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dweight", "disjoint from weight");
  p.dweight = TensorView<float, 2>(mem.data() + 25, {3, 2}, "dweight");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_backward(p), "dbias", "disjoint from dweight");
}

TEST(LinearBackward, MatchesFiniteDifferences) {
  const Index tokens = 5, in = 6, out = 4;
  auto x = random_vector<double>(tokens * in, 11), w = random_vector<double>(out * in, 12);
  auto b = random_vector<double>(out, 13);
  const auto dy = random_vector<double>(tokens * out, 14);
  std::vector<double> dx(x.size(), kNaN), dw(w.size(), kNaN), db(b.size(), kNaN), y(dy.size());
  auto view = [](std::vector<double>& v, Index r, Index c) {
    return TensorView<double, 2>(v.data(), {r, c});
  };
  auto x_v = view(x, tokens, in), w_v = view(w, out, in), y_v = view(y, tokens, out);
  const TensorView<const double, 1> b_v(b.data(), {out});
  const TensorView<const double, 2> dy_v(dy.data(), {tokens, out});
  nn::linear_backward<double>(x_v, w_v, dy_v, view(dx, tokens, in), view(dw, out, in),
                              TensorView<double, 1>(db.data(), {out}));
  auto loss = [&] {
    nn::linear<double>(x_v, w_v, b_v, y_v);
    return dot(y, dy);
  };
  EXPECT_LE(rel_error(dx, numeric_gradient(loss, x)), 1e-6);
  auto fd_w = numeric_gradient(loss, w);
  EXPECT_LE(rel_error(dw, fd_w), 1e-6);
  EXPECT_LE(rel_error(db, numeric_gradient(loss, b)), 1e-6);

  // Accumulating a second identical call doubles the parameter gradients.
  nn::linear_backward<double>(x_v, w_v, dy_v, {}, view(dw, out, in), {}, true);
  for (double& g : fd_w)
    g *= 2;
  EXPECT_LE(rel_error(dw, fd_w), 1e-6);
}

// dx may be x's memory (dW and db read x before dx is written), checked against direct sums;
// dx over dy's memory is rejected, naming both.
TEST(LinearBackward, DxMayBeXButNotDy) {
  const Index tokens = 5, in = 4, out = 4;
  const auto x0 = random_vector<double>(tokens * in, 21), w = random_vector<double>(out * in, 22);
  auto dy = random_vector<double>(tokens * out, 23);
  std::vector<double> want_dx(x0.size(), 0.0), want_dw(w.size(), 0.0), want_db(out, 0.0);
  for (Index t = 0; t < tokens; ++t)
    for (Index o = 0; o < out; ++o) {
      want_db[o] += dy[t * out + o];
      for (Index i = 0; i < in; ++i) {
        want_dx[t * in + i] += dy[t * out + o] * w[o * in + i];
        want_dw[o * in + i] += dy[t * out + o] * x0[t * in + i];
      }
    }
  auto x = x0;
  std::vector<double> dw(w.size(), kNaN), db(out, kNaN);
  const TensorView<const double, 2> w_v(w.data(), {out, in}), dy_v(dy.data(), {tokens, out});
  nn::linear_backward<double>(TensorView<const double, 2>(x.data(), {tokens, in}), w_v, dy_v,
                              TensorView<double, 2>(x.data(), {tokens, in}),
                              TensorView<double, 2>(dw.data(), {out, in}),
                              TensorView<double, 1>(db.data(), {out}));
  EXPECT_LE(rel_error(x, want_dx), 1e-14);
  EXPECT_LE(rel_error(dw, want_dw), 1e-14);
  EXPECT_LE(rel_error(db, want_db), 1e-14);
  SSMKIT_EXPECT_ERROR(
      nn::linear_backward<double>(TensorView<const double, 2>(x0.data(), {tokens, in}), w_v, dy_v,
                                  TensorView<double, 2>(dy.data(), {tokens, in}),
                                  TensorView<double, 2>(dw.data(), {out, in}), {}),
      "dx", "dy", "overlap");
}

// Every other overlap of an output with an input it is computed from (dx reads weight after
// dweight and dbias are written), or of two outputs, gave wrong gradients silently.
TEST(LinearBackward, RejectsOutputsOverlappingInputsOrEachOther) {
  const Index tokens = 2, in = 2, out = 2;
  std::vector<double> x = {1, 2, 3, 4}, w = {1, 2, 3, 4}, dy = {1, 1, 1, 1}, dw(4);
  const TensorView<const double, 2> x_v(x.data(), {tokens, in}), w_v(w.data(), {out, in});
  const TensorView<const double, 2> dy_v(dy.data(), {tokens, out});
  const TensorView<double, 2> dw_v(dw.data(), {out, in});
  auto m = [](std::vector<double>& v) { return TensorView<double, 2>(v.data(), {2, 2}); };
  SSMKIT_EXPECT_ERROR(nn::linear_backward<double>(x_v, w_v, dy_v, m(w), dw_v, {}), "dx", "weight",
                      "overlap");
  SSMKIT_EXPECT_ERROR(nn::linear_backward<double>(x_v, w_v, dy_v, m(dw), dw_v, {}), "dx", "dweight",
                      "overlap");
  SSMKIT_EXPECT_ERROR(nn::linear_backward<double>(x_v, w_v, dy_v, {}, m(dy), {}), "dweight", "dy",
                      "overlap");
  SSMKIT_EXPECT_ERROR(nn::linear_backward<double>(x_v, w_v, dy_v, {}, m(x), {}), "dweight", "x",
                      "overlap");
  SSMKIT_EXPECT_ERROR(nn::linear_backward<double>(x_v, w_v, dy_v, {}, dw_v,
                                                  TensorView<double, 1>(dy.data(), {out})),
                      "dbias", "dy", "overlap");
}

TEST(RmsNormBackward, MatchesFiniteDifferences) {
  const Index tokens = 4, features = 9;
  const double eps = 1e-3;
  auto x = random_vector<double>(tokens * features, 21), w = random_vector<double>(features, 22);
  const auto dy = random_vector<double>(tokens * features, 23);
  std::vector<double> dx(x.size(), kNaN), dw(w.size(), kNaN), y(x.size());
  const TensorView<const double, 2> x_v(x.data(), {tokens, features});
  const TensorView<const double, 1> w_v(w.data(), {features});
  nn::rms_norm_backward<double>(x_v, w_v, eps,
                                TensorView<const double, 2>(dy.data(), {tokens, features}),
                                TensorView<double, 2>(dx.data(), {tokens, features}),
                                TensorView<double, 1>(dw.data(), {features}));
  auto loss = [&] {
    nn::rms_norm<double, double>(x_v, w_v, eps,
                                 TensorView<double, 2>(y.data(), {tokens, features}));
    return dot(y, dy);
  };
  EXPECT_LE(rel_error(dx, numeric_gradient(loss, x)), 1e-6);
  EXPECT_LE(rel_error(dw, numeric_gradient(loss, w)), 1e-6);
}

// dx over x's or dy's very memory works (each row is read whole before it is written); a dx
// that overlaps them otherwise read rows already overwritten, silently.
TEST(RmsNormBackward, DxMayBeXOrDyButNotOverlapThemOtherwise) {
  const Index tokens = 3, features = 2;
  const std::vector<double> x0 = {1, 2, 3, 4, 5, 6}, w = {0.5, 1.5}, dy0 = {1, 0, 0, 1, 1, 1};
  std::vector<double> want(6), dw(2);
  const TensorView<const double, 1> w_v(w.data(), {features});
  auto c = [](const std::vector<double>& v) {
    return TensorView<const double, 2>(v.data(), {3, 2});
  };
  auto m = [](double* p) { return TensorView<double, 2>(p, {3, 2}); };
  nn::rms_norm_backward<double>(c(x0), w_v, 1e-6, c(dy0), m(want.data()),
                                TensorView<double, 1>(dw.data(), {features}));
  for (bool over_x : {true, false}) {
    auto x = x0, dy = dy0;
    double* dx = over_x ? x.data() : dy.data();
    nn::rms_norm_backward<double>(c(x), w_v, 1e-6, c(dy), m(dx),
                                  TensorView<double, 1>(dw.data(), {features}));
    EXPECT_EQ(std::vector<double>(dx, dx + tokens * features), want) << over_x;
  }
  std::vector<double> x(8);
  std::copy(x0.begin(), x0.end(), x.begin());
  SSMKIT_EXPECT_ERROR(nn::rms_norm_backward<double>(c(x), w_v, 1e-6, c(dy0), m(x.data() + 2),
                                                    TensorView<double, 1>(dw.data(), {features})),
                      "dx", "x", "overlap");
  SSMKIT_EXPECT_ERROR(nn::rms_norm_backward<double>(c(x0), w_v, 1e-6, c(dy0), m(want.data()),
                                                    TensorView<double, 1>(want.data(), {2})),
                      "dweight", "dx", "overlap");
}

TEST(EmbeddingBackward, MatchesFiniteDifferencesWithRepeatedIds) {
  const Index vocab = 6, dim = 5;
  const std::vector<std::int32_t> ids = {4, 1, 4, 0, 4, 1};  // rows 2, 3, 5 unused: zero
  const Index tokens = static_cast<Index>(ids.size());
  auto w = random_vector<double>(vocab * dim, 41);
  const auto dy = random_vector<double>(tokens * dim, 42);
  std::vector<double> dw(w.size(), kNaN);
  const TensorView<const std::int32_t, 1> ids_v(ids.data(), {tokens});
  nn::embedding_backward<double>(ids_v, TensorView<const double, 2>(dy.data(), {tokens, dim}),
                                 TensorView<double, 2>(dw.data(), {vocab, dim}));
  auto loss = [&] {  // Σ_t dy[t]·W[id_t], the lookup written out
    double l = 0;
    for (Index t = 0; t < tokens; ++t)
      for (Index c = 0; c < dim; ++c)
        l += dy[static_cast<std::size_t>(t * dim + c)] *
             w[static_cast<std::size_t>(ids[static_cast<std::size_t>(t)] * dim + c)];
    return l;
  };
  EXPECT_LE(rel_error(dw, numeric_gradient(loss, w)), 1e-6);
  std::vector<std::int32_t> bad = ids;
  bad[2] = -1;
  SSMKIT_EXPECT_ERROR(
      nn::embedding_backward<double>(TensorView<const std::int32_t, 1>(bad.data(), {tokens}),
                                     TensorView<const double, 2>(dy.data(), {tokens, dim}),
                                     TensorView<double, 2>(dw.data(), {vocab, dim})),
      "ids", "element 2", "got -1");
}

// dweight over dy was zeroed before dy was read: all-zero gradients, silently.
TEST(EmbeddingBackward, RejectsDweightOverDy) {
  const std::vector<std::int32_t> ids = {0, 1};
  std::vector<double> dy = {1, 2, 3, 4};
  SSMKIT_EXPECT_ERROR(
      nn::embedding_backward<double>(TensorView<const std::int32_t, 1>(ids.data(), {2}),
                                     TensorView<const double, 2>(dy.data(), {2, 2}),
                                     TensorView<double, 2>(dy.data(), {2, 2})),
      "dweight", "dy", "overlap");
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const Index tokens = 5, vocab = 7;
  auto logits = random_vector<double>(tokens * vocab, 31, -3, 3);
  const std::vector<std::int64_t> targets = {2, -100, 6, 0, 2};
  const TensorView<const std::int64_t, 1> t_v(targets.data(), {tokens});
  std::vector<double> dlogits(logits.size(), kNaN);
  const TensorView<const double, 2> l_v(logits.data(), {tokens, vocab});
  nn::cross_entropy<double>(l_v, t_v, TensorView<double, 2>(dlogits.data(), {tokens, vocab}));
  auto loss = [&] { return nn::cross_entropy<double>(l_v, t_v, {}); };
  EXPECT_LE(rel_error(dlogits, numeric_gradient(loss, logits)), 1e-6);
}

// dlogits over logits' very memory works (each row is read whole before it is written); one
// that overlaps logits otherwise, or the targets, read values already overwritten, silently.
TEST(CrossEntropy, DlogitsMayBeLogitsButNotOverlapThemOtherwise) {
  const std::vector<double> l0 = {1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> y = {0, 1};
  const TensorView<const std::int64_t, 1> y_v(y.data(), {2});
  std::vector<double> want(6);
  const double loss = nn::cross_entropy<double>(TensorView<const double, 2>(l0.data(), {2, 3}), y_v,
                                                TensorView<double, 2>(want.data(), {2, 3}));
  auto l = l0;
  EXPECT_EQ(nn::cross_entropy<double>(TensorView<const double, 2>(l.data(), {2, 3}), y_v,
                                      TensorView<double, 2>(l.data(), {2, 3})),
            loss);
  EXPECT_EQ(l, want);
  std::vector<double> shifted(9);
  std::copy(l0.begin(), l0.end(), shifted.begin());
  SSMKIT_EXPECT_ERROR(
      nn::cross_entropy<double>(TensorView<const double, 2>(shifted.data(), {2, 3}), y_v,
                                TensorView<double, 2>(shifted.data() + 3, {2, 3})),
      "dlogits", "logits", "overlap");
}

nlohmann::json golden() {
  std::ifstream in(std::string(SSMKIT_TEST_DATA_DIR) + "/train/optim_golden.json");
  EXPECT_TRUE(in.good()) << "tests/data/train/optim_golden.json missing";
  return nlohmann::json::parse(in);
}

TEST(CrossEntropy, MatchesPyTorch) {
  const auto g = golden()["cross_entropy"];
  std::vector<double> logits;
  for (const auto& row : g["logits"])
    for (double v : row)
      logits.push_back(v);
  const auto targets = g["targets"].get<std::vector<std::int64_t>>();
  const Index tokens = static_cast<Index>(targets.size());
  const Index vocab = static_cast<Index>(logits.size()) / tokens;
  std::vector<double> dlogits(logits.size(), kNaN), want;
  for (const auto& row : g["dlogits"])
    for (double v : row)
      want.push_back(v);
  const double loss =
      nn::cross_entropy<double>(TensorView<const double, 2>(logits.data(), {tokens, vocab}),
                                TensorView<const std::int64_t, 1>(targets.data(), {tokens}),
                                TensorView<double, 2>(dlogits.data(), {tokens, vocab}));
  EXPECT_NEAR(loss, g["loss"].get<double>(), 1e-12 * std::abs(g["loss"].get<double>()));
  EXPECT_LE(rel_error(dlogits, want), 1e-12);
  std::vector<std::int64_t> bad = targets;
  bad[1] = vocab;
  SSMKIT_EXPECT_ERROR(
      nn::cross_entropy<double>(TensorView<const double, 2>(logits.data(), {tokens, vocab}),
                                TensorView<const std::int64_t, 1>(bad.data(), {tokens}), {}),
      "targets", "element 1", "got 11");
}

TEST(AdamW, MatchesPyTorch) {
  const auto g = golden()["adamw"];
  auto p0 = g["param0"].get<std::vector<double>>(), p1 = g["param1"].get<std::vector<double>>();
  std::vector<double> g0(p0.size()), g1(p1.size());
  optim::AdamWOptions o;
  o.lr = g["lr"], o.beta1 = g["beta1"], o.beta2 = g["beta2"], o.eps = g["eps"];
  o.weight_decay = g["weight_decay"];
  optim::AdamW<double> opt(o);
  opt.add(TensorView<double, 1>(p0.data(), {Index(p0.size())}),
          TensorView<const double, 1>(g0.data(), {Index(g0.size())}));
  opt.add(TensorView<double, 1>(p1.data(), {Index(p1.size())}),
          TensorView<const double, 1>(g1.data(), {Index(g1.size())}), false);
  for (const auto& step : g["steps"]) {
    // Into the registered buffers (assigning a new vector would move its storage away).
    const auto s0 = step["grad0"].get<std::vector<double>>();
    const auto s1 = step["grad1"].get<std::vector<double>>();
    std::copy(s0.begin(), s0.end(), g0.begin());
    std::copy(s1.begin(), s1.end(), g1.begin());
    opt.step();
    EXPECT_LE(rel_error(p0, step["param0"].get<std::vector<double>>()), 1e-13);
    EXPECT_LE(rel_error(p1, step["param1"].get<std::vector<double>>()), 1e-13);
  }
  EXPECT_EQ(opt.steps(), 4);
  o.beta2 = 1.0;
  SSMKIT_EXPECT_ERROR(optim::AdamW<double>{o}, "beta2", "[0, 1)");
}

// PyTorch keeps a step count per parameter: one added after others have been stepped takes the
// bias corrections of its own first steps, as a fresh optimizer would give it.
TEST(AdamW, ParameterAddedLaterCountsItsOwnSteps) {
  optim::AdamWOptions o;
  o.lr = 0.01;
  optim::AdamW<double> shared(o), fresh(o);
  std::vector<double> a(5, 0.5), ga(5), b = {0.3, -0.7, 1.1}, gb(3), b_alone = b;
  shared.add(TensorView<double, 1>(a.data(), {5}), TensorView<const double, 1>(ga.data(), {5}));
  for (int step = 0; step < 7; ++step) {
    for (std::size_t i = 0; i < ga.size(); ++i)
      ga[i] = std::sin(1.0 + step + static_cast<double>(i));
    if (step == 4) {
      shared.add(TensorView<double, 1>(b.data(), {3}), TensorView<const double, 1>(gb.data(), {3}));
      fresh.add(TensorView<double, 1>(b_alone.data(), {3}),
                TensorView<const double, 1>(gb.data(), {3}));
    }
    for (std::size_t i = 0; i < gb.size(); ++i)
      gb[i] = std::cos(0.5 * step - static_cast<double>(i));
    shared.step();
    if (step >= 4)
      fresh.step();
  }
  // The first update moves a parameter by about lr whatever its gradient's scale.
  EXPECT_NEAR(std::abs(b_alone[0] - 0.3), 3 * o.lr, 2 * o.lr);
  EXPECT_EQ(b, b_alone);
  EXPECT_EQ(shared.steps(), 7);
  // Registered twice, b would be updated twice a step.
  SSMKIT_EXPECT_ERROR(shared.add(TensorView<double, 1>(b.data() + 1, {2}),
                                 TensorView<const double, 1>(gb.data(), {2})),
                      "param", "a parameter added before");
}

// A gradient buffer over a registered parameter (its own or another's) is read while parameters
// are written, in an order that depends on the threads: rejected like a parameter added twice.
TEST(AdamW, RejectsAGradientOverAParameter) {
  std::vector<double> a = {1, 2}, b = {3, 4}, ga(2), gb(2);
  optim::AdamW<double> opt;
  SSMKIT_EXPECT_ERROR(
      opt.add(TensorView<double, 1>(a.data(), {2}), TensorView<const double, 1>(a.data(), {2})),
      "grad", "param", "overlap");
  opt.add(TensorView<double, 1>(a.data(), {2}), TensorView<const double, 1>(ga.data(), {2}));
  SSMKIT_EXPECT_ERROR(
      opt.add(TensorView<double, 1>(b.data(), {2}), TensorView<const double, 1>(a.data(), {2})),
      "grad", "a parameter added before", "overlap");
  SSMKIT_EXPECT_ERROR(
      opt.add(TensorView<double, 1>(ga.data(), {2}), TensorView<const double, 1>(gb.data(), {2})),
      "param", "a gradient added before", "overlap");
}

TEST(ClipGradNorm, MatchesPyTorch) {
  const auto cases = golden()["clip_grad_norm"];
  for (const auto& c : cases) {
    auto a = c["grads"][0].get<std::vector<double>>(), b = c["grads"][1].get<std::vector<double>>();
    const double total =
        optim::clip_grad_norm<double>({TensorView<double, 1>(a.data(), {Index(a.size())}),
                                       TensorView<double, 1>(b.data(), {Index(b.size())})},
                                      c["max_norm"].get<double>());
    EXPECT_NEAR(total, c["total"].get<double>(), 1e-12 * c["total"].get<double>());
    EXPECT_LE(rel_error(a, c["clipped"][0].get<std::vector<double>>()), 1e-13);
    EXPECT_LE(rel_error(b, c["clipped"][1].get<std::vector<double>>()), 1e-13);
  }
}

// As torch.nn.utils.clip_grad_norm_ (error_if_nonfinite=False): a NaN norm gives a NaN
// coefficient (torch.clamp keeps NaN), so every gradient becomes NaN; an infinite one zeroes
// the finite gradients (0 · inf = NaN where a gradient is infinite).
TEST(ClipGradNorm, NonFiniteNormsAsPyTorch) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> a = {3, nan}, b = {4, 0};
  auto views = [&] {
    return std::vector<TensorView<double, 1>>{TensorView<double, 1>(a.data(), {2}),
                                              TensorView<double, 1>(b.data(), {2})};
  };
  EXPECT_TRUE(std::isnan(optim::clip_grad_norm<double>(views(), 1.0)));
  for (double g : {a[0], a[1], b[0], b[1]})
    EXPECT_TRUE(std::isnan(g)) << g;
  a = {3, inf}, b = {4, 0};
  EXPECT_EQ(optim::clip_grad_norm<double>(views(), 1.0), inf);
  EXPECT_EQ(a[0], 0.0);
  EXPECT_TRUE(std::isnan(a[1]));
  EXPECT_EQ(b, std::vector<double>({0.0, 0.0}));
}

}  // namespace
}  // namespace ssmkit
