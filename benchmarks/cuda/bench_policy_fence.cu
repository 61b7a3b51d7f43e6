// A policy variant: 8 states per thread, so a 16-state channel takes two lanes that meet in a
// shuffle (twice the threads without chunking, half the state registers, repeated softplus/gate).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct SplitPolicy : cuda::SelectiveScanPolicy {
  static constexpr int kStatesPerThread = 8;
};

std::vector<ScanTiming> time_split_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<SplitPolicy>("s8", shapes, runs);
}

}  // namespace ssmkit::bench
