// Timings of the selective scan's CPU backward (by itself, and from the forward's checkpoints)
// against the fast forward (without and with taking checkpoints) and the fp64 reference backward
// on a Mamba-shaped layer (B=1, D=1536, L=4096, N=16, z, D, δ_bias and softplus on, token-major,
// float), in ns per (b, l, d) element.
#include <ssmkit/core/host_tensor.hpp>
#include <ssmkit/kernels/cpu/selective_scan.hpp>
#include <ssmkit/kernels/cpu/selective_scan_backward.hpp>
#include <ssmkit/kernels/cpu/selective_scan_backward_reference.hpp>

#include "../bench_util.hpp"

#include <benchmark/benchmark.h>

#include <random>

namespace {

using namespace ssmkit;

using bench::fill;

struct Layer {
  HostTensor<float, 3> u, delta, z, out, dout, du, ddelta, dz;
  HostTensor<float, 4> B, C, dB, dC;
  HostTensor<float, 2> A, dA;
  HostTensor<float, 1> D_skip, bias, dD_skip, dbias;
  HostTensor<float, 4> checkpoints;  // every selective_scan_checkpoint_interval(N) steps
  SelectiveScanParams<float> fwd;
  SelectiveScanBackwardParams<float> bwd;

  Layer(Index L, Index D, Index N)
      : u({1, L, D}),
        delta({1, L, D}),
        z({1, L, D}),
        out({1, L, D}),
        dout({1, L, D}),
        du({1, L, D}),
        ddelta({1, L, D}),
        dz({1, L, D}),
        B({1, L, 1, N}),
        C({1, L, 1, N}),
        dB({1, L, 1, N}),
        dC({1, L, 1, N}),
        A({D, N}),
        dA({D, N}),
        D_skip({D}),
        bias({D}),
        dD_skip({D}),
        dbias({D}),
        checkpoints({(L + selective_scan_checkpoint_interval(N) - 1) /
                         selective_scan_checkpoint_interval(N),
                     1, D, N}) {
    fill(u, 1, -1, 1), fill(delta, 2, -3, 0.5), fill(z, 3, -3, 3), fill(B, 4, -1, 1);
    fill(C, 5, -1, 1), fill(A, 6, -16, -0.5), fill(D_skip, 7, -1, 1), fill(bias, 8, -1, 0);
    fill(dout, 9, -1, 1);
    bwd.u = u, bwd.delta = delta, bwd.z = z, bwd.B = B, bwd.C = C, bwd.A = A;
    bwd.D_skip = D_skip, bwd.delta_bias = bias, bwd.delta_softplus = true;
    bwd.dout = dout, bwd.du = du, bwd.ddelta = ddelta, bwd.dz = dz, bwd.dB = dB, bwd.dC = dC;
    bwd.dA = dA, bwd.dD_skip = dD_skip, bwd.ddelta_bias = dbias;
    fwd = bwd.forward(out);
  }

  /// Has the forward take checkpoints, and the backward start from them.
  void with_checkpoints() {
    fwd.checkpoints = checkpoints;
    fwd.checkpoint_interval = selective_scan_checkpoint_interval(A.size(1));
    cpu::selective_scan(fwd);
    bwd.checkpoints = checkpoints;
    bwd.checkpoint_interval = fwd.checkpoint_interval;
  }

  static void counters(benchmark::State& state, Index L, Index D) {
    state.counters["ns/elem"] = benchmark::Counter(
        static_cast<double>(L * D) * 1e-9,
        benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  }
};

constexpr Index kL = 4096, kD = 1536, kN = 16;

void BM_ScanForward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  Layer s(kL, kD, kN);
  for (auto _ : state)
    cpu::selective_scan(s.fwd);
  Layer::counters(state, kL, kD);
}
BENCHMARK(BM_ScanForward)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ScanBackward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  Layer s(kL, kD, kN);
  for (auto _ : state)
    cpu::selective_scan_backward(s.bwd);
  Layer::counters(state, kL, kD);
}
BENCHMARK(BM_ScanBackward)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ScanForwardCheckpoints(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  Layer s(kL, kD, kN);
  s.with_checkpoints();
  for (auto _ : state)
    cpu::selective_scan(s.fwd);
  Layer::counters(state, kL, kD);
}
BENCHMARK(BM_ScanForwardCheckpoints)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ScanBackwardFromCheckpoints(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  Layer s(kL, kD, kN);
  s.with_checkpoints();
  for (auto _ : state)
    cpu::selective_scan_backward(s.bwd);
  Layer::counters(state, kL, kD);
}
BENCHMARK(BM_ScanBackwardFromCheckpoints)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ScanBackwardReference(benchmark::State& state) {
  Layer s(kL, kD, kN);
  for (auto _ : state)
    cpu::selective_scan_backward_reference(s.bwd);
  Layer::counters(state, kL, kD);
}
BENCHMARK(BM_ScanBackwardReference)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
