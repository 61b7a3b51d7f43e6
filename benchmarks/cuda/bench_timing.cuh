// Timing helpers of the CUDA benchmarks: event-timed medians and the copy bandwidth that the
// floors are measured against.
#pragma once

#include <ssmkit/cuda.cuh>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace ssmkit::bench {

/// Median of `runs` event-timed calls of fn(i) after `warmup` untimed ones, in milliseconds.
template <class F>
double median_ms(int warmup, int runs, F&& fn) {
  for (int i = 0; i < warmup; ++i)
    fn(i);
  cudaEvent_t start, stop;
  SSMKIT_CUDA_CHECK(cudaEventCreate(&start));
  SSMKIT_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(static_cast<std::size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    SSMKIT_CUDA_CHECK(cudaEventRecord(start));
    fn(warmup + i);
    SSMKIT_CUDA_CHECK(cudaEventRecord(stop));
    SSMKIT_CUDA_CHECK(cudaEventSynchronize(stop));
    SSMKIT_CUDA_CHECK(cudaEventElapsedTime(&ms[static_cast<std::size_t>(i)], start, stop));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/// Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB.
inline double copy_bandwidth() {
  const Index n = Index{1} << 30;
  cuda::DeviceBuffer<char> a(n), b(n);
  a.fill_bytes_async(1, nullptr);
  const double ms = median_ms(3, 20, [&](int) {
    SSMKIT_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), static_cast<std::size_t>(n),
                                      cudaMemcpyDeviceToDevice, nullptr));
  });
  return 2.0 * static_cast<double>(n) / (ms * 1e-3);
}

/// The flags the scan benchmarks take: --runs N (at least 3) and --quick.
struct BenchArgs {
  int runs;
  bool quick = false;
};

inline BenchArgs parse_bench_args(int argc, char** argv, int default_runs) {
  BenchArgs a{default_runs};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      a.runs = std::max(3, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--quick") == 0)
      a.quick = true;
  }
  return a;
}

}  // namespace ssmkit::bench
