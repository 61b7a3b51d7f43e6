// Timings of the S6 CPU kernels: the selective scan (fp64 oracle, fast blocked path, chunked path
// on one long sequence) and the causal conv1d, in ns per (b, l, d) element and GB/s moved.
#include <ssmkit/core/host_tensor.hpp>
#include <ssmkit/kernels/cpu/causal_conv1d.hpp>
#include <ssmkit/kernels/cpu/selective_scan.hpp>
#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

#include "../bench_util.hpp"

#include <benchmark/benchmark.h>

#include <random>

namespace {

using namespace ssmkit;

using bench::fill;

/// A token-major Mamba-shaped scan: z, D, δ_bias and softplus on, G = 1.
struct Scan {
  HostTensor<float, 3> u, delta, z, out;
  HostTensor<float, 4> B, C;
  HostTensor<float, 2> A;
  HostTensor<float, 1> D_skip, bias;
  SelectiveScanParams<float> p;

  Scan(Index batch, Index L, Index D, Index N)
      : u({batch, L, D}),
        delta({batch, L, D}),
        z({batch, L, D}),
        out({batch, L, D}),
        B({batch, L, 1, N}),
        C({batch, L, 1, N}),
        A({D, N}),
        D_skip({D}),
        bias({D}) {
    fill(u, 1, -1, 1), fill(delta, 2, -3, 0.5), fill(z, 3, -3, 3), fill(B, 4, -1, 1);
    fill(C, 5, -1, 1), fill(A, 6, -16, -0.5), fill(D_skip, 7, -1, 1), fill(bias, 8, -1, 0);
    p.u = u, p.delta = delta, p.z = z, p.out = out, p.B = B, p.C = C, p.A = A;
    p.D_skip = D_skip, p.delta_bias = bias, p.delta_softplus = true;
  }

  void counters(benchmark::State& state) const {
    const double elems = static_cast<double>(u.numel());
    const double bytes = sizeof(float) * (4 * elems + 2.0 * static_cast<double>(B.numel()));
    state.counters["ns/elem"] = benchmark::Counter(
        elems * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["GB/s"] =
        benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
};

void BM_ScanOracle(benchmark::State& state) {
  Scan s(1, state.range(0), 1536, 16);
  for (auto _ : state)
    cpu::selective_scan_reference(s.p);
  s.counters(state);
}
BENCHMARK(BM_ScanOracle)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ScanFast(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(1)));
  Scan s(1, state.range(0), 1536, 16);
  cpu::SelectiveScanPolicy policy;
  policy.mode = cpu::SelectiveScanPolicy::Mode::Blocked;
  for (auto _ : state)
    cpu::selective_scan(s.p, policy);
  s.counters(state);
}
BENCHMARK(BM_ScanFast)
    ->ArgNames({"L", "threads"})
    ->Args({4096, 1})
    ->Args({4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

/// One long sequence of one lane block: blocked (one thread can work) vs chunked.
void BM_ScanLongSequence(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(1)));
  Scan s(1, 1 << 18, cpu::simd::BestF32::width, 16);
  cpu::SelectiveScanPolicy policy;
  policy.mode = state.range(0) ? cpu::SelectiveScanPolicy::Mode::Chunked
                               : cpu::SelectiveScanPolicy::Mode::Blocked;
  for (auto _ : state)
    cpu::selective_scan(s.p, policy);
  s.counters(state);
}
BENCHMARK(BM_ScanLongSequence)
    ->ArgNames({"chunked", "threads"})
    ->Args({0, 1})
    ->Args({1, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Conv(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  const Index batch = 1, L = 4096, C = 1536, K = 4;
  HostTensor<float, 3> x({batch, L, C}), out({batch, L, C});
  HostTensor<float, 2> w({C, K});
  HostTensor<float, 1> bias({C});
  fill(x, 1, -1, 1), fill(w, 2, -1, 1), fill(bias, 3, -1, 1);
  CausalConv1dParams<float> p;
  p.x = x, p.weight = w, p.bias = bias, p.out = out, p.silu = true;
  for (auto _ : state)
    cpu::causal_conv1d(p);
  const double elems = static_cast<double>(x.numel());
  state.counters["ns/elem"] = benchmark::Counter(
      elems * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["GB/s"] = benchmark::Counter(2 * sizeof(float) * elems * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Conv)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
