// S4 on the GPU: kernel generation (Vandermonde, DPLR + cuFFT inverse) and the cuFFT long
// convolution at S4-typical shapes (N = 64, H 256 … 1024, L 1024 … 16384, B = 8), timed with
// CUDA events (median of runs after a warm-up) against the copy floor, as markdown tables.
//   bench_cuda_s4 [--runs N] [--quick]   (--quick: the smallest shapes only)
#include "bench_timing.cuh"

#include <ssmkit/kernels/cuda/fft_conv.cuh>
#include <ssmkit/kernels/cuda/ssm_kernel_dplr.cuh>
#include <ssmkit/kernels/cuda/ssm_kernel_vandermonde.cuh>

#include <curand.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ssmkit::bench {
namespace {

#define BENCH_CURAND_CHECK(call)                                                  \
  do {                                                                            \
    if ((call) != CURAND_STATUS_SUCCESS)                                          \
      ::ssmkit::detail::throw_error(std::string("cuRAND call failed: ") + #call); \
  } while (0)

/// Uniform values in [lo, hi) on the device.
struct Random {
  curandGenerator_t gen{};
  Random() {
    BENCH_CURAND_CHECK(curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    BENCH_CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(gen, 1234));
  }
  ~Random() { curandDestroyGenerator(gen); }
  void fill(float* p, Index n) { BENCH_CURAND_CHECK(curandGenerateUniform(gen, p, n)); }
  void fill(double* p, Index n) { BENCH_CURAND_CHECK(curandGenerateUniformDouble(gen, p, n)); }
};

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "fp32" : "fp64";
}

/// A random stable system of H channels, M modes, rank 1, on the device (Re Lambda in
/// [-1, -0.05], Im in [0, pi M], dt in [1e-3, 1e-1]: S4D-like values; the timing does not
/// depend on them).
template <class T>
struct DeviceSystem {
  Index H, M;
  cuda::DeviceBuffer<std::complex<T>> Lambda, P, B, C;
  cuda::DeviceBuffer<T> dt;
  DeviceSystem(Index h, Index m) : H(h), M(m), Lambda(h * m), P(h * m), B(h * m), C(h * m), dt(h) {
    std::vector<std::complex<T>> lam(h * m), v(h * m);
    std::vector<T> d(h);
    for (Index i = 0; i < h * m; ++i) {
      const double x = double((i * 7919) % 1000) / 1000.0;
      lam[i] = {T(-0.05 - 0.95 * x), T(3.14159 * double(i % m))};
      v[i] = {T(x - 0.5), T(0.3 - x)};
    }
    for (Index i = 0; i < h; ++i)
      d[i] = T(std::pow(10.0, -3.0 + 2.0 * double(i % 17) / 16.0));
    Lambda.copy_from_host_async(lam.data(), h * m, nullptr);
    for (auto* b : {&P, &B, &C})
      b->copy_from_host_async(v.data(), h * m, nullptr);
    dt.copy_from_host_async(d.data(), h, nullptr);
    SSMKIT_CUDA_CHECK(cudaDeviceSynchronize());
  }
  cpu::DiagonalSsm<T> diagonal() {
    return {Lambda.template view<2>({H, M}), B.template view<2>({H, M}), C.template view<2>({H, M}),
            dt.template view<1>({H})};
  }
  cpu::DplrSsm<T> dplr() {
    return {Lambda.template view<2>({H, M}), P.template view<3>({H, M, 1}),
            B.template view<2>({H, M}), C.template view<2>({H, M}), dt.template view<1>({H})};
  }
};

template <class T>
void bench_kernels(Index H, Index L, int runs, double bw) {
  const Index M = 32;
  DeviceSystem<T> s(H, M);
  cuda::DeviceBuffer<T> K(H * L);
  const double vand = median_ms(2, runs, [&](int) {
    cuda::ssm_kernel_vandermonde(s.diagonal(), math::Discretization::ZOH,
                                 K.template view<2>({H, L}), nullptr);
  });
  cuda::DplrKernelPlan<T> plan;
  const double dplr = median_ms(2, runs, [&](int) {
    cuda::ssm_kernel_dplr(s.dplr(), K.template view<2>({H, L}), plan, nullptr);
  });
  // fp32 storage with float sums too (the faster, less precise option).
  double dplr_fast = dplr;
  if (std::is_same_v<T, float>)
    dplr_fast = median_ms(2, runs, [&](int) {
      cuda::ssm_kernel_dplr<T, T>(s.dplr(), K.template view<2>({H, L}), plan, nullptr);
    });
  const double bytes = double(H) * double(L) * sizeof(T), floor_ms = bytes / bw * 1e3;
  const double terms = double(H) * double(L) * double(M);
  std::printf("| %s | H=%lld, L=%lld | %.4f | %.4f | %.0f%% | %.1f | %.4f | %.1f | %.4f |\n",
              type_name<T>(), static_cast<long long>(H), static_cast<long long>(L), floor_ms, vand,
              100.0 * floor_ms / vand, terms / (vand * 1e-3) * 1e-9, dplr,
              double(H) * double(L / 2 + 1) * double(M) / (dplr * 1e-3) * 1e-9, dplr_fast);
}

template <class T>
void bench_conv(Index Bt, Index H, Index L, bool channel_major, int runs, double bw, Random& rng) {
  const Index n = Bt * L * H;
  cuda::DeviceBuffer<T> u(n), y(n), K(H * L), D(H);
  rng.fill(u.data(), n);
  rng.fill(K.data(), H * L);
  rng.fill(D.data(), H);
  const Shape<3> str = channel_major ? Shape<3>{H * L, 1, L} : Shape<3>{L * H, H, 1};
  cpu::FftConvParams<T> p{u.template view<3>({Bt, L, H}, str), K.template view<2>({H, L}),
                          D.template view<1>({H}), y.template view<3>({Bt, L, H}, str)};
  cuda::FftConvPlan<T> plan;
  const double ms = median_ms(2, runs, [&](int) { cuda::fft_conv(p, plan, nullptr); });
  const double bytes = (2.0 * double(n) + double(H) * double(L)) * sizeof(T);
  const double floor_ms = bytes / bw * 1e3;
  std::printf("| %s | %s | B=%lld, H=%lld, L=%lld | %.4f | %.4f | %.2f | %.2fx |\n", type_name<T>(),
              channel_major ? "channel-major" : "token-major", static_cast<long long>(Bt),
              static_cast<long long>(H), static_cast<long long>(L), floor_ms, ms,
              bytes / (ms * 1e-3) * 1e-12, ms / floor_ms);
}

int run(int argc, char** argv) {
  int runs = 20;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_cuda_s4 [--runs N] [--quick]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  SSMKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double bw = copy_bandwidth();
  std::printf("device: %s, %d SMs\ncopy bandwidth: %.3f TB/s (read + write)\n\n", prop.name,
              prop.multiProcessorCount, bw * 1e-12);

  const std::vector<Index> Hs = quick ? std::vector<Index>{256} : std::vector<Index>{256, 1024};
  const std::vector<Index> Ls =
      quick ? std::vector<Index>{1024} : std::vector<Index>{1024, 4096, 16384};
  std::printf("### S4 kernel generation (N = 64: 32 modes; DPLR rank 1)\n\n");
  std::printf(
      "| dtype | shape | write floor ms | Vandermonde ms | of floor | Gterms/s | DPLR ms "
      "| Gterms/s | DPLR float sums ms |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const Index H : Hs)
    for (const Index L : Ls) {
      bench_kernels<float>(H, L, runs, bw);
      bench_kernels<double>(H, L, runs, bw);
    }
  std::printf(
      "\n### FFT convolution y = K * u + D u (cuFFT, n = pow2 >= 2L; floor: u and y once "
      "+ K)\n\n");
  std::printf(
      "| dtype | layout | shape | floor ms | ms | TB/s | x floor |\n"
      "|---|---|---|---|---|---|---|\n");
  Random rng;
  for (const Index H : Hs)
    for (const Index L : Ls)
      for (const bool cm : {false, true})
        bench_conv<float>(8, H, L, cm, runs, bw, rng);
  bench_conv<double>(8, 256, quick ? 1024 : 4096, false, runs, bw, rng);
  return 0;
}

}  // namespace
}  // namespace ssmkit::bench

int main(int argc, char** argv) {
  try {
    return ssmkit::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_s4: %s\n", e.what());
    return 1;
  }
}
