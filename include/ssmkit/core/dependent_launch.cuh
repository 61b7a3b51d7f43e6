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

namespace ssmkit::cuda {

/// Blocks until the producer grid has finished and its writes are visible, then lets the next
/// dependent grid launch. Every kernel of a dependent chain calls it before reading what an
/// earlier kernel wrote and triggers only after waiting, so that when a grid starts, every grid
/// but its own producer has finished. No-op before sm_90 and without a dependent launch.
__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

/// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
/// previous work on `stream` (also inside a captured CUDA graph); the kernel must call
/// wait_for_producer() before reading its inputs.
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
  config.attrs = &attribute;
  config.numAttrs = 1;
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace ssmkit::cuda
