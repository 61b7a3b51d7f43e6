// S4 on the CPU: kernel generation (Vandermonde, DPLR), FFT convolution, and a whole layer in
// convolution vs recurrent mode. Results and the command lines: benchmarks/s4/RESULTS.md.
#include <ssmkit/nn/s4_layer.hpp>

#include <benchmark/benchmark.h>

#include <random>

namespace {

using namespace ssmkit;

template <class T, int Rank>
void fill(HostTensor<T, Rank>& t, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-1, 1);
  for (Index i = 0; i < t.numel(); ++i)
    t.data()[i] = T(d(rng));
}

constexpr Index kH = 16, kN = 64;  // kernel and FFT entries: 16 channels of state size 64

nn::S4Layer<float> make_layer(nn::S4Parameterization param, Index H, Index N) {
  nn::S4Config cfg;
  cfg.channels = H;
  cfg.state_size = N;
  cfg.param = param;
  if (param == nn::S4Parameterization::Dplr)
    cfg.discretization = math::Discretization::Bilinear;
  return nn::S4Layer<float>(cfg);
}

void BM_KernelVandermonde(benchmark::State& state) {
  const Index L = state.range(0);
  const auto layer = make_layer(nn::S4Parameterization::Diagonal, kH, kN);
  HostTensor<float, 2> K({kH, L});
  for (auto _ : state) {
    cpu::ssm_kernel_vandermonde(cpu::DiagonalSsm<float>{layer.Lambda.view(), layer.B.view(),
                                                        layer.C.view(), layer.dt.view()},
                                math::Discretization::ZOH, K.view());
    benchmark::DoNotOptimize(K.data());
  }
  state.SetComplexityN(L);
  state.SetItemsProcessed(state.iterations() * kH * L);
}

// The Cauchy + Woodbury + inverse FFT part; C~ (a one-off per length) is made outside the loop.
void BM_KernelDplr(benchmark::State& state) {
  const Index L = state.range(0);
  const auto layer = make_layer(nn::S4Parameterization::Dplr, kH, kN);
  HostTensor<std::complex<float>, 2> Ct({kH, kN / 2});
  cpu::DplrSsm<float> s{layer.Lambda.view(), layer.P.view(), layer.B.view(), layer.C.view(),
                        layer.dt.view()};
  cpu::dplr_c_tilde(s, L, Ct.view());
  s.C = Ct.view();
  HostTensor<float, 2> K({kH, L});
  for (auto _ : state) {
    cpu::ssm_kernel_dplr(s, K.view());
    benchmark::DoNotOptimize(K.data());
  }
  state.SetComplexityN(L);
  state.SetItemsProcessed(state.iterations() * kH * L);
}

void BM_FftConv(benchmark::State& state) {
  const Index L = state.range(0);
  HostTensor<float, 3> u({1, L, kH}), y({1, L, kH});
  HostTensor<float, 2> K({kH, L});
  HostTensor<float, 1> D({kH});
  fill(u, 1);
  fill(K, 2);
  fill(D, 3);
  for (auto _ : state) {
    cpu::fft_conv(cpu::FftConvParams<float>{u.view(), K.view(), D.view(), y.view()});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetComplexityN(L);
  state.SetItemsProcessed(state.iterations() * kH * L);
}

// A whole layer (N = 64, batch 1): range(0) = L, range(1) = 1 for convolution mode (kernel +
// FFT convolution), 0 for recurrent mode; range(2) = 1 for DPLR, 0 for diagonal; range(3) = H.
// Both modes cost O(H), so L = 2^20 runs H = 16 to keep the memory and the time modest.
void BM_Layer(benchmark::State& state) {
  const Index L = state.range(0), H = state.range(3);
  const bool conv = state.range(1) != 0;
  const auto param =
      state.range(2) != 0 ? nn::S4Parameterization::Dplr : nn::S4Parameterization::Diagonal;
  const auto layer = make_layer(param, H, kN);
  HostTensor<float, 3> u({1, L, H}), y({1, L, H});
  fill(u, 4);
  for (auto _ : state) {
    if (conv)
      layer.forward_conv(u.view(), y.view());
    else
      layer.forward_recurrent(u.view(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * H * L);
}

BENCHMARK(BM_KernelVandermonde)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Complexity(benchmark::oNLogN)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_KernelDplr)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Complexity(benchmark::oNLogN)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_FftConv)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Complexity(benchmark::oNLogN)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Layer)
    ->ArgNames({"L", "conv", "dplr", "H"})
    ->Args({1 << 14, 1, 0, 256})
    ->Args({1 << 14, 0, 0, 256})
    ->Args({1 << 14, 1, 1, 256})
    ->Args({1 << 14, 0, 1, 256})
    ->Args({1 << 20, 1, 0, 16})
    ->Args({1 << 20, 0, 0, 16})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
