// Cross-entropy of logits against integer targets on the GPU, with its gradient: per row not
// ignored, loss_t = logsumexp(z_t) − z_t[y_t] and dlogits_t = scale·(softmax(z_t) − onehot(y_t)),
// as nn::cross_entropy (nn/grad/cross_entropy.hpp) computes them with scale = 1/count.
//
// A block per row: one pass of an online max and sum of exponentials, a second writing dlogits
// (float4 loads and stores where the rows are aligned).
// The row losses go to the workspace and one block adds them in a fixed order, so the sum is the
// same on every run (no atomics).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

namespace ssmkit::cuda {

namespace detail {

constexpr int kXentThreads = 512;

/// Merges running (max, Σ exp(z − max)) pairs; an empty pair has max −∞ and sum 0.
template <class T>
__device__ __forceinline__ void xent_merge(T& m, T& s, T m2, T s2) {
  const T mx = fmaxf(m, m2);
  if (mx == -INFINITY)
    return;
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

/// Adds z to a running (max, Σ exp(z − max)).
template <class T>
__device__ __forceinline__ void xent_add(T& m, T& s, T z) {
  if (z > m) {
    s = s * expf(m - z) + 1;
    m = z;
  } else {
    s += expf(z - m);
  }
}

/// Row t: loss into row_loss[t], gradient into dlogits (which may be logits). Rows whose start is
/// 16-byte aligned (logits' and dlogits') are read and written as float4 up to the last 4 columns.
template <class T>
__global__ void __launch_bounds__(kXentThreads)
    cross_entropy_rows_kernel(const T* logits, Index ld, const std::int64_t* targets, Index tgt_s,
                              T* dlogits, Index ldd, T* row_loss, Index vocab,
                              std::int64_t ignore_index, T scale) {
  static_assert(std::is_same_v<T, float>, "float4 rows");
  __shared__ T warp_m[kXentThreads / 32], warp_s[kXentThreads / 32];
  __shared__ T target_logit;
  const Index t = blockIdx.x;
  const T* z = logits + t * ld;
  T* dz = dlogits == nullptr ? nullptr : dlogits + t * ldd;
  const std::int64_t y = targets[t * tgt_s];
  if (y == ignore_index) {
    if (threadIdx.x == 0)
      row_loss[t] = 0;
    if (dz != nullptr)
      for (Index v = threadIdx.x; v < vocab; v += kXentThreads)
        dz[v] = 0;
    return;
  }
  const bool vec = reinterpret_cast<std::uintptr_t>(z) % 16 == 0 &&
                   reinterpret_cast<std::uintptr_t>(dz) % 16 == 0;
  const Index head = vec ? vocab / 4 * 4 : 0;  // columns read four at a time
  // A target out of range is the caller's error: a NaN loss and gradient, and no read of z[y].
  const bool valid = y >= 0 && y < vocab;
  if (threadIdx.x == 0)
    target_logit = valid ? z[y] : NAN;  // read before any thread overwrites the row
  T m = -INFINITY, s = 0;
  for (Index v = 4 * threadIdx.x; v < head; v += 4 * kXentThreads) {
    const float4 q = *reinterpret_cast<const float4*>(z + v);
    xent_add(m, s, q.x), xent_add(m, s, q.y), xent_add(m, s, q.z), xent_add(m, s, q.w);
  }
  for (Index v = head + threadIdx.x; v < vocab; v += kXentThreads)
    xent_add(m, s, z[v]);
  for (int off = 16; off > 0; off /= 2)
    xent_merge(m, s, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off));
  if (threadIdx.x % 32 == 0)
    warp_m[threadIdx.x / 32] = m, warp_s[threadIdx.x / 32] = s;
  __syncthreads();
  m = warp_m[0], s = warp_s[0];
  for (int i = 1; i < kXentThreads / 32; ++i)
    xent_merge(m, s, warp_m[i], warp_s[i]);
  const T lse = m + logf(s);
  if (threadIdx.x == 0)
    row_loss[t] = lse - target_logit;
  if (dz == nullptr)
    return;
  const auto grad = [&](Index v, T zv) -> T {
    const T p = expf(zv - lse);
    return valid ? scale * (v == y ? p - 1 : p) : NAN;
  };
  for (Index v = 4 * threadIdx.x; v < head; v += 4 * kXentThreads) {
    const float4 q = *reinterpret_cast<const float4*>(z + v);
    *reinterpret_cast<float4*>(dz + v) =
        make_float4(grad(v, q.x), grad(v + 1, q.y), grad(v + 2, q.z), grad(v + 3, q.w));
  }
  for (Index v = head + threadIdx.x; v < vocab; v += kXentThreads)
    dz[v] = grad(v, z[v]);
}

/// Σ row_loss in a fixed order (per-thread strided sums in double, then a fixed tree).
template <class T>
__global__ void __launch_bounds__(kXentThreads)
    cross_entropy_sum_kernel(const T* row_loss, Index rows, T* loss_sum) {
  __shared__ double partial[kXentThreads];
  double sum = 0;
  for (Index t = threadIdx.x; t < rows; t += kXentThreads)
    sum += static_cast<double>(row_loss[t]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kXentThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half)
      partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    *loss_sum = static_cast<T>(partial[0]);
}

}  // namespace detail

/// Bytes of device workspace cross_entropy needs for `tokens` rows (a loss per row).
inline std::size_t cross_entropy_workspace_size(Index tokens) {
  return tokens > 0 ? static_cast<std::size_t>(tokens) * sizeof(float) : 0;
}

/// For logits (tokens, vocab; rows with a row stride, vocab contiguous) and targets (tokens):
/// writes `*loss_sum` (one device float, overwritten) = Σ loss_t over rows whose target is not
/// `ignore_index`, and dlogits = scale·(softmax − onehot) (ignored rows zero) unless dlogits is
/// absent; dlogits may be logits (in place). Targets are checked by the caller: a row whose target
/// is neither ignore_index nor in [0, vocab) gets a NaN loss (so a NaN sum) and NaN gradient.
/// Ordered on `stream`; `workspace` holds at least cross_entropy_workspace_size(tokens) bytes of
/// device memory. Throws ssmkit::Error on invalid arguments or a failed launch.
inline void cross_entropy(TensorView<const float, 2> logits,
                          TensorView<const std::int64_t, 1> targets, TensorView<float, 2> dlogits,
                          float* loss_sum, cudaStream_t stream, void* workspace,
                          std::size_t workspace_bytes, std::int64_t ignore_index = -100,
                          double scale = 1.0) {
  const Index tokens = logits.size(0), vocab = logits.size(1);
  check_device(logits, "logits", Device::CUDA);
  check_device(targets, "targets", Device::CUDA);
  check_shape(targets, "targets", {tokens});
  SSMKIT_CHECK(logits.stride(1) == 1, "logits", "vocab stride", "1", logits.stride(1));
  if (!dlogits.absent()) {
    check_device(dlogits, "dlogits", Device::CUDA);
    check_shape(dlogits, "dlogits", {tokens, vocab});
    SSMKIT_CHECK(dlogits.stride(1) == 1, "dlogits", "vocab stride", "1", dlogits.stride(1));
    SSMKIT_CHECK(static_cast<const void*>(dlogits.data()) != logits.data() ||
                     dlogits.stride(0) == logits.stride(0),
                 "dlogits", "row stride", "logits' when in place", dlogits.stride(0));
  }
  SSMKIT_CHECK(loss_sum != nullptr, "loss_sum", "pointer", "one device float", "null");
  SSMKIT_CHECK(std::isfinite(scale), "scale", "value", "finite", scale);
  SSMKIT_CHECK(tokens <= 2147483647, "logits", "rows", "< 2^31 on CUDA", tokens);
  SSMKIT_CHECK(vocab >= 1 || tokens == 0, "logits", "vocab size", ">= 1", vocab);
  const std::size_t need = cross_entropy_workspace_size(tokens);
  detail::check_workspace(workspace, workspace_bytes, need);
  auto* row_loss = static_cast<float*>(workspace);
  if (tokens > 0) {
    detail::cross_entropy_rows_kernel<float>
        <<<static_cast<unsigned>(tokens), detail::kXentThreads, 0, stream>>>(
            logits.data(), logits.stride(0), targets.data(), targets.stride(0),
            dlogits.absent() ? nullptr : dlogits.data(), dlogits.absent() ? 0 : dlogits.stride(0),
            row_loss, vocab, ignore_index, static_cast<float>(scale));
    SSMKIT_CUDA_CHECK_LAUNCH("cross_entropy_rows_kernel");
  }
  detail::cross_entropy_sum_kernel<float>
      <<<1, detail::kXentThreads, 0, stream>>>(row_loss, tokens, loss_sum);
  SSMKIT_CUDA_CHECK_LAUNCH("cross_entropy_sum_kernel");
}

/// As above, with the workspace taken from and returned to the stream-ordered pool.
inline void cross_entropy(TensorView<const float, 2> logits,
                          TensorView<const std::int64_t, 1> targets, TensorView<float, 2> dlogits,
                          float* loss_sum, cudaStream_t stream, std::int64_t ignore_index = -100,
                          double scale = 1.0) {
  with_pool_workspace(
      cross_entropy_workspace_size(logits.size(0)), stream, [&](void* ws, std::size_t bytes) {
        cross_entropy(logits, targets, dlogits, loss_sum, stream, ws, bytes, ignore_index, scale);
      });
}

}  // namespace ssmkit::cuda
