// Helpers of the CUDA tests: the no-GPU skip, host/device tensors with any memory order, storage
// conversions, and a poisoned download.
#pragma once

#include <ssmkit/cuda.cuh>

#include "testing.hpp"

#include <array>
#include <random>
#include <vector>

namespace ssmkit::testing {

/// Bounds for outputs stored in 2 bytes, against an oracle that reads the same rounded inputs:
/// only the outputs' rounding differs, at most the unit roundoff in norm, 2^-11 for half and 2^-8
/// for bfloat16. The bounds are about four and two and a half of those, as on the CPU.
constexpr double kHalfTol = 2e-3;
constexpr double kBf16Tol = 1e-2;

/// Skips the test (CI has nvcc but no GPU) with a message saying why.
#define SSMKIT_REQUIRE_GPU()                                                      \
  do {                                                                            \
    if (::ssmkit::cuda::device_count() == 0)                                      \
      GTEST_SKIP() << "no CUDA device: the CUDA tests only compile on this host"; \
  } while (0)

/// Skips the test, as SSMKIT_REQUIRE_GPU does, unless `bytes` plus 1 GiB (for workspaces) of
/// device memory are free.
#define SSMKIT_REQUIRE_GPU_MEMORY(bytes)                                       \
  do {                                                                         \
    SSMKIT_REQUIRE_GPU();                                                      \
    std::size_t free_b = 0, total_b = 0;                                       \
    SSMKIT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));                      \
    if (free_b < static_cast<std::size_t>(bytes) + (std::size_t{1} << 30))     \
      GTEST_SKIP() << "needs " << (static_cast<std::size_t>(bytes) >> 20)      \
                   << " MiB of GPU memory, " << (free_b >> 20) << " MiB free"; \
  } while (0)

inline double to_double(float x) {
  return x;
}
inline double to_double(__half x) {
  return __half2float(x);
}
inline double to_double(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
T from_double(double x) {
  if constexpr (std::is_same_v<T, float>)
    return static_cast<float>(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(static_cast<float>(x));
  else
    return __float2bfloat16_rn(static_cast<float>(x));
}

/// A tensor of logical shape `shape` stored in memory order `order` (a permutation of the
/// dimensions, slowest first) with its elements in storage type T on the host and the device,
/// and the same values in double (logical row-major) for the oracle.
template <class T, int Rank>
struct DualTensor {
  Shape<Rank> shape{};
  Shape<Rank> strides{};      // logical dimension -> memory stride
  std::vector<T> host;        // memory order
  std::vector<double> exact;  // logical row-major, the stored values exactly
  cuda::DeviceBuffer<T> dev;

  DualTensor(const Shape<Rank>& shp, const std::array<int, Rank>& order, std::uint64_t seed,
             double lo, double hi, cudaStream_t stream)
      : shape(shp) {
    Index acc = 1;
    for (int k = Rank - 1; k >= 0; --k) {
      strides[order[k]] = acc;
      acc *= shape[order[k]];
    }
    const Index n = acc;
    host.resize(static_cast<std::size_t>(n));
    exact.resize(static_cast<std::size_t>(n));
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    const auto logical = contiguous_strides<Rank>(shape);
    for (Index i = 0; i < n; ++i) {
      Index off = 0, rest = i;
      for (int d = 0; d < Rank; ++d) {
        off += rest / logical[d] * strides[d];
        rest %= logical[d];
      }
      host[static_cast<std::size_t>(off)] = from_double<T>(dist(rng));
      exact[static_cast<std::size_t>(i)] = to_double(host[static_cast<std::size_t>(off)]);
    }
    dev = cuda::DeviceBuffer<T>(n);
    dev.copy_from_host_async(host.data(), n, stream);
  }

  TensorView<T, Rank> device_view() { return dev.template view<Rank>(shape, strides); }
  TensorView<double, Rank> exact_view() { return TensorView<double, Rank>(exact.data(), shape); }

  /// Sets the device copy to NaN everywhere (every byte 0xFF).
  void poison(cudaStream_t stream) { dev.fill_bytes_async(0xFF, stream); }

  /// The device values in logical row-major order, as double (synchronises the stream).
  std::vector<double> download(cudaStream_t stream) {
    dev.copy_to_host_async(host.data(), dev.size(), stream);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<double> out(exact.size());
    const auto logical = contiguous_strides<Rank>(shape);
    for (Index i = 0; i < static_cast<Index>(out.size()); ++i) {
      Index off = 0, rest = i;
      for (int d = 0; d < Rank; ++d) {
        off += rest / logical[d] * strides[d];
        rest %= logical[d];
      }
      out[static_cast<std::size_t>(i)] = to_double(host[static_cast<std::size_t>(off)]);
    }
    return out;
  }
};

/// An owned CUDA stream for one test.
struct TestStream {
  cudaStream_t s{};
  TestStream() { SSMKIT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~TestStream() { cudaStreamDestroy(s); }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
};

}  // namespace ssmkit::testing
