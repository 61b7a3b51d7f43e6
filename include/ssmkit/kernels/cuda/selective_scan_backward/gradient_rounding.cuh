// Pass 4 of the CUDA scan backward: the float accumulators of dB, dC, dA, dD and dδ_bias (sums
// formed by atomics) rounded into the caller's gradient views.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"

namespace ssmkit::cuda::detail {

/// Pass 4: the float accumulators of dB, dC rounded into their views, one thread per
/// (batch, step, group, state).
template <class T>
__global__ void scan_backward_dbc_kernel(const ScanBackwardArgs<T> a) {
  const Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<Index>(a.batch) * a.L * a.G * a.N)
    return;
  const int n = static_cast<int>(i % a.N);
  const Index r = i / a.N;  // (b·L + t)·G + g
  const int g = static_cast<int>(r % a.G);
  const int t = static_cast<int>(r / a.G % a.L);
  const int b = static_cast<int>(r / a.G / a.L);
  const float* src = a.dBC_acc + r * 2 * a.N + n;
  a.dB[b * a.dB_s[0] + t * a.dB_s[1] + g * a.dB_s[2] + n * a.dB_s[3]] = from_float<T>(src[0]);
  a.dC[b * a.dC_s[0] + t * a.dC_s[1] + g * a.dC_s[2] + n * a.dC_s[3]] = from_float<T>(src[a.N]);
}

/// Pass 4 (parameters): dA, dD and dδ_bias from their accumulators, one thread per (channel,
/// state).
template <class T>
__global__ void scan_backward_params_kernel(const ScanBackwardArgs<T> a) {
  const Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<Index>(a.D) * a.N)
    return;
  const int n = static_cast<int>(i % a.N), d = static_cast<int>(i / a.N);
  a.dA[d * a.dA_s[0] + n * a.dA_s[1]] = a.dA_acc[i];
  if (n == 0 && a.dD_skip != nullptr)
    a.dD_skip[d * a.dD_skip_s] = a.dD_acc[d];
  if (n == 0 && a.ddelta_bias != nullptr)
    a.ddelta_bias[d * a.ddelta_bias_s] = a.dbias_acc[d];
}

}  // namespace ssmkit::cuda::detail
