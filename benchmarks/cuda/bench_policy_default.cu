// The library's default selective-scan policy, timed on DESIGN.md's shapes.
#include "bench_scan.cuh"

namespace ssmkit::bench {

std::vector<ScanTiming> time_default_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<cuda::SelectiveScanPolicy>("default", shapes, runs);
}

}  // namespace ssmkit::bench
