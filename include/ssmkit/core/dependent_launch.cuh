// Overlapping a kernel with the one before it on the stream (Hopper's programmatic dependent
// launch, CUDA Programming Guide §"Programmatic Dependent Launch"): the dependent grid is
// scheduled while its producer finishes, so its launch latency hides behind the producer's tail,
// then waits for the producer's memory before reading it.
#pragma once

#include "ssmkit/core/cuda_check.cuh"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace ssmkit::cuda {

/// Blocks until the producer grid has finished and its writes are visible, then lets the next
/// dependent grid launch. Every kernel of a dependent chain calls it before reading what an
/// earlier kernel wrote and triggers only after waiting, so that when a grid starts, every grid
/// but its own producer has finished. Returns at once without a dependent launch. Compiled for a
/// target before sm_90 it is a no-op, and launch_dependent then launches in stream order.
__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

namespace detail {

/// Whether `kernel`, as the current device runs it, was compiled for sm_90 or newer, i.e. with
/// wait_for_producer's grid-dependency wait in it. Code for an older target (a GPU before Hopper,
/// or PTX such as compute_80 that the driver compiles for a newer GPU) has no wait, so it must not
/// start before its producer has finished. Asked once per kernel, device and thread; the decode
/// loop asks per launch, so the answers are kept without a lock and found by a linear scan.
inline bool waits_for_producer(const void* kernel) {
  struct Known {
    const void* kernel;
    int device;
    bool waits;
  };
  thread_local std::vector<Known> known;
  int device = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&device));
  for (const Known& k : known)
    if (k.kernel == kernel && k.device == device)
      return k.waits;
  cudaFuncAttributes attributes{};
  SSMKIT_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  known.push_back({kernel, device, attributes.ptxVersion >= 90});
  return known.back().waits;
}

}  // namespace detail

/// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
/// previous work on `stream` (also inside a captured CUDA graph) where the kernel was compiled
/// with the wait for it, else as an ordinary launch; the kernel must call wait_for_producer()
/// before reading its inputs.
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  if (detail::waits_for_producer(reinterpret_cast<const void*>(kernel))) {
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace ssmkit::cuda
