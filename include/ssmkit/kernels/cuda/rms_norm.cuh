// RMSNorm on the GPU (Zhang & Sennrich, arXiv 1910.07467), as HF's MambaRMSNorm and
// nn::rms_norm compute it: y = w · (x / sqrt(mean(x²) + eps)) per row, in float.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cmath>

namespace ssmkit::cuda {

namespace detail {

constexpr int kNormThreads = 256;

/// One block per row: a block-wide sum of squares, then the scaled row.
static __global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const float* x, Index ldx, const float* w, float eps, float* y, Index ldy,
                    int features) {
  __shared__ float warp_sums[kNormThreads / 32];
  const float* xr = x + static_cast<Index>(blockIdx.x) * ldx;
  float ss = 0.f;
  for (int f = static_cast<int>(threadIdx.x); f < features; f += kNormThreads)
    ss = fmaf(xr[f], xr[f], ss);
  for (int off = 16; off > 0; off /= 2)
    ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (threadIdx.x % 32 == 0)
    warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  ss = 0.f;
#pragma unroll
  for (int i = 0; i < kNormThreads / 32; ++i)
    ss += warp_sums[i];
  const float r = 1.f / sqrtf(ss / static_cast<float>(features) + eps);
  float* yr = y + static_cast<Index>(blockIdx.x) * ldy;
  for (int f = static_cast<int>(threadIdx.x); f < features; f += kNormThreads)
    yr[f] = w[f] * (xr[f] * r);
}

}  // namespace detail

/// y (rows, features) = RMSNorm(x (rows, features)) · weight (features), ordered on `stream`.
/// Views on Device::CUDA with contiguous features; y may be x. Throws ssmkit::Error.
inline void rms_norm(TensorView<const float, 2> x, TensorView<const float, 1> weight, double eps,
                     TensorView<float, 2> y, cudaStream_t stream) {
  check_device(x, "x", Device::CUDA);
  check_device(weight, "weight", Device::CUDA);
  check_device(y, "y", Device::CUDA);
  const Index rows = x.size(0), features = x.size(1);
  check_shape(weight, "weight", {features});
  check_shape(y, "y", {rows, features});
  SSMKIT_CHECK(x.stride(1) == 1, "x", "feature stride", "1", x.stride(1));
  SSMKIT_CHECK(y.stride(1) == 1, "y", "feature stride", "1", y.stride(1));
  SSMKIT_CHECK(weight.stride(0) == 1 || features <= 1, "weight", "stride", "1", weight.stride(0));
  SSMKIT_CHECK(std::isfinite(eps) && eps >= 0, "eps", "value", "finite and >= 0", eps);
  SSMKIT_CHECK(rows <= 2147483647, "x", "rows = size(0)", "< 2^31 on CUDA", rows);
  SSMKIT_CHECK(features <= 2147483647, "x", "features = size(1)", "< 2^31 on CUDA", features);
  if (rows == 0)
    return;
  detail::rms_norm_kernel<<<static_cast<unsigned>(rows), detail::kNormThreads, 0, stream>>>(
      x.data(), x.stride(0), weight.data(), static_cast<float>(eps), y.data(), y.stride(0),
      static_cast<int>(features));
  SSMKIT_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}

}  // namespace ssmkit::cuda
