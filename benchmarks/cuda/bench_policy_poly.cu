// A policy variant: part of the exponentials as a polynomial on the FMA pipes (MUFU relief).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct PolyPolicy : cuda::SelectiveScanPolicy {
  static constexpr int kPolyStates = 3;
};

std::vector<ScanTiming> time_poly_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<PolyPolicy>("poly3", shapes, runs);
}

}  // namespace ssmkit::bench
