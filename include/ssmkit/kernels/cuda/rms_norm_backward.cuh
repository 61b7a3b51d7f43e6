// Gradients of RMSNorm y = w·x·r, r = (mean(x²) + eps)^(-1/2), on the GPU: the math of
// nn::rms_norm_backward (nn/grad/rms_norm_backward.hpp), with n = x·r and dn = dy·w:
// dx = r·(dn − n·mean(dn·n)), dw = Σ_tokens dy·n.
//
// Pass 1: a block per run of rows writes dx row by row and its rows' sum of dy·n per feature into
// the workspace. Pass 2 adds those partials per feature in a fixed order, so dweight is the same
// on every run (no atomics).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/nn/grad/rms_norm_backward.hpp"  // nn::detail::check_rms_norm_backward

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace ssmkit::cuda {

namespace detail {

constexpr int kNormBwdThreads = 256;
constexpr Index kNormBwdMaxRowBlocks = 2048;  ///< pass 1 blocks (and partial rows) at most

/// Rows per pass-1 block for `tokens` rows.
inline Index norm_bwd_rows_per_block(Index tokens) {
  return std::max<Index>(1, (tokens + kNormBwdMaxRowBlocks - 1) / kNormBwdMaxRowBlocks);
}

/// Pass-1 blocks, each writing one partial row of dweight.
inline Index norm_bwd_row_blocks(Index tokens) {
  const Index per_block = norm_bwd_rows_per_block(tokens);
  return tokens <= 0 ? 0 : (tokens + per_block - 1) / per_block;
}

/// The block's sum of `v` (every thread gets it), in a fixed order: warps, then their sums.
template <class T>
__device__ __forceinline__ T norm_bwd_block_sum(T v, T* warp_sums) {
  for (int off = 16; off > 0; off /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, off);
  __syncthreads();  // the previous sum's readers are done with warp_sums
  if (threadIdx.x % 32 == 0)
    warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  T total = warp_sums[0];
#pragma unroll
  for (int i = 1; i < kNormBwdThreads / 32; ++i)
    total += warp_sums[i];
  return total;
}

/// Pass 1: rows [first, first + rows_per_block) of this block; partial row = Σ dy·n over them.
template <class T>
__global__ void __launch_bounds__(kNormBwdThreads)
    rms_norm_backward_rows_kernel(const T* x, Index ldx, const T* w, Index w_s, float eps,
                                  const T* dy, Index lddy, T* dx, Index lddx, T* partial,
                                  Index tokens, Index rows_per_block, int features) {
  __shared__ T warp_sums[kNormBwdThreads / 32];
  const Index first = static_cast<Index>(blockIdx.x) * rows_per_block;
  const Index last = min(first + rows_per_block, tokens);
  T* part = partial + static_cast<Index>(blockIdx.x) * features;
  for (Index t = first; t < last; ++t) {
    const T* xr = x + t * ldx;
    const T* gr = dy + t * lddy;
    T ss = 0;
    for (int f = static_cast<int>(threadIdx.x); f < features; f += kNormBwdThreads)
      ss = fmaf(xr[f], xr[f], ss);
    ss = norm_bwd_block_sum(ss, warp_sums);
    const T r = T(1) / sqrtf(ss / static_cast<T>(features) + eps);
    T dot = 0;
    for (int f = static_cast<int>(threadIdx.x); f < features; f += kNormBwdThreads) {
      const T n = xr[f] * r, g = gr[f];
      dot = fmaf(g * w[f * w_s], n, dot);
      part[f] = t == first ? g * n : fmaf(g, n, part[f]);
    }
    const T mean = norm_bwd_block_sum(dot, warp_sums) / static_cast<T>(features);
    T* dxr = dx + t * lddx;
    for (int f = static_cast<int>(threadIdx.x); f < features; f += kNormBwdThreads) {
      const T n = xr[f] * r;
      dxr[f] = r * (gr[f] * w[f * w_s] - n * mean);
    }
  }
}

/// Pass 2: 32 features per block; warp j adds partial rows j, j+8, … in order, then the warps'
/// sums are added in warp order.
template <class T>
__global__ void __launch_bounds__(kNormBwdThreads)
    rms_norm_backward_dweight_kernel(const T* partial, Index row_blocks, int features, T* dweight,
                                     Index dw_s, bool accumulate) {
  constexpr int kWarps = kNormBwdThreads / 32;
  __shared__ T sums[kWarps][32];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int f = static_cast<int>(blockIdx.x) * 32 + lane;
  T sum = 0;
  if (f < features)
    for (Index rb = warp; rb < row_blocks; rb += kWarps)
      sum += partial[rb * features + f];
  sums[warp][lane] = sum;
  __syncthreads();
  if (warp == 0 && f < features) {
    T total = accumulate ? dweight[f * dw_s] : T(0);
    for (int j = 0; j < kWarps; ++j)
      total += sums[j][lane];
    dweight[f * dw_s] = total;
  }
}

}  // namespace detail

/// Bytes of device workspace rms_norm_backward needs for `tokens` rows of `features`.
inline std::size_t rms_norm_backward_workspace_size(Index tokens, Index features) {
  if (features <= 0)
    return 0;
  return static_cast<std::size_t>(detail::norm_bwd_row_blocks(tokens)) *
         static_cast<std::size_t>(features) * sizeof(float);
}

/// Given x, weight and dy = ∂ℓ/∂y (tokens, features; rows with a row stride, features
/// contiguous): writes dx (tokens, features) and dweight (features; added to with `accumulate`),
/// ordered on `stream`. dx may be dy. `workspace` holds at least
/// rms_norm_backward_workspace_size(tokens, features) bytes of device memory. Throws
/// ssmkit::Error on invalid arguments or a failed launch.
inline void rms_norm_backward(TensorView<const float, 2> x, TensorView<const float, 1> weight,
                              double eps, TensorView<const float, 2> dy, TensorView<float, 2> dx,
                              TensorView<float, 1> dweight, cudaStream_t stream, void* workspace,
                              std::size_t workspace_bytes, bool accumulate = false) {
  nn::detail::check_rms_norm_backward(x, weight, eps, dy, dx, dweight, Device::CUDA);
  const Index tokens = x.size(0), features = x.size(1);
  SSMKIT_CHECK(x.stride(1) == 1, "x", "feature stride", "1", x.stride(1));
  SSMKIT_CHECK(dy.stride(1) == 1, "dy", "feature stride", "1", dy.stride(1));
  SSMKIT_CHECK(dx.stride(1) == 1, "dx", "feature stride", "1", dx.stride(1));
  SSMKIT_CHECK(features <= 2147483647, "x", "features", "< 2^31 on CUDA", features);
  const std::size_t need = rms_norm_backward_workspace_size(tokens, features);
  detail::check_workspace(workspace, workspace_bytes, need);
  if (features == 0)
    return;
  const Index rows_per_block = detail::norm_bwd_rows_per_block(tokens);
  const Index row_blocks = detail::norm_bwd_row_blocks(tokens);
  auto* partial = static_cast<float*>(workspace);
  if (row_blocks > 0) {
    detail::rms_norm_backward_rows_kernel<float>
        <<<static_cast<unsigned>(row_blocks), detail::kNormBwdThreads, 0, stream>>>(
            x.data(), x.stride(0), weight.data(), weight.stride(0), static_cast<float>(eps),
            dy.data(), dy.stride(0), dx.data(), dx.stride(0), partial, tokens, rows_per_block,
            static_cast<int>(features));
    SSMKIT_CUDA_CHECK_LAUNCH("rms_norm_backward_rows_kernel");
  }
  detail::rms_norm_backward_dweight_kernel<float>
      <<<static_cast<unsigned>((features + 31) / 32), detail::kNormBwdThreads, 0, stream>>>(
          partial, row_blocks, static_cast<int>(features), dweight.data(), dweight.stride(0),
          accumulate);
  SSMKIT_CUDA_CHECK_LAUNCH("rms_norm_backward_dweight_kernel");
}

}  // namespace ssmkit::cuda
