// A policy variant: 16-step tiles (half the shared memory and the tile's registers, twice the
// barriers per step).
#include "bench_scan.cuh"

namespace ssmkit::bench {

struct Tile16Policy : cuda::SelectiveScanPolicy {
  static constexpr int kTile = 16;
};

std::vector<ScanTiming> time_tile16_policy(const std::vector<ScanShape>& shapes, int runs) {
  return time_policy<Tile16Policy>("t16", shapes, runs);
}

}  // namespace ssmkit::bench
