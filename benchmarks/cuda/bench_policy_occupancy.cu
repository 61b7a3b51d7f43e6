// A policy variant: two warps per scheduler (fewer chunks and second passes, fewer warps to hide
// latency, more registers per thread).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct OccupancyPolicy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 2;
};

std::vector<ScanTiming> time_occupancy_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<OccupancyPolicy>("occ2", shapes, runs);
}

}  // namespace ssmkit::bench
