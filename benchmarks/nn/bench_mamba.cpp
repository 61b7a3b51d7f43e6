// MambaBlock forward and step, and a 130M-shaped Mamba LM (d_model 768, 24 layers, vocab 50280,
// random float weights, batch 1): prefill and decode tokens/s at 1 and 2 threads.
//   bench_mamba --benchmark_filter=LM   (the end-to-end figures; see README.md here)
#include <ssmkit/nn/mamba_lm.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace ssmkit;

namespace {

constexpr Index kDModel = 768, kLayers = 24, kVocab = 50280;

/// Cheap reproducible uniform fill (xorshift64*): a 130M-parameter model fills in well under a
/// second.
template <class T, int R>
void fill(HostTensor<T, R>& t, std::uint64_t seed, double lo, double hi) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (Index i = 0; i < t.numel(); ++i) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const double u = static_cast<double>((s * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
    t.data()[i] = static_cast<T>(lo + (hi - lo) * u);
  }
}

nn::MambaBlockConfig block_config() {
  return {kDModel, 2 * kDModel, 16, 4, (kDModel + 15) / 16};
}

/// Weights in the ranges trained Mamba checkpoints have: A_log = log(1..N), D ≈ 1, Δ ≈ 0.001-0.1.
nn::MambaBlockWeights<float> block_weights(const nn::MambaBlockConfig& c, std::uint64_t seed) {
  nn::MambaBlockWeights<float> w;
  const Index di = c.d_inner, dm = c.d_model, N = c.d_state, R = c.dt_rank;
  const auto lin = [&](Index out, Index in, std::uint64_t s) {
    HostTensor<float, 2> m({out, in});
    const double a = 1 / std::sqrt(static_cast<double>(in));
    fill(m, s, -a, a);
    return m;
  };
  w.in_proj_weight = lin(2 * di, dm, seed + 1);
  w.conv1d_weight = lin(di, c.d_conv, seed + 2);
  w.conv1d_bias = HostTensor<float, 1>({di});
  fill(w.conv1d_bias, seed + 3, -0.1, 0.1);
  w.x_proj_weight = lin(R + 2 * N, di, seed + 4);
  w.dt_proj_weight = lin(di, R, seed + 5);
  w.dt_proj_bias = HostTensor<float, 1>({di});
  fill(w.dt_proj_bias, seed + 6, -6.9, -2.3);  // softplus⁻¹ of 0.001 .. 0.1
  w.A_log = HostTensor<float, 2>({di, N});
  for (Index d = 0; d < di; ++d)
    for (Index n = 0; n < N; ++n)
      w.A_log(d, n) = std::log(static_cast<float>(n + 1));
  w.D = HostTensor<float, 1>({di});
  w.D.fill(1.0f);
  w.out_proj_weight = lin(dm, di, seed + 7);
  return w;
}

const nn::MambaBlock<float>& block() {
  static const nn::MambaBlock<float> b(block_config(), block_weights(block_config(), 1));
  return b;
}

const nn::MambaLM<float>& lm() {
  static const nn::MambaLM<float> model = [] {
    nn::MambaLMConfig c;
    c.vocab_size = kVocab;
    c.n_layer = kLayers;
    c.block = block_config();
    nn::MambaLMWeights<float> w;
    w.embedding = HostTensor<float, 2>({kVocab, kDModel});
    fill(w.embedding, 100, -0.1, 0.1);
    w.norm_f = HostTensor<float, 1>({kDModel});
    w.norm_f.fill(1.0f);
    for (Index i = 0; i < kLayers; ++i) {
      nn::MambaLayerWeights<float> l;
      l.norm = HostTensor<float, 1>({kDModel});
      l.norm.fill(1.0f);
      l.mixer = block_weights(c.block, 10 * (i + 1));
      w.layers.push_back(std::move(l));
    }
    return nn::MambaLM<float>(c, std::move(w));
  }();
  return model;
}

void BM_BlockForward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  const Index L = state.range(1);
  HostTensor<float, 3> x({1, L, kDModel}), y({1, L, kDModel});
  fill(x, 7, -1, 1);
  nn::MambaBlock<float>::Workspace ws;
  for (auto _ : state) {
    block().forward(x.view(), y.view(), ws);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(L * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BlockForward)
    ->ArgsProduct({{1, 2}, {2048}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_BlockStep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  HostTensor<float, 2> x({1, kDModel}), y({1, kDModel});
  fill(x, 8, -1, 1);
  nn::MambaBlockState<float> st(block().config(), 1);
  nn::MambaBlock<float>::Workspace ws;
  for (auto _ : state) {
    block().step(x.view(), y.view(), st.view(), ws);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BlockStep)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

std::vector<std::int64_t> prompt(Index L) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(L));
  for (Index i = 0; i < L; ++i)
    ids[i] = (i * 7919 + 13) % kVocab;
  return ids;
}

void BM_LMPrefill(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  const Index L = state.range(1);
  const auto ids = prompt(L);
  auto cache = lm().make_cache(1);
  for (auto _ : state) {
    cache.reset();
    lm().prefill(TensorView<const std::int64_t, 2>(ids.data(), {1, L}), cache);
    benchmark::DoNotOptimize(cache.logits().data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(L * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LMPrefill)
    ->ArgsProduct({{1, 2}, {512}})
    ->UseRealTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

void BM_LMDecode(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  const auto ids = prompt(16);
  auto cache = lm().make_cache(1);
  lm().prefill(TensorView<const std::int64_t, 2>(ids.data(), {1, 16}), cache);
  std::int64_t next = 42;
  for (auto _ : state) {
    lm().step(TensorView<const std::int64_t, 1>(&next, {1}), cache);
    benchmark::DoNotOptimize(cache.logits().data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LMDecode)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Iterations(64)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
