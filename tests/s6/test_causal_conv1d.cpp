// The causal conv1d: sequence against a direct fp64 loop (every option, both layouts, every
// storage type) and against PyTorch's F.conv1d(groups=C) goldens; the one-token step against
// the sequence; split sequences with the state carried in place; argument checks.
#include "golden.hpp"

#include <ssmkit/kernels/cpu/causal_conv1d.hpp>

#include <cmath>

namespace ssmkit {
namespace {

using testing::fill_random;
using testing::rel_error;

struct ConvShape {
  Index batch = 2, L = 23, C = 70, K = 4;
  bool bias = true, silu = true, initial = true, final_state = true, channel_major = false;
};

template <class T>
struct ConvCase {
  ConvShape s;
  HostTensor<T, 3> x, out;  // (B, L, C) or (B, C, L)
  HostTensor<T, 2> weight;
  HostTensor<T, 1> bias;
  HostTensor<T, 3> initial, final_state;

  ConvCase(const ConvShape& shape, std::uint64_t seed) : s(shape) {
    const Shape<3> act =
        s.channel_major ? Shape<3>{s.batch, s.C, s.L} : Shape<3>{s.batch, s.L, s.C};
    x = HostTensor<T, 3>(act), out = HostTensor<T, 3>(act);
    weight = HostTensor<T, 2>({s.C, s.K}), bias = HostTensor<T, 1>({s.C});
    initial = HostTensor<T, 3>({s.batch, s.C, s.K - 1});
    final_state = HostTensor<T, 3>({s.batch, s.C, s.K - 1});
    fill_random(x, seed), fill_random(weight, seed + 1), fill_random(bias, seed + 2);
    fill_random(initial, seed + 3);
    poison();
  }
  void poison() {
    out.fill(static_cast<T>(NAN));
    final_state.fill(static_cast<T>(NAN));
  }
  TensorView<T, 3> act(HostTensor<T, 3>& t) const {
    return s.channel_major ? t.view().transposed(1, 2) : t.view();
  }
  CausalConv1dParams<T> params() {
    CausalConv1dParams<T> p;
    p.x = act(x), p.weight = weight, p.out = act(out), p.silu = s.silu;
    if (s.bias)
      p.bias = bias;
    if (s.initial)
      p.initial_state = initial;
    if (s.final_state)
      p.final_state = final_state;
    return p;
  }
};

/// The formula, looped directly in double over the logical views.
template <class T>
void direct_conv(const CausalConv1dParams<T>& p, std::vector<double>* out,
                 std::vector<double>* state) {
  const Index batch = p.batch(), L = p.length(), C = p.channels(), K = p.kernel_size();
  out->assign(static_cast<std::size_t>(batch * L * C), 0.0);
  state->assign(static_cast<std::size_t>(batch * C * (K - 1)), 0.0);
  for (Index b = 0; b < batch; ++b)
    for (Index c = 0; c < C; ++c) {
      const auto input = [&](Index s) -> double {  // input at time s, s < 0 from the state
        if (s >= 0)
          return static_cast<double>(p.x(b, s, c));
        return p.initial_state.absent() ? 0.0
                                        : static_cast<double>(p.initial_state(b, c, s + K - 1));
      };
      for (Index t = 0; t < L; ++t) {
        double acc = p.bias.absent() ? 0.0 : static_cast<double>(p.bias(c));
        for (Index k = 0; k < K; ++k)
          acc += static_cast<double>(p.weight(c, k)) * input(t - (K - 1) + k);
        if (p.silu)
          acc = acc / (1 + std::exp(-acc));
        (*out)[static_cast<std::size_t>((b * L + t) * C + c)] = acc;
      }
      for (Index j = 0; j < K - 1; ++j)
        (*state)[static_cast<std::size_t>((b * C + c) * (K - 1) + j)] = input(L - (K - 1) + j);
    }
}

/// out in logical (B, L, C) order, whatever its layout.
template <class T>
std::vector<double> logical(const TensorView<T, 3>& v) {
  std::vector<double> r;
  for (Index b = 0; b < v.size(0); ++b)
    for (Index t = 0; t < v.size(1); ++t)
      for (Index c = 0; c < v.size(2); ++c)
        r.push_back(static_cast<double>(v(b, t, c)));
  return r;
}

template <class T>
void check_against_direct(double tol) {
  int seed = 0;
  struct Size {
    Index L, C;
  };
  // L = 150 spans two time tiles; C = 130 two full channel blocks and a tail.
  for (Index K : {1, 2, 4, 5})
    for (const Size& size : {Size{1, 5}, Size{3, 64}, Size{150, 130}})
      for (int mask = 0; mask < 16; ++mask)
        for (bool channel_major : {false, true}) {
          if (mask != 0 && mask != 15 && size.C != 130)
            continue;  // every option mask on the largest shape, the extremes elsewhere
          const Index L = size.L, C = size.C;
          ConvShape s;
          s.K = K, s.L = L, s.C = C, s.bias = mask & 1, s.silu = mask & 2;
          s.initial = mask & 4, s.final_state = mask & 8, s.channel_major = channel_major;
          ConvCase<T> c(s, static_cast<std::uint64_t>(++seed));
          const auto p = c.params();
          cpu::causal_conv1d(p);
          std::vector<double> ref_out, ref_state;
          direct_conv(p, &ref_out, &ref_state);
          SCOPED_TRACE(::testing::Message() << "K " << K << " L " << L << " C " << C << " mask "
                                            << mask << " channel-major " << channel_major);
          const auto got = logical(p.out);
          EXPECT_LE(rel_error(got.data(), ref_out.data(), static_cast<Index>(got.size())), tol);
          if (s.final_state && K > 1) {
            EXPECT_EQ(rel_error(c.final_state.data(), ref_state.data(), c.final_state.numel()),
                      0.0);  // a copy of inputs: exact
          }
        }
}

TEST(CausalConv1d, FloatMatchesDirectLoop) {
  check_against_direct<float>(1e-6);
}
TEST(CausalConv1d, DoubleMatchesDirectLoop) {
  check_against_direct<double>(1e-14);
}
// The outputs' rounding to half is at most 2^-11 in norm (measured 2.1e-4).
TEST(CausalConv1d, HalfMatchesDirectLoop) {
  check_against_direct<Eigen::half>(2e-3);
}
TEST(CausalConv1d, BFloat16MatchesDirectLoop) {
  check_against_direct<Eigen::bfloat16>(1e-2);
}

class ConvGolden : public ::testing::TestWithParam<const char*> {};

// The golden tensors are in torch's (B, C, L) layout: read channel-major and token-major copies.
TEST_P(ConvGolden, MatchesTorchConv1d) {
  const testing::Golden g = testing::load_golden(GetParam());
  auto x = g.tensor<double, 3>("x");
  auto weight = g.tensor<double, 2>("weight");
  const Index batch = x.size(0), C = x.size(1), L = x.size(2), K = weight.size(1);
  HostTensor<double, 1> bias;
  HostTensor<double, 3> initial;
  for (bool channel_major : {true, false}) {
    HostTensor<double, 3> x_tm({batch, L, C}), out({batch, L, C}), out_cm({batch, C, L});
    HostTensor<double, 3> final_state({batch, C, K - 1});
    for (Index b = 0; b < batch; ++b)
      for (Index c = 0; c < C; ++c)
        for (Index t = 0; t < L; ++t)
          x_tm(b, t, c) = x(b, c, t);
    out.fill(NAN), out_cm.fill(NAN), final_state.fill(NAN);
    CausalConv1dParams<double> p;
    p.x = channel_major ? x.view().transposed(1, 2) : x_tm.view();
    p.out = channel_major ? out_cm.view().transposed(1, 2) : out.view();
    p.weight = weight, p.final_state = final_state, p.silu = g.options.at("silu") != 0;
    if (g.has("bias"))
      bias = g.tensor<double, 1>("bias"), p.bias = bias;
    if (g.has("initial_state"))
      initial = g.tensor<double, 3>("initial_state"), p.initial_state = initial;
    cpu::causal_conv1d(p);
    const auto got = logical(p.out);
    auto want = g.tensor<double, 3>("out");
    const auto want_logical = logical(want.view().transposed(1, 2));
    EXPECT_LE(rel_error(got.data(), want_logical.data(), static_cast<Index>(got.size())), 1e-14);
    EXPECT_LE(rel_error(final_state.data(), g.values.at("final_state").data(), final_state.numel()),
              0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(S6, ConvGolden,
                         ::testing::Values("conv_k4_bias_silu_state", "conv_k3_plain",
                                           "conv_k1_bias"));

// Decoding token by token from the initial state (output written over the input token)
// reproduces the sequence's outputs and its final state.
TEST(CausalConv1dUpdate, TokenByTokenEqualsSequence) {
  for (Index K : {1, 2, 4})
    for (bool silu : {false, true}) {
      ConvShape s;
      s.K = K, s.silu = silu, s.L = 9;
      ConvCase<float> c(s, static_cast<std::uint64_t>(K * 10 + silu));
      const auto p = c.params();
      cpu::causal_conv1d(p);
      HostTensor<float, 3> state = c.initial.clone();
      HostTensor<float, 2> token({s.batch, s.C});
      for (Index t = 0; t < s.L; ++t) {
        for (Index b = 0; b < s.batch; ++b)
          for (Index ch = 0; ch < s.C; ++ch)
            token(b, ch) = c.x(b, t, ch);
        CausalConv1dStepParams<float> step;
        step.x = token, step.weight = c.weight, step.bias = c.bias, step.state = state;
        step.out = token, step.silu = silu;
        cpu::causal_conv1d_update(step);
        for (Index b = 0; b < s.batch; ++b)
          for (Index ch = 0; ch < s.C; ++ch)
            ASSERT_NEAR(token(b, ch), c.out(b, t, ch), 1e-6 * (1 + std::abs(c.out(b, t, ch))))
                << "K " << K << " t " << t;
      }
      EXPECT_EQ(rel_error(state.data(), c.final_state.data(), state.numel()), 0.0);
    }
}

// Two calls, the first one's final state fed in place as the second's initial state, equal one.
TEST(CausalConv1d, SplitSequenceCarriesStateInPlace) {
  ConvShape s;
  s.L = 40;
  ConvCase<float> c(s, 77);
  cpu::causal_conv1d(c.params());
  const std::vector<float> whole(c.out.data(), c.out.data() + c.out.numel());
  c.poison();
  HostTensor<float, 3> carry = c.initial.clone();
  for (auto [t0, len] : {std::pair<Index, Index>{0, 2}, {2, 38}}) {
    auto p = c.params();
    p.x = TensorView<const float, 3>::unchecked(c.x.data() + t0 * s.C, {s.batch, len, s.C},
                                                c.x.view().strides(), Device::CPU);
    p.out = TensorView<float, 3>::unchecked(c.out.data() + t0 * s.C, {s.batch, len, s.C},
                                            c.out.view().strides(), Device::CPU);
    p.initial_state = carry, p.final_state = carry;
    cpu::causal_conv1d(p);
  }
  EXPECT_LE(rel_error(c.out.data(), whole.data(), c.out.numel()), 1e-7);
}

TEST(CausalConv1d, RejectsBadArguments) {
  ConvCase<float> c(ConvShape{}, 5);
  const auto good = c.params();
  HostTensor<float, 2> w_wrong({69, 4});
  HostTensor<float, 1> b_wrong({71});
  HostTensor<float, 3> s_wrong({2, 70, 4}), out_wrong({2, 22, 70});
  auto p = good;
  p.weight = w_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "weight", "shape", "(70, 4)", "(69, 4)");
  p = good, p.bias = b_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "bias", "shape", "(70)", "(71)");
  p = good, p.initial_state = s_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "initial_state", "(2, 70, 3)", "(2, 70, 4)");
  p = good, p.final_state = s_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "final_state", "shape");
  p = good, p.out = out_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "out", "shape");
  p = good, p.weight = TensorView<const float, 2>(c.weight.data(), {70, 0}, "w");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "weight", "kernel size", ">= 1");
  p = good, p.x = TensorView<const float, 3>(c.x.data(), {2, 23, 70}, "x", Device::CUDA);
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "x", "device", "cpu", "cuda");

  HostTensor<float, 2> token({2, 70}), token_out({2, 71});
  CausalConv1dStepParams<float> step;
  step.x = token, step.weight = c.weight, step.state = c.initial, step.out = token;
  step.state = s_wrong;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_update(step), "state", "shape", "(2, 70, 3)");
  step.state = c.initial, step.out = token_out;
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_update(step), "out", "shape", "(2, 70)", "(2, 71)");
}

// out must not overlap x, which is read after earlier outputs are written: the same memory and a
// shift by one channel are both rejected, naming out and x.
TEST(CausalConv1d, RejectsOutOverlappingX) {
  ConvCase<float> c(ConvShape{}, 6);
  auto p = c.params();
  p.out = c.x.view();
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "out", "x", "overlap");
  HostTensor<float, 3> wide({2, 23, 71});
  p.x = TensorView<const float, 3>(wide.data(), {2, 23, 70}, {23 * 71, 71, 1});
  p.out = TensorView<float, 3>(wide.data() + 1, {2, 23, 70}, {23 * 71, 71, 1});
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "out", "x", "overlap");
}

// The outputs must not overlap the other inputs either: final_state over out's last row once
// corrupted out silently (errors up to 1.0, C = 8, K = 4, L = 10), and a step's out one channel
// after x gave errors up to 0.70 in out and 1.39 in the state. final_state may be exactly
// initial_state and a step's out exactly x.
TEST(CausalConv1d, RejectsOutputsOverlappingOtherInputsOrEachOther) {
  ConvCase<float> c(ConvShape{}, 7);  // batch 2, L 23, C 70, K 4
  const auto good = c.params();
  std::vector<float> mem(2 * 23 * 70 + 2 * 70 * 3 + 8);
  const Shape<3> seq{2, 23, 70}, state{2, 70, 3};
  auto p = good;
  p.out = TensorView<float, 3>(mem.data(), seq, "out");
  p.final_state = TensorView<float, 3>(mem.data() + 22 * 70, state, "final_state");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "final_state", "disjoint from out");
  p = good, p.out = TensorView<float, 3>(mem.data(), seq, "out");
  p.weight = TensorView<const float, 2>(mem.data() + 5, {70, 4}, "weight");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "out", "disjoint from weight");
  p = good, p.final_state = TensorView<float, 3>(mem.data(), state, "final_state");
  p.x = TensorView<const float, 3>(mem.data() + 1, seq, "x");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "final_state", "disjoint from x");
  p = good, p.final_state = TensorView<float, 3>(mem.data(), state, "final_state");
  p.initial_state = TensorView<const float, 3>(mem.data() + 1, state, "initial_state");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d(p), "final_state", "disjoint from initial_state");

  HostTensor<float, 3> conv_state({2, 70, 3});
  CausalConv1dStepParams<float> step;
  step.weight = c.weight, step.state = conv_state;
  step.x = TensorView<const float, 2>(mem.data(), {2, 70}, "x");
  step.out = TensorView<float, 2>(mem.data() + 1, {2, 70}, "out");  // one channel after x
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_update(step), "out", "disjoint from x");
  step.out = TensorView<float, 2>(conv_state.data(), {2, 70}, "out");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_update(step), "out", "disjoint from state");
  step.out = TensorView<float, 2>(mem.data(), {2, 70}, "out");  // exactly x: in place
  step.state = TensorView<float, 3>(mem.data() + 140, state, "state");
  step.bias = TensorView<const float, 1>(mem.data() + 140 + 419, {70}, "bias");
  SSMKIT_EXPECT_ERROR(cpu::causal_conv1d_update(step), "state", "disjoint from bias");
  step.state = conv_state, step.bias = {};
  cpu::causal_conv1d_update(step);
}

}  // namespace
}  // namespace ssmkit
