// MambaBlock: forward against transformers' MambaMixer goldens, step() and chunked prefill against
// forward(), odd layouts, and argument checks.
#include "nn_testing.hpp"

#include <ssmkit/nn/mamba_block.hpp>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

template <class T>
void check_golden(const std::string& name, double tol) {
  MixerGolden<T> g(name);
  const nn::MambaBlock<T> block(g.config, g.copy_weights());
  const auto x = cast<T>(g.x);
  HostTensor<T, 3> out(g.out.shape());
  poison(out);
  block.forward(x.view(), out.view());
  const double err = rel_error(out.data(), g.out.data(), out.numel());
  EXPECT_LE(err, tol) << name;
}

TEST(MambaBlock, MatchesMambaMixerGoldenDouble) {
  check_golden<double>("n64", 1e-5);
  check_golden<double>("bias", 1e-5);
}

TEST(MambaBlock, MatchesMambaMixerGoldenFloat) {
  check_golden<float>("n64", 1e-5);
  check_golden<float>("bias", 1e-5);
}

// The golden configs carry the options (d_state 64, biases, d_conv 3); these tests need them too.
template <class T>
struct StepCase {
  MixerGolden<T> g;
  nn::MambaBlock<T> block;
  HostTensor<T, 3> x, full;

  StepCase(const std::string& name, Index batch, Index L, std::uint64_t seed)
      : g(name),
        block(g.config, g.copy_weights()),
        x({batch, L, g.config.d_model}),
        full({batch, L, g.config.d_model}) {
    fill_random(x, seed, -2, 2);
    poison(full);
    block.forward(x.view(), full.view());
  }
};

class MambaBlockModes : public ::testing::TestWithParam<const char*> {};

TEST_P(MambaBlockModes, StepEqualsForwardAtEveryPosition) {
  StepCase<float> c(GetParam(), 3, 17, 101);
  const Index batch = 3, L = 17, dm = c.g.config.d_model;
  nn::MambaBlockState<float> state(c.g.config, batch);
  nn::MambaBlock<float>::Workspace ws;
  HostTensor<float, 2> xt({batch, dm}), yt({batch, dm});
  for (Index t = 0; t < L; ++t) {
    for (Index b = 0; b < batch; ++b)
      for (Index f = 0; f < dm; ++f)
        xt(b, f) = c.x(b, t, f);
    poison(yt);
    c.block.step(xt.view(), yt.view(), state.view(), ws);
    HostTensor<float, 2> ref({batch, dm});
    for (Index b = 0; b < batch; ++b)
      for (Index f = 0; f < dm; ++f)
        ref(b, f) = c.full(b, t, f);
    EXPECT_LE(rel_error(yt.data(), ref.data(), yt.numel()), 1e-5) << "position " << t;
  }
}

TEST_P(MambaBlockModes, PrefillInChunksThenStepEqualsForward) {
  StepCase<double> c(GetParam(), 2, 23, 202);
  const Index batch = 2, L = 23, dm = c.g.config.d_model;
  nn::MambaBlockState<double> state(c.g.config, batch);
  nn::MambaBlock<double>::Workspace ws;
  HostTensor<double, 3> out({batch, L, dm});
  poison(out);
  // Chunks of 1, 6 and 11 tokens through forward() with the state, then steps to the end.
  const Index cuts[] = {0, 1, 7, 18};
  for (int k = 0; k < 3; ++k) {
    const Index t0 = cuts[k], n = cuts[k + 1] - t0;
    const auto xs = TensorView<const double, 3>::unchecked(c.x.data() + t0 * dm, {batch, n, dm},
                                                           {L * dm, dm, 1}, Device::CPU);
    const auto ys = TensorView<double, 3>::unchecked(out.data() + t0 * dm, {batch, n, dm},
                                                     {L * dm, dm, 1}, Device::CPU);
    c.block.forward(xs, ys, ws, state.view());
  }
  for (Index t = cuts[3]; t < L; ++t) {
    const auto xs = TensorView<const double, 2>::unchecked(c.x.data() + t * dm, {batch, dm},
                                                           {L * dm, 1}, Device::CPU);
    const auto ys = TensorView<double, 2>::unchecked(out.data() + t * dm, {batch, dm}, {L * dm, 1},
                                                     Device::CPU);
    c.block.step(xs, ys, state.view(), ws);
  }
  EXPECT_LE(rel_error(out.data(), c.full.data(), out.numel()), 1e-12);
}

TEST_P(MambaBlockModes, StateOfOneSequenceIsIndependentOfTheOthers) {
  // Prefilling sequence 1 alone into its slot of a batch-3 state gives the same state as
  // prefilling the whole batch.
  StepCase<double> c(GetParam(), 3, 9, 303);
  const Index L = 9, dm = c.g.config.d_model;
  nn::MambaBlockState<double> whole(c.g.config, 3), single(c.g.config, 3);
  HostTensor<double, 3> out({3, L, dm});
  c.block.forward(c.x.view(), out.view(), whole.view());
  HostTensor<double, 3> out1({1, L, dm});
  poison(out1);
  c.block.forward(TensorView<const double, 3>(c.x.view()[1].data(), {1, L, dm}), out1.view(),
                  single.view(1, 1));
  EXPECT_LE(rel_error(out1.data(), out.view()[1].data(), L * dm), 1e-14);
  const Index per_seq = c.g.config.d_inner * c.g.config.d_state;
  EXPECT_LE(rel_error(single.ssm().data() + per_seq, whole.ssm().data() + per_seq, per_seq), 1e-14);
  for (Index i = 0; i < per_seq; ++i)
    ASSERT_EQ(single.ssm().data()[i], 0.0) << "sequence 0 was touched";
}

INSTANTIATE_TEST_SUITE_P(Goldens, MambaBlockModes, ::testing::Values("n64", "bias"));

// d_conv = 1 keeps no conv inputs, so its decoding state has an empty conv part. The reference is
// the golden block with every tap but the newest zeroed, whose conv runs with a state; prefill
// then steps through the d_conv = 1 state must give the same outputs.
TEST(MambaBlock, OneTapConvForwardsAndDecodes) {
  MixerGolden<double> g("bias");
  const Index K = g.config.d_conv, di = g.config.d_inner, dm = g.config.d_model;
  ASSERT_GT(K, 1);
  auto one_tap = g.copy_weights(), zeroed = g.copy_weights();
  one_tap.conv1d_weight = HostTensor<double, 2>({di, 1});
  for (Index d = 0; d < di; ++d) {
    one_tap.conv1d_weight(d, 0) = g.weights.conv1d_weight(d, K - 1);
    for (Index k = 0; k < K - 1; ++k)
      zeroed.conv1d_weight(d, k) = 0;
  }
  nn::MambaBlockConfig c1 = g.config;
  c1.d_conv = 1;
  const nn::MambaBlock<double> block(c1, std::move(one_tap)),
      ref_block(g.config, std::move(zeroed));
  const Index batch = 2, L = 9;
  HostTensor<double, 3> x({batch, L, dm}), ref({batch, L, dm}), out({batch, L, dm});
  fill_random(x, 404, -2, 2);
  ref_block.forward(x.view(), ref.view());
  poison(out);
  block.forward(x.view(), out.view());
  EXPECT_LE(rel_error(out.data(), ref.data(), out.numel()), 1e-13);

  nn::MambaBlockState<double> state(c1, batch);
  nn::MambaBlock<double>::Workspace ws;
  poison(out);
  const Index prefill = 4;
  block.forward(TensorView<const double, 3>::unchecked(x.data(), {batch, prefill, dm},
                                                       {L * dm, dm, 1}, Device::CPU),
                TensorView<double, 3>::unchecked(out.data(), {batch, prefill, dm}, {L * dm, dm, 1},
                                                 Device::CPU),
                ws, state.view());
  for (Index t = prefill; t < L; ++t)
    block.step(TensorView<const double, 2>::unchecked(x.data() + t * dm, {batch, dm}, {L * dm, 1},
                                                      Device::CPU),
               TensorView<double, 2>::unchecked(out.data() + t * dm, {batch, dm}, {L * dm, 1},
                                                Device::CPU),
               state.view(), ws);
  EXPECT_LE(rel_error(out.data(), ref.data(), out.numel()), 1e-12);
  // Sequence 1 alone through its slot of the state: the empty conv view of a later row.
  state.reset();
  HostTensor<double, 3> out1({1, L, dm});
  poison(out1);
  block.forward(TensorView<const double, 3>(x.view()[1].data(), {1, L, dm}), out1.view(), ws,
                state.view(1, 1));
  EXPECT_LE(rel_error(out1.data(), ref.view()[1].data(), L * dm), 1e-13);
}

TEST(MambaBlock, UnevenlySpacedBatchAndInPlaceOutput) {
  // Sequences 5 rows apart in a padded buffer (not one flat matrix), output written over x.
  MixerGolden<double> g("bias");
  const nn::MambaBlock<double> block(g.config, g.copy_weights());
  const Index batch = g.x.size(0), L = g.x.size(1), dm = g.config.d_model;
  HostTensor<double, 3> padded({batch, L + 5, dm});
  fill_random(padded, 7);
  for (Index b = 0; b < batch; ++b)
    for (Index t = 0; t < L; ++t)
      for (Index f = 0; f < dm; ++f)
        padded(b, t, f) = g.x(b, t, f);
  const auto v = TensorView<double, 3>(padded.data(), {batch, L, dm}, {(L + 5) * dm, dm, 1});
  block.forward(v, v);
  HostTensor<double, 3> got({batch, L, dm});
  for (Index b = 0; b < batch; ++b)
    for (Index t = 0; t < L; ++t)
      for (Index f = 0; f < dm; ++f)
        got(b, t, f) = padded(b, t, f);
  EXPECT_LE(rel_error(got.data(), g.out.data(), got.numel()), 1e-5);
}

TEST(MambaBlock, RejectsBadWeightsAndInputs) {
  MixerGolden<float> g("bias");
  const auto& c = g.config;
  {
    auto w = g.copy_weights();
    w.x_proj_weight = HostTensor<float, 2>({c.dt_rank + c.d_state, c.d_inner});
    SSMKIT_EXPECT_ERROR(nn::MambaBlock<float>(c, std::move(w)), "x_proj.weight", "shape");
  }
  {
    auto w = g.copy_weights();
    w.in_proj_bias = HostTensor<float, 1>({c.d_inner});
    SSMKIT_EXPECT_ERROR(nn::MambaBlock<float>(c, std::move(w)), "in_proj.bias", "shape");
  }
  {
    auto w = g.copy_weights();
    w.D.data()[3] = std::numeric_limits<float>::quiet_NaN();
    SSMKIT_EXPECT_ERROR(nn::MambaBlock<float>(c, std::move(w)), "D", "element 3", "finite");
  }
  {
    auto w = g.copy_weights();
    w.A_log.data()[5] = std::numeric_limits<float>::infinity();
    SSMKIT_EXPECT_ERROR(nn::MambaBlock<float>(c, std::move(w)), "A_log", "element 5");
  }
  {
    auto bad = c;
    bad.d_state = 300;
    SSMKIT_EXPECT_ERROR(nn::MambaBlock<float>(bad, g.copy_weights()), "config.d_state");
  }
  const nn::MambaBlock<float> block(c, g.copy_weights());
  HostTensor<float, 3> x({2, 4, c.d_model + 1}), out({2, 4, c.d_model});
  fill_random(x, 1);
  SSMKIT_EXPECT_ERROR(block.forward(x.view(), out.view()), "x", "shape");
  HostTensor<float, 3> x2({2, 4, c.d_model}), out2({2, 5, c.d_model});
  fill_random(x2, 2);
  SSMKIT_EXPECT_ERROR(block.forward(x2.view(), out2.view()), "out", "shape");
  const TensorView<float, 3> out_cuda(out.data(), out.shape(), "out", Device::CUDA);
  SSMKIT_EXPECT_ERROR(block.forward(x2.view(), out_cuda), "out", "device", "cpu", "cuda");
  nn::MambaBlockState<float> state(c, 3);
  SSMKIT_EXPECT_ERROR(block.forward(x2.view(), out.view(), state.view()), "state.conv", "shape");
  nn::MambaBlock<float>::Workspace ws;
  HostTensor<float, 2> xt({2, c.d_model}), yt({2, c.d_model});
  fill_random(xt, 3);
  SSMKIT_EXPECT_ERROR(block.step(xt.view(), yt.view(), {}, ws), "state", "presence");
  nn::MambaBlockState<float> state2(c, 2);
  const TensorView<float, 2> yt_cuda(yt.data(), yt.shape(), "out", Device::CUDA);
  SSMKIT_EXPECT_ERROR(block.step(xt.view(), yt_cuda, state2.view(), ws), "out", "device", "cpu",
                      "cuda");
  SSMKIT_EXPECT_ERROR(state.view(2, 2), "state sequences");
}

}  // namespace
