// The library's default selective-scan policy and variants of how far it cuts sequences into
// chunks (they share the default's kernels), timed on DESIGN.md's shapes.
#include "bench_scan.cuh"

namespace ssmkit::bench {

std::vector<ScanTiming> time_default_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<cuda::SelectiveScanPolicy>("default", shapes, runs);
}

/// More and fewer chunks (more warps to hide latency against less repeated work).
struct Warps1Policy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 1;
};
struct Warps4Policy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 4;
};

std::vector<ScanTiming> time_variant_policies(const std::vector<ScanShape>& shapes, int runs) {
  std::vector<ScanTiming> out = time_policy<Warps1Policy>("w1", shapes, runs);
  for (auto& t : time_policy<Warps4Policy>("w4", shapes, runs))
    out.push_back(t);
  return out;
}

}  // namespace ssmkit::bench
