// A policy variant: four warps per scheduler (more chunks and second passes, more warps to hide
// latency, at most 128 registers per thread).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct Occupancy4Policy : cuda::SelectiveScanPolicy {
  static constexpr int kWarpsPerScheduler = 4;
};

std::vector<ScanTiming> time_occupancy4_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<Occupancy4Policy>("occ4", shapes, runs);
}

}  // namespace ssmkit::bench
