// The GPU Mamba block and model against the weight-read floor: (a) one layer's decode step at
// d_model 2560, d_inner 5120, N 16 with bf16 weights, batch 1 … 256, eager and CUDA graph, and
// its kernels one by one;
// (b) greedy decoding of the 130M-shaped model (d_model 768, 24 layers, vocab 50280);
// (c) its prefill at L 2048. Random weights; CUDA-event medians; markdown tables.
//   bench_cuda_decode [--quick]   (--quick: fewer runs, batch 1 and 64 only)
#include "bench_scan.cuh"

#include <ssmkit/nn/cuda/mamba_lm.cuh>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace ssmkit::bench {
namespace {

/// Uniform values in [lo, hi) from a counter hash (fast enough for 10^8 weights on the host).
void fill_host(float* p, Index n, std::uint64_t seed, float lo, float hi) {
  for (Index i = 0; i < n; ++i) {
    std::uint64_t x = (static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    p[i] = lo + (hi - lo) * static_cast<float>(x >> 40) * (1.f / 16777216.f);
  }
}

template <int R>
HostTensor<float, R> random_tensor(const Shape<R>& shape, std::uint64_t seed, float scale) {
  HostTensor<float, R> t(shape);
  fill_host(t.data(), t.numel(), seed, -scale, scale);
  return t;
}

/// Weights at Mamba's initial scales: projections ±1/sqrt(fan_in), A_log = log(1..N), D = 1,
/// δ_bias giving Δ in about [0.001, 0.1].
nn::MambaBlockWeights<float> random_block(const nn::MambaBlockConfig& c, std::uint64_t seed) {
  const Index di = c.d_inner, dm = c.d_model, N = c.d_state, R = c.dt_rank;
  const auto inv_sqrt = [](Index n) { return 1.f / std::sqrt(static_cast<float>(n)); };
  nn::MambaBlockWeights<float> w;
  w.in_proj_weight = random_tensor<2>({2 * di, dm}, seed + 1, inv_sqrt(dm));
  w.conv1d_weight = random_tensor<2>({di, c.d_conv}, seed + 2, 0.5f);
  w.conv1d_bias = random_tensor<1>({di}, seed + 3, 0.1f);
  w.x_proj_weight = random_tensor<2>({R + 2 * N, di}, seed + 4, inv_sqrt(di));
  w.dt_proj_weight = random_tensor<2>({di, R}, seed + 5, inv_sqrt(R));
  w.dt_proj_bias = random_tensor<1>({di}, seed + 6, 1.f);
  for (Index i = 0; i < di; ++i)
    w.dt_proj_bias.data()[i] =
        std::log(std::expm1(0.01f * std::exp(2.3f * w.dt_proj_bias.data()[i])));
  w.A_log = HostTensor<float, 2>({di, N});
  for (Index i = 0; i < di * N; ++i)
    w.A_log.data()[i] = std::log(static_cast<float>(i % N + 1));
  w.D = HostTensor<float, 1>({di});
  w.D.fill(1.f);
  w.out_proj_weight = random_tensor<2>({dm, di}, seed + 7, inv_sqrt(di));
  return w;
}

nn::MambaBlockConfig block_config(Index d_model, Index d_inner) {
  return {d_model, d_inner, 16, 4, (d_model + 15) / 16};
}

struct Stream {
  cudaStream_t s{};
  Stream() { SSMKIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
};

/// Median time (ms) of `fn` enqueued `reps` times on `s`, over `runs` runs, per repetition.
template <class F>
double per_call_ms(cudaStream_t s, int runs, int reps, F&& fn) {
  cudaEvent_t a, b;
  SSMKIT_CUDA_CHECK(cudaEventCreate(&a));
  SSMKIT_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i)
    fn();
  std::vector<float> ms(static_cast<std::size_t>(runs));
  for (auto& m : ms) {
    SSMKIT_CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i)
      fn();
    SSMKIT_CUDA_CHECK(cudaEventRecord(b, s));
    SSMKIT_CUDA_CHECK(cudaEventSynchronize(b));
    SSMKIT_CUDA_CHECK(cudaEventElapsedTime(&m, a, b));
    m /= static_cast<float>(reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/// (a) One residual layer's step (pre-norm fused into in_proj, residual add into out_proj):
/// kLayers copies of the layer run in turn (weights beyond L2), each step's time the total over
/// kLayers.
void bench_layer_step(const std::vector<Index>& batches, int runs, double bw) {
  constexpr int kLayers = 3;
  using W = __nv_bfloat16;
  const nn::MambaBlockConfig c = block_config(2560, 5120);
  std::vector<nn::MambaBlock<W, Cuda>> layers;
  for (int i = 0; i < kLayers; ++i)
    layers.emplace_back(c, random_block(c, 100 * i));
  const double weights = static_cast<double>(layers[0].weight_bytes());
  std::printf(
      "\n## One layer's decode step (d_model 2560, d_inner 5120, N 16, bf16 weights, "
      "%.1f MB)\n\n",
      weights / 1e6);
  std::printf("| batch | mode | µs | weights TB/s | floor µs (weights + states) | × floor |\n");
  std::printf("|---|---|---|---|---|---|\n");
  Stream stream;
  const cudaStream_t s = stream.s;
  for (const Index batch : batches) {
    std::vector<nn::DeviceMambaBlockState> states;
    for (int i = 0; i < kLayers; ++i)
      states.emplace_back(c, batch, s);
    typename nn::MambaBlock<W, Cuda>::Workspace ws;
    ws.reserve(c, batch);
    // A residual layer as the model runs it: residual += block(RMSNorm(residual)).
    cuda::DeviceBuffer<float> residual(batch * c.d_model), gamma(c.d_model);
    fill(residual, 1, -1, 1);
    fill(gamma, 2, 0.5f, 1.5f);
    SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
    const auto rv = residual.view<2>({batch, c.d_model});
    const cuda::RowNorm norm{gamma.view<1>({c.d_model}), 1e-5};
    const auto step_all = [&] {
      for (int i = 0; i < kLayers; ++i)
        layers[i].step(rv, rv, states[i].view(), ws, s, true, norm);
    };
    nn::detail::GraphExec graph;
    graph.capture(s, step_all);
    // States: h read and written, the conv window read and written, float.
    const double state_bytes = 2.0 * 4 * static_cast<double>(batch) * c.d_inner *
                               static_cast<double>(c.d_state + c.d_conv - 1);
    const double floor_us = (weights + state_bytes) / bw * 1e6;
    for (const bool use_graph : {false, true}) {
      const double ms = per_call_ms(s, runs, 10, [&] {
        if (use_graph)
          graph.launch(s);
        else
          step_all();
      });
      const double us = ms * 1e3 / kLayers;
      std::printf("| %lld | %s | %.1f | %.2f | %.1f | %.2f |\n", static_cast<long long>(batch),
                  use_graph ? "graph" : "eager", us, weights / (us * 1e-6) / 1e12, floor_us,
                  us / floor_us);
    }
  }
}

/// (a') The kernels of that step one by one at batch 1, each a graph of kReps back-to-back
/// launches over kCopies weight copies (beyond L2): where the step's time goes.
void bench_step_parts(int runs, double bw) {
  constexpr int kCopies = 3, kReps = 12;
  using W = __nv_bfloat16;
  const nn::MambaBlockConfig c = block_config(2560, 5120);
  const Index dm = c.d_model, di = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  const Index xdbl_w = R + 2 * N;
  Stream stream;
  const cudaStream_t s = stream.s;
  struct Matrix {
    std::vector<cuda::DeviceBuffer<W>> copies;
    Index rows, cols;
    Matrix(Index r, Index c2, std::uint64_t seed) : rows(r), cols(c2) {
      for (int i = 0; i < kCopies; ++i) {
        copies.emplace_back(r * c2);
        fill(copies.back(), seed + i, -0.02f, 0.02f);
      }
    }
    TensorView<const W, 2> view(int i) const {
      return TensorView<const W, 2>::unchecked(copies[i % kCopies].data(), {rows, cols}, {cols, 1},
                                               Device::CUDA);
    }
  };
  const Matrix in_proj(2 * di, dm, 10), x_proj(xdbl_w, di, 20), dt_proj(di, R, 30),
      out_proj(dm, di, 40);
  cuda::DeviceBuffer<float> residual(dm), gamma(dm), xz(2 * di), y(di), conv_w(di * K), conv_b(di),
      conv_state(di * (K - 1)), A(di * N), D(di), dt_bias(di), h(di * N);
  fill(residual, 1, -1, 1);
  fill(gamma, 2, 0.5f, 1.5f);
  fill(xz, 3, -1, 1);
  fill(y, 7, -1, 1);
  fill(conv_w, 8, -0.5f, 0.5f);
  fill(conv_b, 9, -0.1f, 0.1f);
  fill(conv_state, 10, -1, 1);
  fill(A, 11, -4, -0.1f);
  fill(D, 12, 0.5f, 1.5f);
  fill(dt_bias, 13, -4, -2);
  fill(h, 14, -1, 1);
  SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
  const auto mat = [](cuda::DeviceBuffer<float>& b, Index rows, Index cols, Index ld) {
    return TensorView<float, 2>::unchecked(b.data(), {rows, cols}, {ld, 1}, Device::CUDA);
  };
  const auto gemv_part = [&](const Matrix& m, TensorView<const float, 2> x, TensorView<float, 2> o,
                             bool norm, bool accumulate) {
    return [&m, x, o, norm, accumulate, &gamma, s](int i) {
      cuda::GemvParams<W> p;
      p.x = x;
      p.weight = m.view(i);
      p.out = o;
      p.accumulate = accumulate;
      if (norm)
        p.norm = {gamma.view<1>({m.cols}), 1e-5};
      cuda::gemv(p, s);
    };
  };
  cuda::MambaInnerStepParams<W> inner;
  inner.xz =
      TensorView<const float, 2>::unchecked(xz.data(), {1, 2 * di}, {2 * di, 1}, Device::CUDA);
  inner.conv_weight = conv_w.view<2>({di, K});
  inner.conv_bias = conv_b.view<1>({di});
  inner.dt_bias = dt_bias.view<1>({di});
  inner.A = A.view<2>({di, N});
  inner.D = D.view<1>({di});
  inner.conv_state = conv_state.view<3>({1, di, K - 1});
  inner.ssm_state = h.view<3>({1, di, N});
  inner.y = mat(y, 1, di, di);
  cuda::DeviceBuffer<unsigned char> inner_ws(
      static_cast<Index>(cuda::mamba_inner_step_workspace_size(1, di, N, R)));
  struct Part {
    const char* name;
    double bytes;
    std::function<void(int)> run;
  };
  const double wb = sizeof(W);
  const std::vector<Part> parts = {
      {"in_proj (+ RMSNorm)", wb * 2 * di * dm,
       gemv_part(in_proj, mat(residual, 1, dm, dm), mat(xz, 1, 2 * di, 2 * di), true, false)},
      {"inner step (conv, x_proj, dt_proj, state update: 2 kernels)",
       wb * di * (xdbl_w + R) + 4.0 * di * (2 * (K - 1) + K + 2 * N + N + 6),
       [&](int i) {
         inner.x_proj_weight = x_proj.view(i);
         inner.dt_proj_weight = dt_proj.view(i);
         cuda::mamba_inner_step(inner, s, inner_ws.data(), inner_ws.bytes());
       }},
      {"out_proj (+ residual)", wb * dm * di,
       gemv_part(out_proj, mat(y, 1, di, di), mat(residual, 1, dm, dm), false, true)},
  };
  std::printf("\n### Its kernels at batch 1 (graphs of %d launches)\n\n", kReps);
  std::printf("| kernel | µs | MB | TB/s | floor µs |\n|---|---|---|---|---|\n");
  double total = 0;
  for (const Part& part : parts) {
    nn::detail::GraphExec graph;
    graph.capture(s, [&] {
      for (int i = 0; i < kReps; ++i)
        part.run(i);
    });
    const double us = per_call_ms(s, runs, 1, [&] { graph.launch(s); }) * 1e3 / kReps;
    total += us;
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", part.name, us, part.bytes / 1e6,
                part.bytes / (us * 1e-6) / 1e12, part.bytes / bw * 1e6);
  }
  std::printf("| sum | %.2f | | | |\n", total);
}

/// The 130M-shaped model with random weights, as the CPU model (validated) then uploaded.
nn::MambaLM<float> random_lm_130m() {
  nn::MambaLMConfig c;
  c.vocab_size = 50280;
  c.n_layer = 24;
  c.block = block_config(768, 1536);
  c.tie_embeddings = true;
  nn::MambaLMWeights<float> w;
  w.embedding = random_tensor<2>({c.vocab_size, 768}, 7, 0.02f);
  w.norm_f = HostTensor<float, 1>({768});
  w.norm_f.fill(1.f);
  for (Index i = 0; i < c.n_layer; ++i) {
    nn::MambaLayerWeights<float> l;
    l.norm = HostTensor<float, 1>({768});
    l.norm.fill(1.f);
    l.mixer = random_block(c.block, 1000 + 10 * static_cast<std::uint64_t>(i));
    w.layers.push_back(std::move(l));
  }
  return nn::MambaLM<float>(c, std::move(w));
}

/// (b) greedy decoding and (c) prefill of the 130M-shaped model with weights W.
template <class W>
void bench_lm(const nn::MambaLM<float>& host, const char* name, int runs, bool quick) {
  const nn::MambaLM<W, Cuda> model(host);
  Stream stream;
  const cudaStream_t s = stream.s;
  const double weights = static_cast<double>(model.weight_bytes());
  // Decoding at batch 1: graph replays and eager steps timed on the device, then the whole loop
  // of nn::generate (ids to the host every token) on the wall clock.
  std::vector<std::int64_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  auto cache = model.make_cache(1, s);
  model.prefill(TensorView<const std::int64_t, 2>(prompt.data(), {1, 8}), cache);
  const int reps = quick ? 20 : 100;
  const double graph_ms = per_call_ms(s, runs, reps, [&] { model.step_greedy(cache, true); });
  const double eager_ms = per_call_ms(s, runs, reps, [&] { model.step_greedy(cache, false); });
  const Index gen_tokens = quick ? 64 : 256;
  const auto r = nn::generate(model, {prompt}, gen_tokens, {}, s, true);
  std::printf("| %s | %.0f MB | %.0f | %.0f | %.0f | %.1f |\n", name, weights / 1e6, 1e3 / graph_ms,
              1e3 / eager_ms, static_cast<double>(r.decode_tokens) / r.decode_seconds,
              weights / (graph_ms * 1e-3) / 1e12);
  // Prefill of one 2048-token sequence.
  const Index L = 2048;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(L));
  for (Index i = 0; i < L; ++i)
    ids[static_cast<std::size_t>(i)] = (i * 7919) % model.vocab_size();
  auto pcache = model.make_cache(1, s);
  const double prefill_ms = per_call_ms(s, quick ? 3 : 7, 1, [&] {
    pcache.reset();
    model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {1, L}), pcache);
  });
  std::printf("|   prefill L=%lld | | %.0f tokens/s (%.1f ms) | | | |\n", static_cast<long long>(L),
              static_cast<double>(L) / (prefill_ms * 1e-3), prefill_ms);
}

}  // namespace
}  // namespace ssmkit::bench

int main(int argc, char** argv) {
  using namespace ssmkit;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: bench_cuda_decode [--quick]\n");
      return 2;
    }
  }
  try {
    cudaDeviceProp prop{};
    SSMKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const double bw = bench::copy_bandwidth();
    std::printf("device: %s\ncopy bandwidth (read + write): %.2f TB/s\n", prop.name, bw / 1e12);
    const int runs = quick ? 5 : 21;
    bench::bench_layer_step(quick ? std::vector<Index>{1, 64} : std::vector<Index>{1, 8, 64, 256},
                            runs, bw);
    bench::bench_step_parts(runs, bw);
    std::printf("\n## 130M-shaped Mamba LM (d_model 768, 24 layers, vocab 50280), batch 1\n\n");
    std::printf(
        "| weights | bytes | greedy tokens/s (graph) | eager | generate() | weights TB/s "
        "(graph) |\n");
    std::printf("|---|---|---|---|---|---|\n");
    const auto host = bench::random_lm_130m();
    bench::bench_lm<float>(host, "float", runs, quick);
    bench::bench_lm<__nv_bfloat16>(host, "bf16", runs, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_decode: %s\n", e.what());
    return 1;
  }
  return 0;
}
