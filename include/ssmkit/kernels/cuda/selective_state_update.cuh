// One decoding step of the S6 recurrence for a batch of sequences (Mamba, arXiv 2312.00752,
// Algorithm 2 at L = 1): Δ = softplus(δ + δ_bias), h ← exp(Δ·A)·h + Δ·B·u, out = (C·h +
// D·u)·silu(z). The same SelectiveScanParams as the scan, with length 1 and the state in h0 →
// h_final.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/scan_math.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <cuda_runtime.h>

#include <type_traits>

namespace ssmkit::cuda {

namespace detail {

constexpr int kUpdateThreads = 128;

/// States n0 … n0+3 (those below N) of one channel advanced by one token — h ← exp(Δ·A)·h +
/// Δu·B — from h0 into h (which may alias: each is read before written); returns Σ C·h over them.
/// `vec`: both state rows are contiguous 16-byte vectors (strides then 1).
template <class LoadB, class LoadC>
__device__ __forceinline__ float advance_states4(const float* h0, float* h, Index h0_s, Index h_s,
                                                 bool vec, const float* A, Index A_s, int n0, int N,
                                                 float dt, float du, LoadB&& B, LoadC&& C) {
  float v[4];
  if (vec) {
    const float4 q = *reinterpret_cast<const float4*>(h0 + n0);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      v[j] = n0 + j < N ? h0[(n0 + j) * h0_s] : 0.f;
  }
  float y = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int n = n0 + j;
    if (n < N) {
      const float decay = ex2_mufu(dt * A[n * A_s] * kLog2e);
      v[j] = fmaf(decay, v[j], du * B(n));
      y = fmaf(C(n), v[j], y);
    }
  }
  if (vec) {
    *reinterpret_cast<float4*>(h + n0) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (n0 + j < N)
        h[(n0 + j) * h_s] = v[j];
  }
  return y;
}

/// K lanes per (batch, channel), each owning runs of 4 consecutive states (16-byte vectors of
/// h0 and h_final when `vec`): a warp then reads and writes whole contiguous state rows. The
/// lanes' partial outputs meet in a shuffle sum; each lane repeats the channel's softplus.
template <class T>
__global__ void __launch_bounds__(kUpdateThreads)
    selective_state_update_kernel(const ScanArgs<T> a, bool vec) {
  const int K = a.lanes_per_channel;
  const int lane = static_cast<int>(threadIdx.x) % K;
  const Index row_raw = (static_cast<Index>(blockIdx.x) * kUpdateThreads + threadIdx.x) / K;
  const bool active = row_raw < static_cast<Index>(a.batch) * a.D;
  const Index row = active ? row_raw : 0;  // idle lanes only join the shuffles
  const Index b = row / a.D, d = row % a.D, g = d / a.channels_per_group;
  float dt = to_float(a.delta[b * a.delta_s[0] + d * a.delta_s[2]]);
  if (a.delta_bias != nullptr)
    dt += a.delta_bias[d * a.delta_bias_s];
  if (a.softplus)
    dt = softplus_f(dt);
  const float u = to_float(a.u[b * a.u_s[0] + d * a.u_s[2]]);
  const float du = dt * u;
  const T* B_p = a.B + b * a.B_s[0] + g * a.B_s[2];
  const T* C_p = a.C + b * a.C_s[0] + g * a.C_s[2];
  const float* A_p = a.A + d * a.A_s[0];
  const float* h0_p = a.h0 + b * a.h0_s[0] + d * a.h0_s[1];
  float* h_p = a.h_final + b * a.h_final_s[0] + d * a.h_final_s[1];
  float y = 0.f;
  for (int n0 = 4 * lane; active && n0 < a.N; n0 += 4 * K)
    y += advance_states4(
        h0_p, h_p, a.h0_s[2], a.h_final_s[2], vec, A_p, a.A_s[1], n0, a.N, dt, du,
        [&](int n) { return to_float(B_p[n * a.B_s[3]]); },
        [&](int n) { return to_float(C_p[n * a.C_s[3]]); });
  for (int off = K / 2; off > 0; off /= 2)
    y += __shfl_xor_sync(0xffffffffu, y, off);
  if (!active || lane != 0)
    return;
  if (a.D_skip != nullptr)
    y = fmaf(a.D_skip[d * a.D_skip_s], u, y);
  if (a.z != nullptr)
    y *= silu_f(to_float(a.z[b * a.z_s[0] + d * a.z_s[2]]));
  a.out[b * a.out_s[0] + d * a.out_s[2]] = from_float<T>(y);
}

/// True when every (batch, channel) state row of `v` is 16-byte vectors of contiguous floats.
template <class V>
bool state_rows_vectorisable(const V& v) {
  return v.stride(2) == 1 && v.size(2) % 4 == 0 && aligned16(v.data()) && v.stride(0) % 4 == 0 &&
         v.stride(1) % 4 == 0;
}

}  // namespace detail

/// Advances the states h0 → h_final (which may be the same memory) by the one token in p.u
/// (length 1) and writes its output, ordered on `stream`. Throws ssmkit::Error on invalid
/// arguments (h0 and h_final are required here) or a failed launch.
template <class T, class W>
void selective_state_update(const SelectiveScanParams<T, W>& p, cudaStream_t stream) {
  static_assert(std::is_same_v<W, float>,
                "the CUDA step keeps A, D, delta_bias and states in float");
  validate(p, Device::CUDA);
  SSMKIT_CHECK(p.length() == 1, "u", "length = size(1)", "1 for one decoding step", p.length());
  SSMKIT_CHECK(!p.h0.absent(), "h0", "presence", "the state before the step", "absent");
  SSMKIT_CHECK(!p.h_final.absent(), "h_final", "presence", "the state after the step", "absent");
  SSMKIT_CHECK(p.batch() <= 2147483647, "u", "batch size", "< 2^31 on CUDA", p.batch());
  SSMKIT_CHECK(p.channels() <= 2147483647, "u", "channels", "< 2^31 on CUDA", p.channels());
  const Index rows = p.batch() * p.channels();
  if (rows == 0)
    return;
  detail::ScanArgs<T> args = detail::make_scan_args(p);
  int K = 1;  // lanes per channel: enough runs of 4 states for each, at most a warp
  while (K < 32 && 4 * K < p.state_size())
    K *= 2;
  args.lanes_per_channel = K;
  const bool vec =
      detail::state_rows_vectorisable(p.h0) && detail::state_rows_vectorisable(p.h_final);
  const Index threads = rows * K;
  const Index blocks = (threads + detail::kUpdateThreads - 1) / detail::kUpdateThreads;
  SSMKIT_CHECK(blocks <= 2147483647, "u", "batch·channel blocks", "< 2^31 on CUDA", blocks);
  detail::selective_state_update_kernel<T>
      <<<static_cast<unsigned>(blocks), detail::kUpdateThreads, 0, stream>>>(args, vec);
  SSMKIT_CUDA_CHECK_LAUNCH("selective_state_update_kernel");
}

}  // namespace ssmkit::cuda
