// A policy variant: registers budgeted for 3 blocks per SM (168 instead of 128: no spills,
// 12 warps per SM instead of 16).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct Blocks3Policy : cuda::SelectiveScanPolicy {
  static constexpr int kMinBlocksPerSM = 3;
};

std::vector<ScanTiming> time_blocks3_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<Blocks3Policy>("b3", shapes, runs);
}

}  // namespace ssmkit::bench
