// A policy variant: twice the warps per scheduler before chunking stops (more chunks, more
// parallelism, more second-pass work).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct OccupancyPolicy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 3;
};

std::vector<ScanTiming> time_occupancy_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<OccupancyPolicy>("occ3", shapes, runs);
}

}  // namespace ssmkit::bench
