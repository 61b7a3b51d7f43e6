// Helpers shared by ssmkit's CPU benchmarks: seeded uniform fills of host tensors.
#pragma once

#include <ssmkit/core/host_tensor.hpp>

#include <cstdint>
#include <random>

namespace ssmkit::bench {

/// Uniform values in [lo, hi) from a seeded generator, converted to T.
template <class T, int R>
void fill(HostTensor<T, R>& t, std::uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (Index i = 0; i < t.numel(); ++i)
    t.data()[i] = static_cast<T>(dist(rng));
}

}  // namespace ssmkit::bench
