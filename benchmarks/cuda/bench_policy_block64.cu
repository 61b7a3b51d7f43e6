// A policy variant: blocks of 64 threads (finer spread of the blocks over the SMs, as many warps).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct SmallBlockPolicy : cuda::SelectiveScanPolicy {
  static constexpr int kThreads = 64;
};

std::vector<ScanTiming> time_block64_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<SmallBlockPolicy>("t64", shapes, runs);
}

}  // namespace ssmkit::bench
