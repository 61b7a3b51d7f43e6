// Timing helpers of the CUDA benchmarks: event-timed medians and the copy bandwidth that the
// floors are measured against.
#pragma once

#include <ssmkit/cuda.cuh>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
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

/// The flags the scan benchmarks take: --runs N (at least 3), --quick, and --shape I (only the
/// I-th shape of the benchmark's list, counted from 0; for profiling one shape).
struct BenchArgs {
  int runs;
  bool quick = false;
  int shape = -1;
};

inline BenchArgs parse_bench_args(int argc, char** argv, int default_runs) {
  BenchArgs a{default_runs};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      a.runs = std::max(3, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--quick") == 0)
      a.quick = true;
    else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc)
      a.shape = std::atoi(argv[++i]);
  }
  return a;
}

/// The shapes a benchmark runs: the first only with --quick, the I-th only with --shape I.
template <class Shape>
std::vector<Shape> selected_shapes(std::vector<Shape> all, const BenchArgs& a) {
  if (a.shape >= static_cast<int>(all.size()))
    throw std::invalid_argument("--shape " + std::to_string(a.shape) + ": the benchmark has " +
                                std::to_string(all.size()) + " shapes");
  if (a.shape >= 0)
    return {all[static_cast<std::size_t>(a.shape)]};
  if (a.quick)
    all.resize(1);
  return all;
}

}  // namespace ssmkit::bench
