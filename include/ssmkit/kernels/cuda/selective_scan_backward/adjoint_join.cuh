// Pass 2 of the CUDA scan backward: the chunks joined in order, h <- 2^(A·log2e·ΣΔ)·h + h_local
// forwards and the same for the adjoint backwards, giving each chunk's entry state and adjoint.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"

namespace ssmkit::cuda::detail {

/// Pass 2: one thread per (batch, channel, state) walks the chunks forwards, turning each local
/// final state into the state entering the chunk (not with checkpoints), then backwards, turning
/// each local adjoint into the adjoint leaving the chunk; what leaves the first chunk is ∂ℓ/∂h0.
template <class T>
__global__ void scan_backward_join_kernel(const ScanBackwardArgs<T> a) {
  const Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<Index>(a.batch) * a.D * a.N)
    return;
  const int n = static_cast<int>(i % a.N);
  const int d = static_cast<int>(i / a.N % a.D);
  const int b = static_cast<int>(i / (static_cast<Index>(a.N) * a.D));
  const float a2 = a.A[d * a.A_s[0] + n * a.A_s[1]] * kLog2e;
  const Index chunk_rows = static_cast<Index>(a.batch) * a.D;
  const Index row0 = static_cast<Index>(b) * a.D + d;
  // The walks are sequential; batches of chunks are loaded at once so that the loads' latency
  // is paid once per batch rather than once per chunk.
  constexpr int kBatch = 32;
  const auto walk = [&](float* values, float v, bool backwards) {
    for (int c0 = 0; c0 < a.chunks; c0 += kBatch) {
      float local[kBatch], decay[kBatch];
#pragma unroll
      for (int i = 0; i < kBatch; ++i)
        if (c0 + i < a.chunks) {
          const int c = backwards ? a.chunks - 1 - (c0 + i) : c0 + i;
          const Index row = c * chunk_rows + row0;
          local[i] = values[row * a.N + n];
          decay[i] = ex2_mufu(a2 * a.chunk_dt[row]);
        }
#pragma unroll
      for (int i = 0; i < kBatch; ++i)
        if (c0 + i < a.chunks) {
          const int c = backwards ? a.chunks - 1 - (c0 + i) : c0 + i;
          values[(c * chunk_rows + row0) * a.N + n] = v;
          v = fmaf(decay[i], v, local[i]);
        }
    }
    return v;
  };
  if (a.checkpoints == nullptr)
    walk(a.chunk_h, a.h0 != nullptr ? a.h0[b * a.h0_s[0] + d * a.h0_s[1] + n * a.h0_s[2]] : 0.f,
         false);
  const float q =
      walk(a.chunk_q,
           a.dh_final != nullptr
               ? a.dh_final[b * a.dh_final_s[0] + d * a.dh_final_s[1] + n * a.dh_final_s[2]]
               : 0.f,
           true);
  if (a.dh0 != nullptr)
    a.dh0[b * a.dh0_s[0] + d * a.dh0_s[1] + n * a.dh0_s[2]] = q;
}

}  // namespace ssmkit::cuda::detail
