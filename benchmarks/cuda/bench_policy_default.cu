// The library's default selective-scan policy and variants of how far it cuts sequences into
// chunks (they share the default's kernels), timed on the target shapes (benchmarks/RESULTS.md,
// top).
#include "bench_scan.cuh"

namespace ssmkit::bench {

std::vector<ScanTiming> time_default_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<cuda::SelectiveScanPolicy>("default", shapes, runs);
}

/// Fewer and more chunks than the default (less repeated work against more warps in flight).
struct Warps4Policy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 4;
};
struct Warps24Policy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 24;
};

std::vector<ScanTiming> time_variant_policies(const std::vector<ScanShape>& shapes, int runs) {
  std::vector<ScanTiming> out = time_policy<Warps4Policy>("w4", shapes, runs);
  for (auto& t : time_policy<Warps24Policy>("w24", shapes, runs))
    out.push_back(t);
  return out;
}

}  // namespace ssmkit::bench
