// One training step of the train_selective_copying example's model (2 layers, d_model 64, N 16,
// d_conv 4, expand 2, vocab 18; batch 32 of length 256, float): the forward and backward of
// nn::mamba_lm_backward with cross-entropy on the 16 answer positions, gradient clipping and an
// AdamW update, in ms per step and tokens/s.
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/nn/grad/mamba_lm_backward.hpp>
#include <ssmkit/nn/grad/mamba_lm_init.hpp>
#include <ssmkit/optim/adamw.hpp>
#include <ssmkit/optim/clip_grad_norm.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using namespace ssmkit;

constexpr Index kBatch = 32, kLength = 256, kVocab = 18, kAnswers = 16;

void BM_TrainStep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  nn::MambaLMConfig config;
  config.vocab_size = kVocab;
  config.n_layer = 2;
  config.block = {64, 128, 16, 4, 4};
  nn::MambaLM<float> model(config, nn::init_mamba_lm<float>(config, 1));
  auto grads = nn::zeros_like(model);
  auto params = model.parameters();
  const auto grad_list = nn::parameters(grads);
  optim::AdamW<float> optimizer;
  std::vector<TensorView<float, 1>> grad_views;
  for (std::size_t k = 0; k < params.size(); ++k) {
    optimizer.add(params[k].value, grad_list[k].value, params[k].decay);
    grad_views.push_back(grad_list[k].value);
  }
  // Random tokens, the loss on the last 16 positions as in the task.
  std::mt19937_64 rng(2);
  std::vector<std::int64_t> ids(kBatch * kLength), targets(kBatch * kLength, -100);
  for (Index t = 0; t < kBatch * kLength; ++t) {
    ids[static_cast<std::size_t>(t)] = static_cast<std::int64_t>(rng() % kVocab);
    if (t % kLength >= kLength - kAnswers)
      targets[static_cast<std::size_t>(t)] = static_cast<std::int64_t>(rng() % kVocab);
  }
  const TensorView<const std::int64_t, 2> id_view(ids.data(), {kBatch, kLength}, "ids");
  const TensorView<const std::int64_t, 2> target_view(targets.data(), {kBatch, kLength}, "targets");
  nn::MambaLMBackwardBuffers<float> buffers;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        nn::mamba_lm_backward<float>(model, id_view, target_view, grads, buffers));
    optim::clip_grad_norm(grad_views, 1.0);
    optimizer.step();
    model.parameters_changed();
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kBatch * kLength),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TrainStep)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
