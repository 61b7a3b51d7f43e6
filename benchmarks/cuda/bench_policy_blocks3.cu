// A policy variant: 8 states per lane, 2 lanes per channel at N = 16 (64 channels per block:
// half the per-(step, channel) work per state of the default, half the threads).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct States8Policy : cuda::SelectiveScanPolicy {
  static constexpr int kStatesPerThread = 8;
  static constexpr int kMinLanes = 2;
};

std::vector<ScanTiming> time_states8_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<States8Policy>("s8", shapes, runs);
}

}  // namespace ssmkit::bench
