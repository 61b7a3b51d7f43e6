// Gradient clipping by global L2 norm on the GPU, as optim::clip_grad_norm and
// torch.nn.utils.clip_grad_norm_: with total = ‖(g_1, …, g_k)‖₂, every g_i is scaled by
// min(1, max_norm / (total + 1e-6)).
//
// A block per 4096-element chunk of the gradients writes its sum of squares (double) to a partial,
// one block adds the partials in a fixed order (the norm is the same on every run, no atomics)
// and decides the scale, and a last launch applies it on the device.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/optim/cuda/segments.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <vector>

namespace ssmkit::optim {

namespace detail {

constexpr int kClipThreads = 256;
constexpr Index kClipChunk = 4096;  ///< elements per block

/// One gradient: data, stride, length and the first chunk (block) that covers it.
struct ClipSegment {
  float* data;
  Index stride, n, first_block;
};

/// The sum of every thread's `mine`, added in a fixed tree over `sums` (a slot per thread), for
/// every thread.
template <class T>
__device__ __forceinline__ T clip_block_sum(T (&sums)[kClipThreads], T mine) {
  sums[threadIdx.x] = mine;
  __syncthreads();
  for (int half = kClipThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half)
      sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  return sums[0];
}

/// Σ g² of this block's chunk in double: per-thread sums, then a fixed tree.
template <class T>
__global__ void __launch_bounds__(kClipThreads)
    clip_sum_squares_kernel(const ClipSegment* segments, int count, T* partial) {
  __shared__ T sums[kClipThreads];
  Index begin = 0, end = 0;
  const ClipSegment& s = find_segment(segments, count, blockIdx.x, kClipChunk, begin, end);
  T sum = 0;
  for (Index i = begin + threadIdx.x; i < end; i += kClipThreads) {
    const T g = s.data[i * s.stride];
    sum += g * g;
  }
  sum = clip_block_sum(sums, sum);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = sum;
}

/// One block: norm_and_coef[0] = ‖g‖₂ from the partials (added in a fixed order),
/// norm_and_coef[1] = min(1, max_norm / (‖g‖₂ + 1e-6)).
template <class T>
__global__ void __launch_bounds__(kClipThreads)
    clip_norm_kernel(const T* partial, Index blocks, T max_norm, T* norm_and_coef) {
  __shared__ T sums[kClipThreads];
  T sum = 0;
  for (Index b = threadIdx.x; b < blocks; b += kClipThreads)
    sum += partial[b];
  sum = clip_block_sum(sums, sum);
  if (threadIdx.x == 0) {
    const T total = sqrt(sum);
    norm_and_coef[0] = total;
    const T coef = max_norm / (total + T(1e-6));
    norm_and_coef[1] = isnan(coef) ? coef : fmin(T(1), coef);  // NaN kept, as torch.clamp
  }
}

/// g ← g·coef when coef < 1 or NaN.
template <class T>
__global__ void __launch_bounds__(kClipThreads)
    clip_scale_kernel(const ClipSegment* segments, int count, const T* norm_and_coef) {
  const T coef = norm_and_coef[1];
  if (coef >= T(1))
    return;
  Index begin = 0, end = 0;
  const ClipSegment& s = find_segment(segments, count, blockIdx.x, kClipChunk, begin, end);
  for (Index i = begin + threadIdx.x; i < end; i += kClipThreads)
    s.data[i * s.stride] = static_cast<float>(static_cast<T>(s.data[i * s.stride]) * coef);
}

}  // namespace detail

/// Scales the float gradients (views on Device::CUDA) in place when their global norm exceeds
/// max_norm and returns that norm (before clipping), summed in double. Ordered on `stream`,
/// which it synchronises once to return the norm; its scratch (the table of gradients and the
/// partial sums) comes from the stream-ordered pool. Throws ssmkit::Error on invalid arguments or
/// a failed CUDA call.
inline double clip_grad_norm(const std::vector<TensorView<float, 1>>& grads, double max_norm,
                             cudaStream_t stream) {
  SSMKIT_CHECK(std::isfinite(max_norm) && max_norm > 0, "max_norm", "value", "finite and > 0",
               max_norm);
  std::vector<detail::ClipSegment> segments;
  Index blocks = 0;
  for (const auto& g : grads) {
    check_device(g, "grads", Device::CUDA);
    if (g.size(0) == 0)
      continue;
    segments.push_back({g.data(), g.stride(0), g.size(0), blocks});
    blocks += (g.size(0) + detail::kClipChunk - 1) / detail::kClipChunk;
  }
  if (blocks == 0)
    return 0.0;
  SSMKIT_CHECK(blocks <= 2147483647, "grads", "4096-element chunks", "< 2^31 on CUDA", blocks);
  // Workspace: [norm, coef] then the partials (doubles), then the table.
  const std::size_t doubles = 2 + static_cast<std::size_t>(blocks);
  const std::size_t bytes = doubles * sizeof(double) + segments.size() * sizeof(segments[0]);
  double norm = 0;
  cuda::with_pool_workspace(bytes, stream, [&](void* ws, std::size_t) {
    auto* norm_and_coef = static_cast<double*>(ws);
    double* partial = norm_and_coef + 2;
    auto* table = reinterpret_cast<detail::ClipSegment*>(norm_and_coef + doubles);
    SSMKIT_CUDA_CHECK(cudaMemcpyAsync(table, segments.data(), segments.size() * sizeof(segments[0]),
                                      cudaMemcpyHostToDevice, stream));
    const int count = static_cast<int>(segments.size());
    const auto grid = static_cast<unsigned>(blocks);
    detail::clip_sum_squares_kernel<double>
        <<<grid, detail::kClipThreads, 0, stream>>>(table, count, partial);
    SSMKIT_CUDA_CHECK_LAUNCH("clip_sum_squares_kernel");
    detail::clip_norm_kernel<double>
        <<<1, detail::kClipThreads, 0, stream>>>(partial, blocks, max_norm, norm_and_coef);
    SSMKIT_CUDA_CHECK_LAUNCH("clip_norm_kernel");
    detail::clip_scale_kernel<double>
        <<<grid, detail::kClipThreads, 0, stream>>>(table, count, norm_and_coef);
    SSMKIT_CUDA_CHECK_LAUNCH("clip_scale_kernel");
    SSMKIT_CUDA_CHECK(
        cudaMemcpyAsync(&norm, norm_and_coef, sizeof(double), cudaMemcpyDeviceToHost, stream));
  });
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return norm;
}

}  // namespace ssmkit::optim
