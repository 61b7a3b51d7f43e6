// The Mamba LM's backward on the GPU (nn/cuda/grad/mamba_lm_backward.cuh) against the CPU
// nn::mamba_lm_backward on the same random model: the loss and every parameter's gradient, tied
// and untied heads, with and without biases, a batch of several sequences with ignored targets,
// and given dlogits; one AdamW step on both sides; the trainable-weights round trip; bad
// arguments. Gradients are compared norm-wise per tensor (‖gpu − cpu‖ / ‖cpu‖).
#include "cuda_testing.hpp"

#include <ssmkit/nn/cuda/grad/mamba_lm_backward.cuh>
#include <ssmkit/nn/grad/mamba_lm_backward.hpp>
#include <ssmkit/nn/grad/mamba_lm_init.hpp>
#include <ssmkit/optim/adamw.hpp>
#include <ssmkit/optim/cuda/adamw.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace ssmkit {
namespace {

using nn::DeviceMambaLMWeights;
using nn::MambaLMConfig;
using nn::MambaLMWeights;
using testing::rel_error;
using testing::TestStream;

/// A model with whole and partial SIMD widths (d_inner 24, dt_rank 3, d_state 5).
MambaLMConfig small_config(bool tied) {
  MambaLMConfig c;
  c.vocab_size = 11;
  c.n_layer = 2;
  c.block = {8, 24, 5, 4, 3};
  c.tie_embeddings = tied;
  return c;
}

/// mamba_ssm's initialisation, then moved off it (so that every path carries signal: zero biases
/// and D = 1 would hide a transposed or missing term).
template <class T>
MambaLMWeights<T> random_weights(const MambaLMConfig& c, bool biases, std::uint64_t seed) {
  nn::MambaInitOptions o;
  o.in_proj_bias = o.out_proj_bias = biases;
  MambaLMWeights<T> w = nn::init_mamba_lm<T>(c, seed, o);
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<double> dist(-0.3, 0.3);
  for (auto& p : nn::parameters(w))
    for (Index i = 0; i < p.value.size(0); ++i)
      p.value(i) = static_cast<T>(static_cast<double>(p.value(i)) + dist(rng));
  return w;
}

struct Data {
  Index batch, L;
  std::vector<std::int64_t> ids, targets;
  TensorView<const std::int64_t, 2> ids_view() const {
    return TensorView<const std::int64_t, 2>(ids.data(), {batch, L}, "ids");
  }
  TensorView<const std::int64_t, 2> targets_view() const {
    return TensorView<const std::int64_t, 2>(targets.data(), {batch, L}, "targets");
  }
};

/// Random ids and targets; about a third of the targets ignored (-100).
Data random_data(Index V, Index batch, Index L, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Data d{batch, L, {}, {}};
  for (Index t = 0; t < batch * L; ++t) {
    d.ids.push_back(static_cast<std::int64_t>(rng() % V));
    d.targets.push_back(rng() % 3 == 0 ? -100 : static_cast<std::int64_t>(rng() % V));
  }
  return d;
}

/// The device tensors, downloaded, in the order and under the names of nn::parameters().
MambaLMWeights<float> download(const DeviceMambaLMWeights& dev, const nn::MambaLM<float>& like) {
  MambaLMWeights<float> host = nn::zeros_like(like);
  dev.download(nn::parameters(host));
  return host;
}

/// `model`'s weights uploaded to the device and a gradient buffer of their layout; with `poison`
/// NaN everywhere (every gradient must be written, none accumulated into stale values).
struct OnDevice {
  DeviceMambaLMWeights weights, grads;
  OnDevice(nn::MambaLM<float>& model, bool poison) : weights(model) {
    weights.upload(model);
    grads = DeviceMambaLMWeights::zeros_like(weights);
    if (poison)
      SSMKIT_CUDA_CHECK(
          cudaMemset(grads.flat().data(), 0xFF, sizeof(float) * grads.flat().size(0)));
  }
};

/// Every tensor of `got` within `tol` of the same one of `want`, norm-wise (‖got − want‖ /
/// ‖want‖); `worst`, when given, gets the largest of those errors.
template <class T>
void expect_tensors_near(MambaLMWeights<float>& got, MambaLMWeights<T>& want, double tol,
                         double* worst = nullptr) {
  const auto g = nn::parameters(got);
  const auto w = nn::parameters(want);
  ASSERT_EQ(g.size(), w.size());
  for (std::size_t k = 0; k < g.size(); ++k) {
    ASSERT_EQ(g[k].name, w[k].name);
    const double e = rel_error(g[k].value.data(), w[k].value.data(), w[k].value.size(0));
    EXPECT_LE(e, tol) << g[k].name;
    if (worst != nullptr)
      *worst = std::max(*worst, e);
  }
}

class TrainModel : public ::testing::TestWithParam<std::tuple<bool, bool, Index, Index>> {};

TEST_P(TrainModel, GradientsAndLossMatchTheCpu) {
  SSMKIT_REQUIRE_GPU();
  const auto [tied, biases, batch, L] = GetParam();
  const MambaLMConfig cfg = small_config(tied);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, biases, 10));
  nn::MambaLM<double> cpu64(cfg, random_weights<double>(cfg, biases, 10));
  const Data d = random_data(cfg.vocab_size, batch, L, 20);

  auto want = nn::zeros_like(cpu);
  const double want_loss = nn::mamba_lm_backward<float>(cpu, d.ids_view(), d.targets_view(), want);
  auto exact = nn::zeros_like(cpu64);
  const double exact_loss =
      nn::mamba_lm_backward<double>(cpu64, d.ids_view(), d.targets_view(), exact);

  EXPECT_GT(want_loss, 1.0);
  for (const auto kind : {nn::ScanCheckpoints::fine, nn::ScanCheckpoints::coarse}) {
    SCOPED_TRACE(kind == nn::ScanCheckpoints::fine ? "fine scan checkpoints"
                                                   : "coarse scan checkpoints");
    TestStream stream;
    OnDevice dev(cpu, true);
    auto& [weights, grads] = dev;
    nn::MambaLMBackwardWorkspace ws({}, kind);
    double loss = 0;
    for (int run = 0; run < 2; ++run)  // the second run reuses the workspace
      loss = nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws, stream.s);
    EXPECT_NEAR(loss, want_loss, 1e-6 * want_loss);
    EXPECT_NEAR(loss, exact_loss, 1e-5 * exact_loss);

    MambaLMWeights<float> got = download(grads, cpu);
    EXPECT_EQ(nn::parameters(got).size(),
              static_cast<std::size_t>(2 * (biases ? 12 : 10) + 2 + (tied ? 0 : 1)));
    expect_tensors_near(got, want, 1e-5);
    // The double CPU backward as the oracle, at the bound the float CPU meets (its own test).
    expect_tensors_near(got, exact, 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(TiedBiasesBatchLength, TrainModel,
                         ::testing::Values(std::tuple(true, false, Index{2}, Index{37}),
                                           std::tuple(true, true, Index{3}, Index{70}),
                                           std::tuple(false, true, Index{2}, Index{5}),
                                           std::tuple(false, false, Index{4}, Index{129})),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Tied" : "Untied") +
                                  (std::get<1>(info.param) ? "Biases" : "NoBiases") + "B" +
                                  std::to_string(std::get<2>(info.param)) + "L" +
                                  std::to_string(std::get<3>(info.param));
                         });

/// The selective-copying example's model (d_inner 128, vocabulary 18), weights from `seed`, on
/// random (batch, L) data: the GPU's loss and gradients (cuBLAS with `options`) against the CPU
/// float backward's, within loss_tol and tol (expect_tensors_near); returns the largest error.
double example_model_against_cpu(const cuda::CudaOptions& options, std::uint64_t seed, Index batch,
                                 Index L, double loss_tol, double tol) {
  MambaLMConfig cfg;
  cfg.vocab_size = 18;
  cfg.n_layer = 2;
  cfg.block = {64, 128, 16, 4, 4};
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, false, seed));
  const Data d = random_data(cfg.vocab_size, batch, L, seed + 1);
  auto want = nn::zeros_like(cpu);
  const double want_loss = nn::mamba_lm_backward<float>(cpu, d.ids_view(), d.targets_view(), want);
  TestStream stream;
  OnDevice dev(cpu, false);
  nn::MambaLMBackwardWorkspace ws(options);
  const double loss =
      nn::mamba_lm_backward(dev.weights, d.ids_view(), d.targets_view(), dev.grads, ws, stream.s);
  EXPECT_NEAR(loss, want_loss, loss_tol * want_loss);
  MambaLMWeights<float> got = download(dev.grads, cpu);
  double worst = 0;
  expect_tensors_near(got, want, tol, &worst);
  return worst;
}

TEST(TrainModel, TheSelectiveCopyingModelMatchesTheCpu) {
  // The example's model at its sequence length.
  SSMKIT_REQUIRE_GPU();
  example_model_against_cpu({}, 30, 4, 128, 1e-6, 1e-5);
}

TEST(TrainModel, Tf32ProductsStayNearTheCpu) {
  // CudaOptions::allow_tf32: the products on TF32 tensor cores (10-bit mantissas) change the
  // gradients at the 1e-3 level, as they change the forward's logits (test_cuda_nn's 1e-2).
  SSMKIT_REQUIRE_GPU();
  cuda::CudaOptions tf32;
  tf32.allow_tf32 = true;
  const double worst = example_model_against_cpu(tf32, 90, 2, 64, 1e-2, 1e-2);
  // TF32 is really on: FP32 products agree to ~2e-6 (the test above), TF32 ones far less.
  EXPECT_GT(worst, 1e-5);
}

TEST(TrainModel, GivenDlogitsMatchesTheCpu) {
  // The overload for any loss of the logits: ℓ = Σ G·logits with random G, against the CPU's.
  SSMKIT_REQUIRE_GPU();
  const MambaLMConfig cfg = small_config(true);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, true, 80));
  const Data d = random_data(cfg.vocab_size, 3, 21, 81);
  HostTensor<float, 3> G({d.batch, d.L, cfg.vocab_size});
  testing::fill_random(G, 82);
  auto want = nn::zeros_like(cpu);
  nn::mamba_lm_backward<float>(cpu, d.ids_view(), G.view(), want);
  TestStream stream;
  OnDevice dev(cpu, true);
  auto& [weights, grads] = dev;
  cuda::DeviceBuffer<float> dlogits(G.numel());
  dlogits.copy_from_host_async(G.data(), G.numel(), stream.s);
  nn::MambaLMBackwardWorkspace ws;
  nn::mamba_lm_backward(weights, d.ids_view(), dlogits.view<3>(G.shape()), grads, ws, stream.s);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  MambaLMWeights<float> got = download(grads, cpu);
  expect_tensors_near(got, want, 1e-5);
  // Host dlogits are refused.
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), TensorView<const float, 3>(G.view()), grads, ws,
                            stream.s),
      "dlogits", "device");
}

TEST(TrainModel, OneAdamWStepGivesTheCpuParameters) {
  SSMKIT_REQUIRE_GPU();
  const MambaLMConfig cfg = small_config(false);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, true, 40));
  const Data d = random_data(cfg.vocab_size, 2, 33, 41);
  TestStream stream;
  OnDevice dev(cpu, false);
  auto& [weights, grads] = dev;
  nn::MambaLMBackwardWorkspace ws;
  optim::AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  optim::AdamW<float, Cuda> gpu_opt(o);
  {
    const auto p = weights.parameters(), q = grads.parameters();
    for (std::size_t k = 0; k < p.size(); ++k)
      gpu_opt.add(p[k].value, q[k].value, p[k].decay);
  }
  nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws, stream.s);
  gpu_opt.step(stream.s);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream.s));

  MambaLMWeights<float> before = nn::zeros_like(cpu);
  {
    const auto from = cpu.parameters(), to = nn::parameters(before);
    for (std::size_t k = 0; k < from.size(); ++k)
      for (Index i = 0; i < from[k].value.size(0); ++i)
        to[k].value(i) = from[k].value(i);
  }
  auto cpu_grads = nn::zeros_like(cpu);
  nn::mamba_lm_backward<float>(cpu, d.ids_view(), d.targets_view(), cpu_grads);
  optim::AdamW<float> cpu_opt(o);
  auto params = cpu.parameters();
  const auto grad_list = nn::parameters(cpu_grads);
  for (std::size_t k = 0; k < params.size(); ++k)
    cpu_opt.add(params[k].value, grad_list[k].value, params[k].decay);
  cpu_opt.step();

  MambaLMWeights<float> got = download(weights, cpu);
  const auto g = nn::parameters(got), b = nn::parameters(before);
  for (std::size_t k = 0; k < params.size(); ++k) {
    // The updates themselves (after − before), each about lr per element: the step, not the
    // weights it starts from, is what could differ.
    std::vector<double> gpu_step, cpu_step;
    for (Index i = 0; i < params[k].value.size(0); ++i) {
      gpu_step.push_back(static_cast<double>(g[k].value(i)) - b[k].value(i));
      cpu_step.push_back(static_cast<double>(params[k].value(i)) - b[k].value(i));
    }
    EXPECT_LE(rel_error(gpu_step, cpu_step), 1e-4) << g[k].name;
    EXPECT_LE(rel_error(g[k].value.data(), params[k].value.data(), params[k].value.size(0)), 1e-6)
        << g[k].name;
  }
}

TEST(TrainModel, WeightsRoundTripAndListTheCpuParameters) {
  SSMKIT_REQUIRE_GPU();
  const MambaLMConfig cfg = small_config(false);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, true, 50));
  DeviceMambaLMWeights dev(cpu);
  dev.upload(cpu);
  const auto host = cpu.parameters();
  auto device = dev.parameters();
  ASSERT_EQ(host.size(), device.size());
  for (std::size_t k = 0; k < host.size(); ++k) {
    EXPECT_EQ(device[k].name, host[k].name);
    EXPECT_EQ(device[k].value.size(0), host[k].value.size(0));
    EXPECT_EQ(device[k].decay, host[k].decay);
    EXPECT_EQ(device[k].value.device(), Device::CUDA);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(device[k].value.data()) % 64, 0u) << host[k].name;
  }
  nn::MambaLM<float> other(cfg, random_weights<float>(cfg, true, 51));
  dev.download(other);  // other's weights become cpu's, A of its blocks recomputed
  const auto back = other.parameters();
  for (std::size_t k = 0; k < host.size(); ++k)
    for (Index i = 0; i < host[k].value.size(0); ++i)
      ASSERT_EQ(back[k].value(i), host[k].value(i)) << host[k].name << " " << i;
}

TEST(TrainModel, EmptyBatchGivesZeroGradients) {
  SSMKIT_REQUIRE_GPU();
  const MambaLMConfig cfg = small_config(true);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, false, 60));
  TestStream stream;
  OnDevice dev(cpu, true);
  auto& [weights, grads] = dev;
  nn::MambaLMBackwardWorkspace ws;
  const std::vector<std::int64_t> none;
  const TensorView<const std::int64_t, 2> empty(none.data(), {0, 4}, "ids");
  EXPECT_EQ(nn::mamba_lm_backward(weights, empty, empty, grads, ws, stream.s), 0.0);
  MambaLMWeights<float> got = download(grads, cpu);
  for (auto& p : nn::parameters(got))
    for (Index i = 0; i < p.value.size(0); ++i)
      ASSERT_EQ(p.value(i), 0.f) << p.name;
}

TEST(TrainModel, RejectsBadArguments) {
  SSMKIT_REQUIRE_GPU();
  const MambaLMConfig cfg = small_config(true);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, false, 70));
  TestStream stream;
  OnDevice dev(cpu, false);
  auto& [weights, grads] = dev;
  nn::MambaLMBackwardWorkspace ws;
  Data d = random_data(cfg.vocab_size, 2, 6, 71);
  d.ids[7] = cfg.vocab_size;
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws, stream.s), "ids",
      "element (1, 1)");
  d = random_data(cfg.vocab_size, 2, 6, 71);
  d.targets[2] = -1;
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws, stream.s),
      "targets", "element (0, 2)");
  d = random_data(cfg.vocab_size, 2, 6, 71);
  const TensorView<const std::int64_t, 2> short_targets(d.targets.data(), {2, 5}, "targets");
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), short_targets, grads, ws, stream.s), "targets",
      "shape");
  // Gradients of another model's layout (untied: one more tensor).
  const MambaLMConfig untied = small_config(false);
  nn::MambaLM<float> other(untied, random_weights<float>(untied, false, 72));
  DeviceMambaLMWeights other_grads(other);
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), other_grads, ws, stream.s),
      "grads", "zeros_like");
  // Uploading a CPU list that names other tensors.
  SSMKIT_EXPECT_ERROR(other_grads.upload(cpu), "host parameters");

  // The block's backward takes device views only.
  const nn::MambaBlockConfig& b = cfg.block;
  const Index n = 2 * 6 * b.d_model;
  cuda::DeviceBuffer<float> x(n), dout(n), dx(n);
  std::vector<float> host(static_cast<std::size_t>(n));
  const auto dev3 = [&](cuda::DeviceBuffer<float>& buf) { return buf.view<3>({2, 6, b.d_model}); };
  const TensorView<const float, 3> host_x(host.data(), {2, 6, b.d_model}, "x");
  nn::MambaBlockBackwardWorkspace block_ws;
  SSMKIT_EXPECT_ERROR(
      nn::mamba_block_backward(b, std::as_const(weights).mixer(0), host_x, dev3(dout), dev3(dx),
                               grads.mixer(0), block_ws, stream.s),
      "x", "device");
  SSMKIT_EXPECT_ERROR(
      nn::mamba_block_backward(b, std::as_const(weights).mixer(0), dev3(x), dev3(dout),
                               dout.view<3>({2, 5, b.d_model}), grads.mixer(0), block_ws, stream.s),
      "dx", "shape");
  auto bad = grads.mixer(0);
  bad.out_proj_bias = grads.norm(0);  // a bias the weights do not have
  SSMKIT_EXPECT_ERROR(nn::mamba_block_backward(b, std::as_const(weights).mixer(0), dev3(x),
                                               dev3(dout), dev3(dx), bad, block_ws, stream.s),
                      "grads.out_proj_bias", "presence");
  // The linear backward as well.
  cuda::LinearBackwardWorkspace lin;
  const TensorView<float, 2> host_w(host.data(), {4, b.d_model}, "weight");
  SSMKIT_EXPECT_ERROR(cuda::linear_backward(lin, x.view<2>({12, b.d_model}), host_w,
                                            dout.view<2>({12, 4}), {}, host_w, {}, stream.s),
                      "weight", "device");
}

// A training workspace made on one device refuses calls while another is current, before it
// launches anything.
TEST(TrainModel, WorkspaceOfAnotherDevice) {
  if (cuda::device_count() < 2)
    GTEST_SKIP() << "needs two CUDA devices";
  const MambaLMConfig cfg = small_config(true);
  nn::MambaLM<float> cpu(cfg, random_weights<float>(cfg, false, 80));
  SSMKIT_CUDA_CHECK(cudaSetDevice(0));
  TestStream stream;
  OnDevice dev(cpu, false);
  auto& [weights, grads] = dev;
  const Data d = random_data(cfg.vocab_size, 2, 6, 81);
  SSMKIT_CUDA_CHECK(cudaSetDevice(1));
  nn::MambaLMBackwardWorkspace ws1;
  SSMKIT_CUDA_CHECK(cudaSetDevice(0));
  EXPECT_EQ(ws1.block().device(), 1);
  SSMKIT_EXPECT_ERROR(
      nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws1, stream.s), "ws",
      "current device", "1 (where it was made)", "got 0");
  nn::MambaLMBackwardWorkspace ws0;
  EXPECT_GT(nn::mamba_lm_backward(weights, d.ids_view(), d.targets_view(), grads, ws0, stream.s),
            0.0);
}

}  // namespace
}  // namespace ssmkit
