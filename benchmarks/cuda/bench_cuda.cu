// The CUDA benchmark: copy bandwidth and exponential rate measured on the spot, the selective
// scan on the target shapes (benchmarks/RESULTS.md, top) (fp32 and bf16, token- and channel-major,
// each policy) against its floor and mamba_ssm, and the decode-step kernels at batch 1 … 256.
// Prints markdown tables.
//   bench_cuda [--runs N] [--quick] [--shape I] [--bc-state-time] [--mamba-ssm FILE]
// --quick: the first shape and the default policy only; --shape I: the I-th shape only (from 0);
// --bc-state-time: also the default policy with B and C in mamba_ssm's (batch, group, state,
// time) memory order; --mamba-ssm: mamba_ssm's times measured on this GPU by
// tools/bench_mamba_ssm.py, in place of DESIGN.md's.
#include "bench_scan.cuh"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ssmkit::bench {
namespace {

constexpr int kExpChains = 8, kExpIters = 2048;

__global__ void exp_rate_kernel(float* sink, float seed) {
  float x[kExpChains];
#pragma unroll
  for (int c = 0; c < kExpChains; ++c)
    x[c] = seed * static_cast<float>(threadIdx.x + c);
  for (int i = 0; i < kExpIters; ++i)
#pragma unroll
    for (int c = 0; c < kExpChains; ++c)
      x[c] = cuda::detail::ex2_mufu(-x[c]);
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kExpChains; ++c)
    s += x[c];
  if (s == 12345.f)  // never true for these inputs; keeps the loop alive
    *sink = s;
}

/// ex2.approx throughput of the whole GPU (exponentials per second).
double exp_rate() {
  cuda::DeviceBuffer<float> sink(1);
  const int blocks = cuda::multiprocessor_count() * 8;
  const double ms = median_ms(2, 10, [&](int) {
    exp_rate_kernel<<<blocks, 256>>>(sink.data(), 1e-3f);
    SSMKIT_CUDA_CHECK_LAUNCH("exp_rate_kernel");
  });
  return static_cast<double>(blocks) * 256 * kExpChains * kExpIters / (ms * 1e-3);
}

/// Per-call time (µs) of the decode step of one Mamba layer's scan and conv (d_inner 5120,
/// N 16, K 4, bf16 activations, float states) at batch `batch`: the median over 20 runs of
/// 100 back-to-back calls.
std::pair<double, double> time_decode(Index batch) {
  const Index D = 5120, N = 16, K = 4;
  using T = __nv_bfloat16;
  cuda::DeviceBuffer<T> x(batch * D), dt(batch * D), z(batch * D), out(batch * D), B(batch * N),
      C(batch * N), conv_state(batch * D * (K - 1));
  cuda::DeviceBuffer<float> A(D * N), Dsk(D), bias(D), h(batch * D * N), w(D * K), wb(D);
  fill(x, 1, -1, 1);
  fill(dt, 2, -4, 1);
  fill(z, 3, -3, 3);
  fill(B, 4, -1, 1);
  fill(C, 5, -1, 1);
  fill(conv_state, 6, -1, 1);
  fill(A, 7, -4, -0.1f);
  fill(Dsk, 8, -1, 1);
  fill(bias, 9, -1, 0.5f);
  fill(h, 10, -1, 1);
  fill(w, 11, -1, 1);
  fill(wb, 12, -1, 1);
  SelectiveScanParams<T, float> p;
  p.u = x.view<3>({batch, 1, D});
  p.delta = dt.view<3>({batch, 1, D});
  p.z = z.view<3>({batch, 1, D});
  p.out = out.view<3>({batch, 1, D});
  p.B = B.view<4>({batch, 1, 1, N});
  p.C = C.view<4>({batch, 1, 1, N});
  p.A = A.view<2>({D, N});
  p.D_skip = Dsk.view<1>({D});
  p.delta_bias = bias.view<1>({D});
  p.h0 = h.view<3>({batch, D, N});
  p.h_final = h.view<3>({batch, D, N});
  p.delta_softplus = true;
  CausalConv1dStepParams<T, float> c;
  c.x = x.view<2>({batch, D});
  c.weight = w.view<2>({D, K});
  c.bias = wb.view<1>({D});
  c.state = conv_state.view<3>({batch, D, K - 1});
  c.out = z.view<2>({batch, D});
  c.silu = true;
  constexpr int kCalls = 100;
  const double scan_ms = median_ms(2, 20, [&](int) {
    for (int i = 0; i < kCalls; ++i)
      cuda::selective_state_update(p, nullptr);
  });
  const double conv_ms = median_ms(2, 20, [&](int) {
    for (int i = 0; i < kCalls; ++i)
      cuda::causal_conv1d_update(c, nullptr);
  });
  return {scan_ms * 1e3 / kCalls, conv_ms * 1e3 / kCalls};
}

}  // namespace
}  // namespace ssmkit::bench

int main(int argc, char** argv) {
  using namespace ssmkit::bench;
  const BenchArgs args = parse_bench_args(argc, argv, 20);
  const int runs = args.runs;
  const bool quick = args.quick;
  bool bc_state_time = false;
  for (int i = 1; i < argc; ++i)
    bc_state_time = bc_state_time || std::strcmp(argv[i], "--bc-state-time") == 0;
  try {
    cudaDeviceProp prop{};
    if (!describe_device(prop, "\n"))
      return 1;
    const double bw = copy_bandwidth(), er = exp_rate();
    std::printf("copy bandwidth (read+write): %.3f TB/s; ex2.approx rate: %.3f T/s\n\n", bw / 1e12,
                er / 1e12);

    std::vector<ScanShape> shapes = selected_shapes<ScanShape>({{8, 2048, 2048, 16, 1.17, 0.61},
                                                                {1, 5120, 16384, 16, 3.32, 1.95},
                                                                {2, 1536, 131072, 16, 15.3, 8.66}},
                                                               args);
    use_mamba_ssm_times(shapes, args, "fwd");
    std::vector<ScanTiming> all = time_default_policy(shapes, runs);
    if (bc_state_time) {
      for (auto& t : time_policy<ssmkit::cuda::SelectiveScanPolicy>("default", shapes, runs, true))
        all.push_back(t);
    }
    if (!quick) {
      for (auto& t : time_variant_policies(shapes, runs))
        all.push_back(t);
    }
    std::printf("## selective scan forward (N=16, z, D, delta_bias, softplus)\n\n");
    std::printf(
        "| shape | dtype | layout | policy | time ms | TB/s | Texp/s | floor ms | "
        "x floor | mamba_ssm ms | x faster |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const ScanTiming& t : all) {
      const double floor_ms = std::max(t.bytes / bw, t.exps / er) * 1e3;
      const double mamba =
          t.dtype == std::string("fp32") ? t.shape.mamba_fp32_ms : t.shape.mamba_bf16_ms;
      std::printf(
          "| B=%lld D=%lld L=%lld | %s | %s | %s | %.3f | %.2f | %.2f | %.3f | %.2f | "
          "%.2f | %.1f |\n",
          static_cast<long long>(t.shape.batch), static_cast<long long>(t.shape.D),
          static_cast<long long>(t.shape.L), t.dtype.c_str(), t.layout.c_str(), t.policy.c_str(),
          t.ms, t.bytes / (t.ms * 1e-3) / 1e12, t.exps / (t.ms * 1e-3) / 1e12, floor_ms,
          t.ms / floor_ms, mamba, mamba / t.ms);
    }
    std::printf(
        "\n## decode step (d_inner 5120, N 16, K 4, bf16), per call\n\n"
        "| batch | selective_state_update us | causal_conv1d_update us |\n|---|---|---|\n");
    for (ssmkit::Index b = 1; b <= 256; b *= 2) {
      const auto [scan_us, conv_us] = time_decode(b);
      std::printf("| %lld | %.2f | %.2f |\n", static_cast<long long>(b), scan_us, conv_us);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
