// Gradient of an embedding lookup y[t] = W[id_t] on the GPU: dW[v] = Σ_{t : id_t = v} dy[t], as
// nn::embedding_backward (nn/grad/embedding_backward.hpp).
//
// A block owns a tile of vocabulary rows and 128 columns: it scans every id in token order and
// adds the rows of the tokens that fall in its tile, a thread per column. Each element of dW is
// thus summed by one thread in token order: the result is the same on every run (no atomics) and
// equals the CPU's float sums.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ssmkit::cuda {

namespace detail {

constexpr int kEmbBwdThreads = 128;          ///< columns per block, and ids read per round
constexpr Index kEmbBwdTargetBlocks = 2048;  ///< vocabulary tiles are cut to about this many blocks

template <class T>
__global__ void __launch_bounds__(kEmbBwdThreads)
    embedding_backward_kernel(const std::int64_t* ids, Index ids_s, Index tokens, const T* dy,
                              Index dy_s0, Index dy_s1, T* dw, Index dw_s0, Index dw_s1,
                              Index vocab, Index dim, Index rows_per_tile, int column_tiles,
                              bool accumulate) {
  constexpr int kWarps = kEmbBwdThreads / 32;
  __shared__ std::int64_t chunk_ids[kEmbBwdThreads];
  __shared__ unsigned hits[kWarps];
  const Index lo = static_cast<Index>(blockIdx.x / column_tiles) * rows_per_tile;
  const Index hi = min(lo + rows_per_tile, vocab);
  const Index c = static_cast<Index>(blockIdx.x % column_tiles) * kEmbBwdThreads + threadIdx.x;
  const bool active = c < dim;
  if (!accumulate && active)
    for (Index v = lo; v < hi; ++v)
      dw[v * dw_s0 + c * dw_s1] = 0;
  for (Index base = 0; base < tokens; base += kEmbBwdThreads) {
    const Index t = base + threadIdx.x;
    const std::int64_t id = t < tokens ? ids[t * ids_s] : -1;
    const bool mine = id >= lo && id < hi;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    chunk_ids[threadIdx.x] = id;
    if (threadIdx.x % 32 == 0)
      hits[threadIdx.x / 32] = ballot;
    __syncthreads();
    // Every thread walks the hits in token order (the same branch for the whole block).
    for (int w = 0; w < kWarps; ++w)
      for (unsigned m = hits[w]; m != 0; m &= m - 1) {
        const int j = w * 32 + __ffs(static_cast<int>(m)) - 1;
        if (active) {
          T* dst = dw + chunk_ids[j] * dw_s0 + c * dw_s1;
          *dst += dy[(base + j) * dy_s0 + c * dy_s1];
        }
      }
    __syncthreads();
  }
}

}  // namespace detail

/// Given token ids (tokens) and dy = ∂ℓ/∂y (tokens, dim) on Device::CUDA: writes dweight (vocab,
/// dim), or adds to it with `accumulate` (an embedding tied to the LM head gets both gradients),
/// ordered on `stream`. Ids are checked by the caller (they live on the device): an id outside
/// [0, vocab) adds to no row. Throws ssmkit::Error on invalid arguments or a failed launch.
inline void embedding_backward(TensorView<const std::int64_t, 1> ids, TensorView<const float, 2> dy,
                               TensorView<float, 2> dweight, cudaStream_t stream,
                               bool accumulate = false) {
  const Index tokens = ids.size(0), vocab = dweight.size(0), dim = dweight.size(1);
  check_device(ids, "ids", Device::CUDA);
  check_device(dy, "dy", Device::CUDA);
  check_device(dweight, "dweight", Device::CUDA);
  check_shape(dy, "dy", {tokens, dim});
  if (vocab == 0 || dim == 0)
    return;
  const Index column_tiles = (dim + detail::kEmbBwdThreads - 1) / detail::kEmbBwdThreads;
  const Index want_tiles = std::max<Index>(1, detail::kEmbBwdTargetBlocks / column_tiles);
  const Index rows_per_tile = (vocab + want_tiles - 1) / want_tiles;
  const Index blocks = (vocab + rows_per_tile - 1) / rows_per_tile * column_tiles;
  SSMKIT_CHECK(blocks <= 2147483647, "dweight", "column tiles", "< 2^31 on CUDA", column_tiles);
  detail::embedding_backward_kernel<float>
      <<<static_cast<unsigned>(blocks), detail::kEmbBwdThreads, 0, stream>>>(
          ids.data(), ids.stride(0), tokens, dy.data(), dy.stride(0), dy.stride(1), dweight.data(),
          dweight.stride(0), dweight.stride(1), vocab, dim, rows_per_tile,
          static_cast<int>(column_tiles), accumulate);
  SSMKIT_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace ssmkit::cuda
