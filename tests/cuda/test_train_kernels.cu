// The CUDA kernels of training against the CPU versions run in double on the same stored values:
// the causal conv1d backward, the RMSNorm backward, cross-entropy, the embedding backward, AdamW
// and gradient clipping; strided rows, the accumulate flags, in-place cross-entropy, bit-identical
// reruns of the reductions, and one bad argument each.
#include "cuda_testing.hpp"

#include <ssmkit/kernels/cpu/causal_conv1d_backward.hpp>
#include <ssmkit/kernels/cuda/causal_conv1d_backward.cuh>
#include <ssmkit/kernels/cuda/cross_entropy.cuh>
#include <ssmkit/kernels/cuda/embedding_backward.cuh>
#include <ssmkit/kernels/cuda/rms_norm_backward.cuh>
#include <ssmkit/nn/grad/cross_entropy.hpp>
#include <ssmkit/nn/grad/embedding_backward.hpp>
#include <ssmkit/nn/grad/rms_norm_backward.hpp>
#include <ssmkit/optim/adamw.hpp>
#include <ssmkit/optim/clip_grad_norm.hpp>
#include <ssmkit/optim/cuda/adamw.cuh>
#include <ssmkit/optim/cuda/clip_grad_norm.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace ssmkit::testing {
namespace {

/// A (rows, cols) float matrix on the device with row stride ld >= cols (NaN in the padding),
/// and its values in double, row-major without padding.
struct Rows {
  Index rows, cols, ld;
  std::vector<float> host;
  std::vector<double> exact;
  cuda::DeviceBuffer<float> dev;

  Rows(Index r, Index c, Index ld_, std::uint64_t seed, double lo, double hi, cudaStream_t s)
      : rows(r), cols(c), ld(ld_), host(static_cast<std::size_t>(r * ld_)), dev(r * ld_) {
    std::fill(host.begin(), host.end(), std::numeric_limits<float>::quiet_NaN());
    fill(seed, lo, hi, s);
  }

  /// Fresh values, uniform in [lo, hi), on the host and the device.
  void fill(std::uint64_t seed, double lo, double hi, cudaStream_t s) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    exact.clear();
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j) {
        const float v = static_cast<float>(dist(rng));
        host[static_cast<std::size_t>(i * ld + j)] = v;
        exact.push_back(v);
      }
    dev.copy_from_host_async(host.data(), dev.size(), s);
  }

  TensorView<float, 2> view() { return dev.view<2>({rows, cols}, {ld, 1}); }
  TensorView<double, 2> exact_view() { return TensorView<double, 2>(exact.data(), {rows, cols}); }
  void poison(cudaStream_t s) { dev.fill_bytes_async(0xFF, s); }

  /// The device values row-major without padding (synchronises the stream).
  std::vector<double> download(cudaStream_t s) {
    std::vector<float> all(host.size());
    dev.copy_to_host_async(all.data(), dev.size(), s);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<double> out;
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j)
        out.push_back(all[static_cast<std::size_t>(i * ld + j)]);
    return out;
  }
};

/// The device copy of `t`'s memory as raw floats (bit comparisons).
template <class T, int R>
std::vector<float> raw(DualTensor<T, R>& t, cudaStream_t s) {
  std::vector<float> out(t.host.size());
  t.dev.copy_to_host_async(out.data(), t.dev.size(), s);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---------------------------------------------------------------------------------------------
// causal_conv1d_backward

struct ConvBwdCase {
  Index batch = 2, L = 150, C = 70, K = 4;
  bool bias = true, silu = true, init = true;
  bool channel_major = false;
  bool wide_rows = false;  // x and dx the first half of (batch, L, 2C) rows, as in a MambaBlock
  std::uint64_t seed = 1;

  std::string name() const {
    return "batch=" + std::to_string(batch) + " L=" + std::to_string(L) +
           " C=" + std::to_string(C) + " K=" + std::to_string(K) +
           (channel_major ? " channel-major" : "") + (wide_rows ? " wide rows" : "") +
           (bias ? " bias" : "") + (silu ? " silu" : "") + (init ? " init" : "");
  }
};

void check_conv_backward(const ConvBwdCase& c, double tol) {
  SCOPED_TRACE(c.name());
  TestStream stream;
  const cudaStream_t s = stream.s;
  const std::array<int, 3> order =
      c.channel_major ? std::array<int, 3>{0, 2, 1} : std::array<int, 3>{0, 1, 2};
  const Index width = c.wide_rows ? 2 * c.C : c.C;
  const Shape<3> acts{c.batch, c.L, c.C}, wide{c.batch, c.L, width};
  const Shape<3> states{c.batch, c.C, c.K - 1};
  std::uint64_t seed = c.seed * 100;
  DualTensor<float, 3> x(wide, order, ++seed, -2, 2, s), dx(wide, order, ++seed, -1, 1, s);
  DualTensor<float, 3> dout(acts, order, ++seed, -1, 1, s);
  DualTensor<float, 2> w({c.C, c.K}, {0, 1}, ++seed, -1, 1, s);
  DualTensor<float, 1> bias({c.C}, {0}, ++seed, -1, 1, s);
  DualTensor<float, 3> init(states, {0, 1, 2}, ++seed, -2, 2, s);
  DualTensor<float, 2> dw({c.C, c.K}, {0, 1}, ++seed, -1, 1, s);
  DualTensor<float, 1> dbias({c.C}, {0}, ++seed, -1, 1, s);
  DualTensor<float, 3> dinit(states, {0, 1, 2}, ++seed, -1, 1, s);

  // The first C channels of the (possibly wide) x and dx.
  const auto half = [&](DualTensor<float, 3>& t) { return t.dev.view<3>(acts, t.strides); };
  std::vector<double> x_exact;
  for (Index b = 0; b < c.batch; ++b)
    for (Index t = 0; t < c.L; ++t)
      for (Index ch = 0; ch < c.C; ++ch)
        x_exact.push_back(x.exact[static_cast<std::size_t>((b * c.L + t) * width + ch)]);

  CausalConv1dBackwardParams<double, double> ref;
  std::vector<double> r_dx(static_cast<std::size_t>(c.batch * c.L * c.C));
  std::vector<double> r_dw(static_cast<std::size_t>(c.C * c.K)), r_dbias(c.C);
  std::vector<double> r_dinit(init.exact.size());
  ref.x = TensorView<double, 3>(x_exact.data(), acts);
  ref.weight = w.exact_view();
  ref.dout = dout.exact_view();
  ref.dx = TensorView<double, 3>(r_dx.data(), acts);
  ref.dweight = TensorView<double, 2>(r_dw.data(), {c.C, c.K});
  CausalConv1dBackwardParams<float, float> p;
  p.x = half(x);
  p.weight = w.device_view();
  p.dout = dout.device_view();
  p.dx = half(dx);
  p.dweight = dw.device_view();
  if (c.bias) {
    ref.bias = bias.exact_view(), p.bias = bias.device_view();
    ref.dbias = TensorView<double, 1>(r_dbias.data(), {c.C}), p.dbias = dbias.device_view();
  }
  if (c.init) {
    ref.initial_state = init.exact_view(), p.initial_state = init.device_view();
    ref.dinitial_state = TensorView<double, 3>(r_dinit.data(), states);
    p.dinitial_state = dinit.device_view();
  }
  ref.silu = p.silu = c.silu;
  cpu::causal_conv1d_backward(ref);

  const std::vector<double> dx_before = dx.download(s);
  dw.poison(s), dbias.poison(s), dinit.poison(s);
  if (!c.wide_rows)  // else dx keeps its random values: the second half of each row must survive
    dx.poison(s);
  cuda::causal_conv1d_backward(p, s);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  const std::vector<double> dx_all = dx.download(s);
  std::vector<double> dx_half;
  for (std::size_t i = 0; i < dx_all.size(); ++i) {
    if (static_cast<Index>(i) % width < c.C)
      dx_half.push_back(dx_all[i]);
    else
      EXPECT_EQ(dx_all[i], dx_before[i]) << "dx element " << i << " outside the view";
  }
  EXPECT_LE(rel_error(dx_half, r_dx), tol) << "dx";
  EXPECT_LE(rel_error(dw.download(s), r_dw), tol) << "dweight";
  if (c.bias)
    EXPECT_LE(rel_error(dbias.download(s), r_dbias), tol) << "dbias";
  if (c.init)
    EXPECT_LE(rel_error(dinit.download(s), r_dinit), tol) << "dinitial_state";

  // A second run (workspace from the pool again) gives the same bits.
  const std::vector<float> dw_first = raw(dw, s), dbias_first = raw(dbias, s);
  dw.poison(s), dbias.poison(s);
  cuda::causal_conv1d_backward(p, s);
  EXPECT_TRUE(same_bits(raw(dw, s), dw_first)) << "dweight differs between runs";
  if (c.bias)
    EXPECT_TRUE(same_bits(raw(dbias, s), dbias_first)) << "dbias differs between runs";
}

TEST(CudaTrainKernels, ConvBackwardMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  // L = 150: three tiles of 64 steps, the last partial; C = 70: a partial tile of channels.
  for (const bool cm : {false, true}) {
    ConvBwdCase c;
    c.channel_major = cm;
    c.seed = cm ? 2 : 1;
    check_conv_backward(c, 1e-5);
  }
  ConvBwdCase wide;
  wide.wide_rows = true;
  wide.seed = 3;
  check_conv_backward(wide, 1e-5);
  ConvBwdCase many;  // 33 tiles of partial sums: several per warp of the second pass
  many.batch = 3, many.L = 700, many.C = 40, many.seed = 4;
  check_conv_backward(many, 1e-5);
}

TEST(CudaTrainKernels, ConvBackwardOptionSubsetsAndShortSequences) {
  SSMKIT_REQUIRE_GPU();
  for (int mask = 0; mask < 8; ++mask) {
    ConvBwdCase c;
    c.bias = !(mask & 1), c.silu = !(mask & 2), c.init = !(mask & 4);
    c.L = 67, c.C = 33, c.seed = 10 + static_cast<std::uint64_t>(mask);
    check_conv_backward(c, 1e-5);
  }
  ConvBwdCase c;
  c.seed = 20;
  for (const Index L : {1, 2, 64}) {  // shorter than the state, and exactly one tile
    c.L = L;
    check_conv_backward(c, 1e-5);
  }
  c.K = 2, c.L = 9, c.seed = 21;
  check_conv_backward(c, 1e-5);
  c.K = 1, c.init = false, c.seed = 22;  // no state at all
  check_conv_backward(c, 1e-5);
}

TEST(CudaTrainKernels, ConvBackwardRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  DualTensor<float, 3> act({1, 8, 32}, {0, 1, 2}, 1, -1, 1, s);
  DualTensor<float, 3> grad({1, 8, 32}, {0, 1, 2}, 2, -1, 1, s);
  DualTensor<float, 2> w({32, 4}, {0, 1}, 3, -1, 1, s), dw({32, 4}, {0, 1}, 4, -1, 1, s);
  CausalConv1dBackwardParams<float, float> p;
  p.x = p.dout = act.device_view();
  p.dx = grad.device_view();
  p.weight = w.device_view();
  p.dweight = dw.device_view();
  CausalConv1dBackwardParams<float, float> bad = p;
  bad.dweight = dw.dev.view<2>({32, 3});
  SSMKIT_EXPECT_ERROR(cuda::causal_conv1d_backward(bad, s), "dweight", "shape");
  ASSERT_GT(cuda::causal_conv1d_backward_workspace_size(p), 0u);
  SSMKIT_EXPECT_ERROR(cuda::causal_conv1d_backward(p, s, nullptr, 0), "workspace", "bytes");
}

// ---------------------------------------------------------------------------------------------
// rms_norm_backward

void check_rms_norm_backward(Index tokens, Index features, Index pad, bool accumulate,
                             bool in_place, std::uint64_t seed) {
  SCOPED_TRACE("tokens=" + std::to_string(tokens) + " features=" + std::to_string(features) +
               " pad=" + std::to_string(pad) + (accumulate ? " accumulate" : "") +
               (in_place ? " dx=dy" : ""));
  TestStream stream;
  const cudaStream_t s = stream.s;
  const double eps = 1e-5;
  const Index ld = features + pad;
  Rows x(tokens, features, ld, seed + 1, -2, 2, s), dy(tokens, features, ld, seed + 2, -1, 1, s);
  Rows dx(tokens, features, ld, seed + 3, -1, 1, s);
  DualTensor<float, 1> w({features}, {0}, seed + 4, 0.5, 1.5, s);
  DualTensor<float, 1> dw({features}, {0}, seed + 5, -1, 1, s);

  std::vector<double> r_dx(x.exact.size()), r_dw = dw.exact;
  nn::rms_norm_backward<double>(x.exact_view(), w.exact_view(), eps, dy.exact_view(),
                                TensorView<double, 2>(r_dx.data(), {tokens, features}),
                                TensorView<double, 1>(r_dw.data(), {features}), accumulate);

  const TensorView<float, 2> dx_view = in_place ? dy.view() : dx.view();
  if (!in_place)
    dx.poison(s);
  if (!accumulate)
    dw.poison(s);
  cuda::DeviceBuffer<char> ws(
      static_cast<Index>(cuda::rms_norm_backward_workspace_size(tokens, features)));
  cuda::rms_norm_backward(x.view(), w.device_view(), eps, dy.view(), dx_view, dw.device_view(), s,
                          ws.data(), ws.bytes(), accumulate);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  EXPECT_LE(rel_error(in_place ? dy.download(s) : dx.download(s), r_dx), 1e-5) << "dx";
  EXPECT_LE(rel_error(dw.download(s), r_dw), 1e-5) << "dweight";
}

TEST(CudaTrainKernels, RmsNormBackwardMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  check_rms_norm_backward(37, 200, 0, false, false, 1);
  check_rms_norm_backward(37, 773, 5, false, false, 2);    // strided rows, several per thread
  check_rms_norm_backward(5000, 64, 64, false, false, 3);  // several rows per block
  check_rms_norm_backward(4500, 96, 3, true, false, 4);    // accumulate into dweight
  check_rms_norm_backward(50, 300, 2, false, true, 5);     // dx written over dy
}

TEST(CudaTrainKernels, RmsNormBackwardRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  Rows x(4, 16, 16, 1, -1, 1, s), dy(4, 16, 16, 2, -1, 1, s);
  DualTensor<float, 1> w({16}, {0}, 3, -1, 1, s), dw({15}, {0}, 4, -1, 1, s);
  cuda::DeviceBuffer<char> ws(static_cast<Index>(cuda::rms_norm_backward_workspace_size(4, 16)));
  SSMKIT_EXPECT_ERROR(cuda::rms_norm_backward(x.view(), w.device_view(), 1e-5, dy.view(), x.view(),
                                              dw.device_view(), s, ws.data(), ws.bytes()),
                      "dweight", "shape");
  DualTensor<float, 1> dw16({16}, {0}, 5, -1, 1, s);
  SSMKIT_EXPECT_ERROR(cuda::rms_norm_backward(x.view(), w.device_view(), 1e-5, dy.view(), x.view(),
                                              dw16.device_view(), s, nullptr, 0),
                      "workspace", "bytes");
}

// ---------------------------------------------------------------------------------------------
// cross_entropy

struct XentCase {
  Index tokens = 20, vocab = 50280, pad = 0;
  std::int64_t ignore_index = -100;
  int ignored_every = 4;  // every 4th target is ignore_index
  bool in_place = false, with_grad = true;
  std::uint64_t seed = 1;
};

void check_cross_entropy(const XentCase& c) {
  SCOPED_TRACE("tokens=" + std::to_string(c.tokens) + " vocab=" + std::to_string(c.vocab) +
               " pad=" + std::to_string(c.pad) + (c.in_place ? " in place" : "") +
               (c.with_grad ? "" : " no dlogits"));
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index ld = c.vocab + c.pad;
  Rows logits(c.tokens, c.vocab, ld, c.seed + 1, -6, 6, s);
  Rows dlogits(c.tokens, c.vocab, ld, c.seed + 2, -1, 1, s);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(c.tokens));
  std::mt19937_64 rng(c.seed + 3);
  for (Index t = 0; t < c.tokens; ++t) {
    const bool ignored = c.ignored_every > 0 && t % c.ignored_every == 1;
    targets[static_cast<std::size_t>(t)] =
        ignored ? c.ignore_index
                : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(c.vocab));
  }
  targets[0] = c.vocab - 1;  // the last column is a target too
  const auto count = std::count_if(targets.begin(), targets.end(),
                                   [&](std::int64_t y) { return y != c.ignore_index; });
  cuda::DeviceBuffer<std::int64_t> d_targets(c.tokens);
  d_targets.copy_from_host_async(targets.data(), c.tokens, s);
  cuda::DeviceBuffer<float> loss(1);

  std::vector<double> r_dlogits(logits.exact.size());
  const double mean = nn::cross_entropy<double, std::int64_t>(
      logits.exact_view(), TensorView<const std::int64_t, 1>(targets.data(), {c.tokens}),
      TensorView<double, 2>(r_dlogits.data(), {c.tokens, c.vocab}), c.ignore_index);
  const double scale = 1.0 / static_cast<double>(count);

  TensorView<float, 2> out;
  if (c.with_grad)
    out = c.in_place ? logits.view() : dlogits.view();
  if (c.with_grad && !c.in_place)
    dlogits.poison(s);
  loss.fill_bytes_async(0xFF, s);
  const TensorView<const std::int64_t, 1> tv = d_targets.view<1>({c.tokens});
  cuda::cross_entropy(logits.view(), tv, out, loss.data(), s, c.ignore_index, scale);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  float sum = 0;
  loss.copy_to_host_async(&sum, 1, s);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  const double r_sum = mean * static_cast<double>(count);
  EXPECT_LE(std::abs(sum - r_sum), 1e-5 * std::abs(r_sum)) << "loss sum " << sum << " vs " << r_sum;
  if (c.with_grad)
    EXPECT_LE(rel_error(c.in_place ? logits.download(s) : dlogits.download(s), r_dlogits), 1e-5)
        << "dlogits";

  if (!c.in_place) {  // the same bits again
    float again = 0;
    loss.fill_bytes_async(0xFF, s);
    cuda::cross_entropy(logits.view(), tv, out, loss.data(), s, c.ignore_index, scale);
    loss.copy_to_host_async(&again, 1, s);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(std::memcmp(&again, &sum, sizeof(float)), 0) << again << " vs " << sum;
  }
}

TEST(CudaTrainKernels, CrossEntropyMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  XentCase c;  // a GPT-NeoX vocabulary
  check_cross_entropy(c);
  c.in_place = true, c.seed = 2;
  check_cross_entropy(c);
  XentCase strided;
  strided.tokens = 700, strided.vocab = 1000, strided.pad = 7, strided.seed = 3;
  check_cross_entropy(strided);
  strided.with_grad = false, strided.seed = 4;
  check_cross_entropy(strided);
  strided.with_grad = true, strided.in_place = true, strided.ignore_index = 5, strided.seed = 5;
  check_cross_entropy(strided);
  XentCase tail;  // aligned rows read four columns at a time, then one more
  tail.tokens = 300, tail.vocab = 1001, tail.pad = 3, tail.seed = 7;
  check_cross_entropy(tail);
  XentCase small;  // fewer columns than threads
  small.tokens = 9, small.vocab = 3, small.ignored_every = 0, small.seed = 6;
  check_cross_entropy(small);
}

TEST(CudaTrainKernels, CrossEntropyOutOfRangeTargetIsNaN) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index tokens = 3, vocab = 10;
  Rows logits(tokens, vocab, vocab, 1, -1, 1, s), dlogits(tokens, vocab, vocab, 2, -1, 1, s);
  const std::int64_t targets[tokens] = {2, vocab, 4};
  cuda::DeviceBuffer<std::int64_t> d_targets(tokens);
  d_targets.copy_from_host_async(targets, tokens, s);
  // The loss and every gradient poisoned with a finite value, so that a NaN is the kernel's.
  cuda::DeviceBuffer<float> loss(1);
  const float finite_poison = 12345.f;
  loss.copy_from_host_async(&finite_poison, 1, s);
  const std::vector<float> poison_rows(static_cast<std::size_t>(tokens * vocab), finite_poison);
  dlogits.dev.copy_from_host_async(poison_rows.data(), tokens * vocab, s);
  cuda::cross_entropy(logits.view(), d_targets.view<1>({tokens}), dlogits.view(), loss.data(), s);
  float sum = 0;
  loss.copy_to_host_async(&sum, 1, s);
  const std::vector<double> g = dlogits.download(s);
  EXPECT_TRUE(std::isnan(sum)) << sum;
  for (Index v = 0; v < vocab; ++v)
    EXPECT_TRUE(std::isnan(g[static_cast<std::size_t>(vocab + v)])) << "column " << v;
  // The rows in range get softmax − onehot (scale 1) all the same.
  for (const Index t : {Index{0}, Index{2}}) {
    const double* z = &logits.exact[static_cast<std::size_t>(t * vocab)];
    const double zmax = *std::max_element(z, z + vocab);
    double denom = 0;
    for (Index v = 0; v < vocab; ++v)
      denom += std::exp(z[v] - zmax);
    std::vector<double> want(static_cast<std::size_t>(vocab));
    for (Index v = 0; v < vocab; ++v)
      want[static_cast<std::size_t>(v)] = std::exp(z[v] - zmax) / denom - (v == targets[t]);
    const std::vector<double> got(g.begin() + t * vocab, g.begin() + (t + 1) * vocab);
    EXPECT_LE(rel_error(got, want), 1e-5) << "row " << t;
  }
}

TEST(CudaTrainKernels, CrossEntropyRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  Rows logits(4, 10, 10, 1, -1, 1, s);
  cuda::DeviceBuffer<std::int64_t> targets(3);
  cuda::DeviceBuffer<float> loss(1);
  SSMKIT_EXPECT_ERROR(cuda::cross_entropy(logits.view(), targets.view<1>({3}),
                                          TensorView<float, 2>(), loss.data(), s),
                      "targets", "shape");
  cuda::DeviceBuffer<std::int64_t> targets4(4);
  SSMKIT_EXPECT_ERROR(cuda::cross_entropy(logits.view(), targets4.view<1>({4}),
                                          TensorView<float, 2>(), loss.data(), s, nullptr, 0),
                      "workspace", "bytes");
}

// ---------------------------------------------------------------------------------------------
// embedding_backward

void check_embedding_backward(Index tokens, Index vocab, Index dim, Index pad, bool accumulate,
                              std::uint64_t seed) {
  SCOPED_TRACE("tokens=" + std::to_string(tokens) + " vocab=" + std::to_string(vocab) +
               " dim=" + std::to_string(dim) + (accumulate ? " accumulate" : ""));
  TestStream stream;
  const cudaStream_t s = stream.s;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens));
  std::mt19937_64 rng(seed);
  const auto few = static_cast<std::uint64_t>(std::min<Index>(vocab, 20));
  for (auto& id : ids)  // half the tokens among the first 20 ids: rows hit many times
    id = static_cast<std::int64_t>(rng() % 2 ? rng() % few
                                             : rng() % static_cast<std::uint64_t>(vocab));
  cuda::DeviceBuffer<std::int64_t> d_ids(tokens);
  d_ids.copy_from_host_async(ids.data(), tokens, s);
  Rows dy(tokens, dim, dim + pad, seed + 1, -1, 1, s);
  Rows dw(vocab, dim, dim, seed + 2, -1, 1, s);

  const TensorView<const std::int64_t, 1> id_view(ids.data(), {tokens});
  std::vector<double> r_dw = dw.exact;
  nn::embedding_backward<double, std::int64_t>(
      id_view, dy.exact_view(), TensorView<double, 2>(r_dw.data(), {vocab, dim}), accumulate);
  // The CPU float sums, token by token in order, are what each GPU thread computes.
  std::vector<float> dy_f(dy.exact.begin(), dy.exact.end()), f_dw(dw.exact.begin(), dw.exact.end());
  nn::embedding_backward<float, std::int64_t>(
      id_view, TensorView<const float, 2>(dy_f.data(), {tokens, dim}),
      TensorView<float, 2>(f_dw.data(), {vocab, dim}), accumulate);

  const std::vector<float> initial = dw.host;
  if (!accumulate)
    dw.poison(s);
  const TensorView<const std::int64_t, 1> ids_dev = d_ids.view<1>({tokens});
  cuda::embedding_backward(ids_dev, dy.view(), dw.view(), s, accumulate);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  const std::vector<double> got = dw.download(s);
  EXPECT_LE(rel_error(got, r_dw), 1e-5);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), f_dw.begin()))
      << "not the CPU's float sums bit for bit";

  dw.dev.copy_from_host_async(initial.data(), dw.dev.size(), s);
  cuda::embedding_backward(ids_dev, dy.view(), dw.view(), s, accumulate);
  EXPECT_EQ(dw.download(s), got) << "a rerun differs";
}

TEST(CudaTrainKernels, EmbeddingBackwardMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  check_embedding_backward(3000, 1000, 200, 4, false, 1);
  check_embedding_backward(3000, 1000, 200, 0, true, 2);
  check_embedding_backward(2000, 50280, 96, 0, false, 3);  // more vocabulary tiles than blocks
  check_embedding_backward(5, 7, 3, 1, true, 4);
}

TEST(CudaTrainKernels, EmbeddingBackwardRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  cuda::DeviceBuffer<std::int64_t> ids(4);
  Rows dy(3, 8, 8, 1, -1, 1, s), dw(10, 8, 8, 2, -1, 1, s);
  SSMKIT_EXPECT_ERROR(cuda::embedding_backward(ids.view<1>({4}), dy.view(), dw.view(), s), "dy",
                      "shape");
}

// ---------------------------------------------------------------------------------------------
// AdamW and clip_grad_norm

/// A float vector on the device with element stride `stride` (NaN between elements), as double:
/// one column of Rows.
struct Strided : Rows {
  Strided(Index n, Index stride, std::uint64_t seed, double lo, double hi, cudaStream_t s)
      : Rows(n, 1, stride, seed, lo, hi, s) {}
  TensorView<float, 1> view() { return dev.view<1>({rows}, {ld}); }
};

std::vector<double> difference(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    d[i] = a[i] - b[i];
  return d;
}

TEST(CudaTrainKernels, AdamWMatchesCpuOverThreeSteps) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  optim::AdamWOptions o;
  o.lr = 0.05, o.weight_decay = 0.1;  // steps large next to float rounding of the parameters
  optim::AdamW<float, Cuda> gpu(o);
  optim::AdamW<double> cpu(o);
  // Two chunks and a partial one, a short one, a strided one added after the first step.
  const Index sizes[] = {9000, 3, 5000}, strides[] = {1, 1, 2};
  const bool decay[] = {true, false, true};
  std::vector<Strided> params, grads;
  std::vector<std::vector<double>> cpu_params(3), cpu_grads(3), start(3);
  for (int i = 0; i < 3; ++i) {
    params.emplace_back(sizes[i], strides[i], 10 + i, -1, 1, s);
    grads.emplace_back(sizes[i], strides[i], 20 + i, -1, 1, s);
    cpu_params[i] = start[i] = params[i].exact;
    cpu_grads[i] = grads[i].exact;
  }
  const auto add = [&](int i) {
    gpu.add(params[i].view(), grads[i].view(), decay[i]);
    cpu.add(TensorView<double, 1>(cpu_params[i].data(), {sizes[i]}),
            TensorView<const double, 1>(cpu_grads[i].data(), {sizes[i]}), decay[i]);
  };
  add(0), add(1);
  for (int step = 0; step < 3; ++step) {
    if (step == 1)
      add(2);
    for (int i = 0; i < 3; ++i) {  // fresh gradients
      grads[i].fill(100 * step + 30 + i, -1, 1, s);
      std::copy(grads[i].exact.begin(), grads[i].exact.end(), cpu_grads[i].begin());
    }
    gpu.step(s);
    cpu.step();
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + " parameter " + std::to_string(i));
      const std::vector<double> got = params[i].download(s);
      EXPECT_LE(rel_error(got, cpu_params[i]), 1e-5);
      EXPECT_LE(rel_error(difference(got, start[i]), difference(cpu_params[i], start[i])), 1e-5)
          << "the change since the start";
    }
  }
  EXPECT_EQ(gpu.steps(), 3);
}

TEST(CudaTrainKernels, AdamWRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  Strided p(10, 1, 1, -1, 1, stream.s), g(9, 1, 2, -1, 1, stream.s);
  optim::AdamW<float, Cuda> opt;
  SSMKIT_EXPECT_ERROR(opt.add(p.view(), g.view()), "grad", "shape");
  Strided g2(10, 1, 3, -1, 1, stream.s);
  opt.add(p.view(), g2.view());
  SSMKIT_EXPECT_ERROR(opt.add(p.view(), g2.view()), "param", "a parameter added before");
  // Gradients are read while parameters are written, all in one launch.
  Strided q(10, 1, 4, -1, 1, stream.s);
  SSMKIT_EXPECT_ERROR(opt.add(q.view(), q.view()), "grad", "param", "overlap");
  SSMKIT_EXPECT_ERROR(opt.add(q.view(), p.view()), "grad", "a parameter added before");
  SSMKIT_EXPECT_ERROR(opt.add(g2.view(), q.view()), "param", "a gradient added before");
  optim::AdamWOptions o;
  o.beta2 = 1;
  SSMKIT_EXPECT_ERROR((optim::AdamW<float, Cuda>{o}), "beta2", "[0, 1)");
}

TEST(CudaTrainKernels, ClipGradNormMatchesCpu) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  const Index sizes[] = {10000, 7, 4097}, strides[] = {1, 1, 3};
  for (const double max_norm : {1.0, 1e6}) {  // clipped, and left alone
    SCOPED_TRACE("max_norm " + std::to_string(max_norm));
    std::vector<Strided> grads;
    std::vector<std::vector<double>> ref(3);
    std::vector<TensorView<float, 1>> views;
    std::vector<TensorView<double, 1>> ref_views;
    for (int i = 0; i < 3; ++i) {
      grads.emplace_back(sizes[i], strides[i], 40 + i, -1, 1, s);
      ref[i] = grads[i].exact;
    }
    for (int i = 0; i < 3; ++i) {
      views.push_back(grads[i].view());
      ref_views.push_back(TensorView<double, 1>(ref[i].data(), {sizes[i]}));
    }
    const double want = optim::clip_grad_norm(ref_views, max_norm);
    const double got = optim::clip_grad_norm(views, max_norm, s);
    EXPECT_LE(std::abs(got - want), 1e-12 * want) << got << " vs " << want;
    for (int i = 0; i < 3; ++i) {
      const std::vector<double> g = grads[i].download(s);
      EXPECT_LE(rel_error(g, ref[i]), 1e-6) << "gradient " << i;
      if (max_norm > want)
        EXPECT_EQ(g, grads[i].exact) << "gradient " << i << " changed without clipping";
    }
    EXPECT_EQ(optim::clip_grad_norm(views, 1e9, s), optim::clip_grad_norm(views, 1e9, s));
  }
}

// A NaN gradient makes the norm and every gradient NaN; an infinite one zeroes the finite
// gradients (and makes itself NaN): as the CPU twin and torch.nn.utils.clip_grad_norm_.
TEST(CudaTrainKernels, ClipGradNormNonFiniteAsCpu) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  const cudaStream_t s = stream.s;
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(bad);
    Strided a(100, 1, 50, -1, 1, s), b(37, 2, 51, -1, 1, s);
    SSMKIT_CUDA_CHECK(
        cudaMemcpyAsync(a.view().data() + 5, &bad, sizeof(float), cudaMemcpyHostToDevice, s));
    std::vector<double> ra = a.exact, rb = b.exact;
    ra[5] = bad;
    const double want = optim::clip_grad_norm<double>(
        {TensorView<double, 1>(ra.data(), {100}), TensorView<double, 1>(rb.data(), {37})}, 1.0);
    const double got = optim::clip_grad_norm({a.view(), b.view()}, 1.0, s);
    EXPECT_TRUE(std::isnan(want) ? std::isnan(got) : got == want) << got << " vs " << want;
    for (auto [x, ref] : {std::pair{&a, &ra}, std::pair{&b, &rb}}) {
      const std::vector<double> g = x->download(s);
      for (std::size_t i = 0; i < g.size(); ++i)
        ASSERT_TRUE(std::isnan((*ref)[i]) ? std::isnan(g[i]) : g[i] == (*ref)[i])
            << i << ": " << g[i] << " vs " << (*ref)[i];
    }
  }
}

TEST(CudaTrainKernels, ClipGradNormRejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  TestStream stream;
  Strided g(10, 1, 1, -1, 1, stream.s);
  SSMKIT_EXPECT_ERROR(optim::clip_grad_norm({g.view()}, 0.0, stream.s), "max_norm", "> 0");
  std::vector<float> host(4);
  SSMKIT_EXPECT_ERROR(
      optim::clip_grad_norm({TensorView<float, 1>(host.data(), {4})}, 1.0, stream.s), "grads",
      "device");
}

}  // namespace
}  // namespace ssmkit::testing
