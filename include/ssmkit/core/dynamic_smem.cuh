// Dynamic shared memory past the 48 KB every GPU gives a block: checked against what the current
// device offers (sm_80 163 KB; sm_86, sm_89 and sm_120 99 KB; sm_90 227 KB), then opted into.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/error.hpp"

#include <cuda_runtime.h>

#include <cstddef>

namespace ssmkit::cuda {
namespace detail {

inline constexpr std::size_t kDefaultDynamicSmem = 48 * 1024;

/// Throws ssmkit::Error naming `kernel` unless `bytes` of shared memory per block fit in `limit`.
inline void check_dynamic_smem(std::size_t bytes, std::size_t limit, const char* kernel) {
  SSMKIT_CHECK(bytes <= limit, kernel, "shared memory per block (bytes)",
               ::ssmkit::detail::concat("<= ", limit, " (what this GPU offers a block)"), bytes);
}

}  // namespace detail

/// Lets `kernel` (named `name` in errors) take `bytes` of dynamic shared memory on the current
/// device, or throws ssmkit::Error where the device offers a block less than that.
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, std::size_t bytes, const char* name) {
  if (bytes <= detail::kDefaultDynamicSmem)
    return;
  int device = 0, limit = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&device));
  SSMKIT_CUDA_CHECK(
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  detail::check_dynamic_smem(bytes, static_cast<std::size_t>(limit), name);
  SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
}

}  // namespace ssmkit::cuda
