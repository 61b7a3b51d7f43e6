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

/// Device 0's properties in `prop`, printed as "device: NAME, N SMs, L2 M MB" and `end`; false,
/// after printing "no CUDA device", where there is none.
inline bool describe_device(cudaDeviceProp& prop, const char* end) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device\n");
    return false;
  }
  SSMKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB%s", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, end);
  return true;
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

/// mamba_ssm's times as tools/bench_mamba_ssm.py writes them: a `#` line saying where and how
/// they were measured, then lines `fwd|bwd batch D L fp32|bf16 ms`.
struct MambaSsmTimes {
  struct Row {
    std::string direction, dtype;
    long long batch, D, L;
    double ms;
  };
  std::string file, source;
  std::vector<Row> rows;

  /// The row's time; throws when the file lacks it, so that a table never mixes measured and
  /// quoted figures silently.
  double at(const std::string& direction, Index batch, Index D, Index L,
            const std::string& dtype) const {
    for (const Row& r : rows)
      if (r.direction == direction && r.batch == batch && r.D == D && r.L == L && r.dtype == dtype)
        return r.ms;
    throw std::runtime_error("--mamba-ssm " + file + ": no '" + direction + " " +
                             std::to_string(batch) + " " + std::to_string(D) + " " +
                             std::to_string(L) + " " + dtype + "' row");
  }
};

inline MambaSsmTimes read_mamba_ssm_times(const std::string& file) {
  std::ifstream in(file);
  if (!in)
    throw std::runtime_error("--mamba-ssm " + file + ": cannot be read");
  MambaSsmTimes t{file, file, {}};
  bool have_source = false;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    if (line[0] == '#') {
      const std::size_t text = line.find_first_not_of("# ");
      if (!have_source && text != std::string::npos)
        t.source = line.substr(text);
      have_source = true;
      continue;
    }
    std::istringstream fields(line);
    MambaSsmTimes::Row r{};
    if (!(fields >> r.direction >> r.batch >> r.D >> r.L >> r.dtype >> r.ms))
      throw std::runtime_error("--mamba-ssm " + file + ": malformed line '" + line + "'");
    t.rows.push_back(r);
  }
  return t;
}

/// Puts mamba_ssm's times measured on this GPU (--mamba-ssm) in place of DESIGN.md's figures
/// in each shape's mamba_fp32_ms and mamba_bf16_ms, and prints which of the two the table uses.
template <class Shape>
void use_mamba_ssm_times(std::vector<Shape>& shapes, const BenchArgs& a, const char* direction) {
  if (a.mamba_ssm.empty()) {
    std::printf("mamba_ssm %s times: DESIGN.md's (H100 80GB, measured 2026-11-23)\n\n", direction);
    return;
  }
  const MambaSsmTimes times = read_mamba_ssm_times(a.mamba_ssm);
  for (Shape& s : shapes) {
    s.mamba_fp32_ms = times.at(direction, s.batch, s.D, s.L, "fp32");
    s.mamba_bf16_ms = times.at(direction, s.batch, s.D, s.L, "bf16");
  }
  std::printf("mamba_ssm %s times: measured (%s)\n\n", direction, times.source.c_str());
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
