// One decoding step of the S6 recurrence for a batch of sequences (Mamba, arXiv 2312.00752,
// Algorithm 2 at L = 1): Δ = softplus(δ + δ_bias), h ← exp(Δ·A)·h + Δ·B·u, out = (C·h +
// D·u)·silu(z). The same SelectiveScanParams as the scan, with length 1 and the state in h0 →
// h_final.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <cuda_runtime.h>

#include <type_traits>

namespace ssmkit::cuda {

namespace detail {

constexpr int kUpdateThreads = 128;

/// A thread per (batch, channel) walks its N states: one step has too little work per state
/// to share a channel between lanes (the softplus and gate would be repeated on each).
template <class T>
__global__ void __launch_bounds__(kUpdateThreads)
    selective_state_update_kernel(const ScanArgs<T> a) {
  const Index row = static_cast<Index>(blockIdx.x) * kUpdateThreads + threadIdx.x;
  if (row >= static_cast<Index>(a.batch) * a.D)
    return;
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
#pragma unroll 4
  for (int n = 0; n < a.N; ++n) {
    const float decay = ex2_mufu(dt * A_p[n * a.A_s[1]] * kLog2e);
    const float h = fmaf(decay, h0_p[n * a.h0_s[2]], du * to_float(B_p[n * a.B_s[3]]));
    h_p[n * a.h_final_s[2]] = h;  // after its own read: h0 and h_final may alias
    y = fmaf(to_float(C_p[n * a.C_s[3]]), h, y);
  }
  if (a.D_skip != nullptr)
    y = fmaf(a.D_skip[d * a.D_skip_s], u, y);
  if (a.z != nullptr)
    y *= silu_f(to_float(a.z[b * a.z_s[0] + d * a.z_s[2]]));
  a.out[b * a.out_s[0] + d * a.out_s[2]] = from_float<T>(y);
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
  const Index rows = p.batch() * p.channels();
  if (rows == 0)
    return;
  const detail::ScanArgs<T> args = detail::make_scan_args(p);
  const auto blocks =
      static_cast<unsigned>((rows + detail::kUpdateThreads - 1) / detail::kUpdateThreads);
  detail::selective_state_update_kernel<T><<<blocks, detail::kUpdateThreads, 0, stream>>>(args);
  SSMKIT_CUDA_CHECK_LAUNCH("selective_state_update_kernel");
}

}  // namespace ssmkit::cuda
