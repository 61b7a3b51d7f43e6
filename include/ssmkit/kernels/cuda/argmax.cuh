// Greedy decoding's token choice on the GPU: ids[b] = argmax_v logits[b, v], the first maximum
// as torch.argmax and nn::Sampler take it, so only the ids travel back to the host.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cstdint>

namespace ssmkit::cuda {

namespace detail {

constexpr int kArgmaxThreads = 1024;

/// (value, index) of the two with the larger value, the smaller index on ties.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) {
    v = v2;
    i = i2;
  }
}

/// One block per row: strided per-thread maxima, then warp shuffles and shared memory. NaN
/// never wins a comparison, so a row of NaN yields id 0.
static __global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, Index ld, int V, std::int64_t* ids, Index ids_s) {
  __shared__ float best_v[kArgmaxThreads / 32];
  __shared__ int best_i[kArgmaxThreads / 32];
  const float* row = logits + static_cast<Index>(blockIdx.x) * ld;
  float v = -INFINITY;
  int i = 0;
  for (int k = static_cast<int>(threadIdx.x); k < V; k += kArgmaxThreads)
    argmax_merge(v, i, row[k], k);
  for (int off = 16; off > 0; off /= 2)
    argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
  const int warp = static_cast<int>(threadIdx.x) / 32;
  if (threadIdx.x % 32 == 0) {
    best_v[warp] = v;
    best_i[warp] = i;
  }
  __syncthreads();
  if (warp != 0)
    return;
  v = best_v[threadIdx.x];
  i = best_i[threadIdx.x];
  for (int off = 16; off > 0; off /= 2)
    argmax_merge(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
  if (threadIdx.x == 0)
    ids[static_cast<Index>(blockIdx.x) * ids_s] = i;
}

}  // namespace detail

/// ids (rows) = argmax of each row of logits (rows, V), ordered on `stream` (Device::CUDA).
inline void argmax(TensorView<const float, 2> logits, TensorView<std::int64_t, 1> ids,
                   cudaStream_t stream) {
  check_device(logits, "logits", Device::CUDA);
  check_device(ids, "ids", Device::CUDA);
  const Index rows = logits.size(0), V = logits.size(1);
  check_shape(ids, "ids", {rows});
  SSMKIT_CHECK(V >= 1 && V <= 2147483647, "logits", "size(1)", "in [1, 2^31)", V);
  SSMKIT_CHECK(logits.stride(1) == 1, "logits", "vocab stride", "1", logits.stride(1));
  if (rows == 0)
    return;
  detail::argmax_kernel<<<static_cast<unsigned>(rows), detail::kArgmaxThreads, 0, stream>>>(
      logits.data(), logits.stride(0), static_cast<int>(V), ids.data(), ids.stride(0));
  SSMKIT_CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace ssmkit::cuda
