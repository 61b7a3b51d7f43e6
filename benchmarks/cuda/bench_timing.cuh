// Timing helpers of the CUDA benchmarks: event-timed medians and the copy bandwidth that the
// floors are measured against.
#pragma once

#include <ssmkit/cuda.cuh>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
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

/// The flags the scan benchmarks take: --runs N (at least 3), --quick, --shape I (only the
/// I-th shape of the benchmark's list, counted from 0; for profiling one shape), and --mamba-ssm
/// FILE (mamba_ssm's times measured on this GPU by tools/bench_mamba_ssm.py, in place of
/// DESIGN.md's figures).
struct BenchArgs {
  int runs = 0;
  bool quick = false;
  int shape = -1;
  std::string mamba_ssm;
};

inline BenchArgs parse_bench_args(int argc, char** argv, int default_runs) {
  BenchArgs a;
  a.runs = default_runs;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      a.runs = std::max(3, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--quick") == 0)
      a.quick = true;
    else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc)
      a.shape = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--mamba-ssm") == 0 && i + 1 < argc)
      a.mamba_ssm = argv[++i];
  }
  return a;
}

/// mamba_ssm's time for one (direction, shape, dtype) from a file that tools/bench_mamba_ssm.py
/// wrote: lines `fwd|bwd batch D L fp32|bf16 ms`, `#` lines ignored. Throws when the file cannot
/// be read or lacks the row, so that a table never mixes measured and quoted figures silently.
inline double measured_mamba_ms(const std::string& file, const std::string& direction, Index batch,
                                Index D, Index L, const std::string& dtype) {
  std::ifstream in(file);
  if (!in)
    throw std::runtime_error("--mamba-ssm " + file + ": cannot be read");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream row(line);
    std::string dir, dt;
    long long b = 0, d = 0, l = 0;
    double ms = 0;
    if (!(row >> dir >> b >> d >> l >> dt >> ms))
      throw std::runtime_error("--mamba-ssm " + file + ": malformed line '" + line + "'");
    if (dir == direction && b == batch && d == D && l == L && dt == dtype)
      return ms;
  }
  throw std::runtime_error("--mamba-ssm " + file + ": no '" + direction + " " +
                           std::to_string(batch) + " " + std::to_string(D) + " " +
                           std::to_string(L) + " " + dtype + "' row");
}

/// The first `#` line of a --mamba-ssm file (where and how it was measured), for the table's note.
inline std::string mamba_ssm_source(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '#')
      return line.substr(line.find_first_not_of("# "));
  return file;
}

/// Puts mamba_ssm's times measured on this GPU (--mamba-ssm) in place of DESIGN.md's figures
/// in each shape's mamba_fp32_ms and mamba_bf16_ms, and prints which of the two the table uses.
template <class Shape>
void use_mamba_ssm_times(std::vector<Shape>& shapes, const BenchArgs& a, const char* direction) {
  if (a.mamba_ssm.empty()) {
    std::printf("mamba_ssm %s times: DESIGN.md's (H100 80GB, measured 2026-11-23)\n\n", direction);
    return;
  }
  for (Shape& s : shapes) {
    s.mamba_fp32_ms = measured_mamba_ms(a.mamba_ssm, direction, s.batch, s.D, s.L, "fp32");
    s.mamba_bf16_ms = measured_mamba_ms(a.mamba_ssm, direction, s.batch, s.D, s.L, "bf16");
  }
  std::printf("mamba_ssm %s times: measured (%s)\n\n", direction,
              mamba_ssm_source(a.mamba_ssm).c_str());
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
