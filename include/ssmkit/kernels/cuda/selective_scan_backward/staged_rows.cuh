// The chunk's rows of B and C staged once per block in shared memory, and read back as each
// lane's states (the B_t, C_t of Mamba's Algorithm 2, arXiv 2312.00752).
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace ssmkit::cuda::detail {

/// The type B and C rows are staged in: 2-byte storage as itself (exact, and a lane reads its
/// states as half the bytes; widening them costs an instruction per value), else float.
template <class T>
using staged_t = std::conditional_t<sizeof(T) == 2, T, float>;

/// A staged value of type Staged (staged_t<T> or float) from the float a T was widened to (exact).
template <class T, class Staged = staged_t<T>>
__device__ __forceinline__ Staged to_staged(float x) {
  if constexpr (sizeof(Staged) == 2)
    return from_float<T>(x);
  else
    return x;
}

/// The chunk's rows of B and C for group g as Staged (staged_t<T> or float), [step][B|C][state
/// padded to padded_n], zero past N and from step len to len_padded (padded_n = a.padded_n, a
/// constant where the lane count is compiled in); the whole block takes part. Each thread has
/// kBatch loads in flight before it widens and stores any of them (one load after another cost a
/// memory latency each).
template <int kThreads, class T, class Staged = staged_t<T>>
__device__ __forceinline__ void stage_chunk_states(const ScanBackwardArgs<T>& a, float* bc, int b,
                                                   int g, int t_begin, int len, int len_padded,
                                                   int padded_n) {
  constexpr int kBatch = 8;
  Staged* out = reinterpret_cast<Staged*>(bc);
  const int row = 2 * padded_n, total = len_padded * row;
  if (a.bc_time_vec && kThreads % row == 0) {
    // Unit time stride: each thread loads kVec consecutive steps of one column (state n of B or
    // C) as one 16-byte vector. One step per load made every warp request touch 32 rows, L
    // elements apart, and fetch each 32-byte sector from L1 again for its next steps.
    constexpr int kVec = 16 / static_cast<int>(sizeof(T)), kVecBatch = 4;
    const int col = static_cast<int>(threadIdx.x) % row, n = col % padded_n;
    const int first = static_cast<int>(threadIdx.x) / row * kVec, every = kThreads / row * kVec;
    const bool is_b = col < padded_n, here = n < a.N;
    const T* src = (is_b ? a.B + b * a.B_s[0] + g * a.B_s[2] + n * a.B_s[3]
                         : a.C + b * a.C_s[0] + g * a.C_s[2] + n * a.C_s[3]) +
                   t_begin;
    for (int k0 = first; k0 < len_padded; k0 += kVecBatch * every) {
      StepRegs<kVec, T, true> v[kVecBatch];
#pragma unroll
      for (int r = 0; r < kVecBatch; ++r) {
        const int k = k0 + r * every;
#pragma unroll
        for (int w = 0; w < StepRegs<kVec, T, true>::kWords; ++w)
          v[r].w[w] = 0u;
        if (here)  // the chunk's last vector may end past len: its steps one by one, zeros after
          load_steps(src + k, 1, k, len, v[r]);
      }
#pragma unroll
      for (int r = 0; r < kVecBatch; ++r)
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          if (k0 + r * every + i < len_padded)
            out[(k0 + r * every + i) * row + col] = to_staged<T, Staged>(v[r].get(i));
    }
    return;
  }
  if (kThreads % row == 0) {
    // Every element a thread stages lies in one column (state n of B or C), every
    // (kThreads / row)-th step: its address is worked out once, then advanced by the time stride.
    const int col = static_cast<int>(threadIdx.x) % row, n = col % padded_n;
    const int first = static_cast<int>(threadIdx.x) / row, every = kThreads / row;
    const bool is_b = col < padded_n, here = n < a.N;
    const T* src = is_b ? a.B + b * a.B_s[0] + g * a.B_s[2] + n * a.B_s[3]
                        : a.C + b * a.C_s[0] + g * a.C_s[2] + n * a.C_s[3];
    const Index time_stride = is_b ? a.B_s[1] : a.C_s[1];
    for (int k0 = first; k0 < len_padded; k0 += kBatch * every) {
      T v[kBatch];
#pragma unroll
      for (int r = 0; r < kBatch; ++r) {
        const int k = k0 + r * every;
        v[r] = here && k < len ? __ldg(src + (t_begin + k) * time_stride) : from_float<T>(0.f);
      }
#pragma unroll
      for (int r = 0; r < kBatch; ++r)
        if (k0 + r * every < len_padded)
          out[(k0 + r * every) * row + col] = to_staged<T, Staged>(to_float(v[r]));
    }
    return;
  }
  for (int i0 = static_cast<int>(threadIdx.x); i0 < total; i0 += kBatch * kThreads) {
    T v[kBatch];
#pragma unroll
    for (int r = 0; r < kBatch; ++r) {
      const int i = i0 + r * kThreads;
      const int t = t_begin + i / row, which = i % row / padded_n, n = i % padded_n;
      v[r] = from_float<T>(0.f);
      if (i < len * row && n < a.N)
        v[r] = which == 0 ? __ldg(a.B + b * a.B_s[0] + t * a.B_s[1] + g * a.B_s[2] + n * a.B_s[3])
                          : __ldg(a.C + b * a.C_s[0] + t * a.C_s[1] + g * a.C_s[2] + n * a.C_s[3]);
    }
#pragma unroll
    for (int r = 0; r < kBatch; ++r)
      if (i0 + r * kThreads < total)
        out[i0 + r * kThreads] = to_staged<T, Staged>(to_float(v[r]));
  }
}

/// This lane's S states from n0 of B (which = 0) or C (1) at step k of the staged rows `bc` (of
/// staged_t<T>), as 16- (float) or 8-byte (2-byte types) broadcasts (staging once per block beat
/// every lane loading its own states: 2.4x in pass 3 on the H200).
template <class T, int S>
__device__ __forceinline__ void chunk_states(const float* bc, int padded_n, int k, int which,
                                             int n0, float (&v)[S]) {
  static_assert(S % 4 == 0, "staged states are read as vectors of 4");
  const staged_t<T>* row =
      reinterpret_cast<const staged_t<T>*>(bc) + (k * 2 + which) * padded_n + n0;
#pragma unroll
  for (int i = 0; i < S; i += 4) {
    if constexpr (sizeof(staged_t<T>) == 4) {
      const float4 q = *reinterpret_cast<const float4*>(row + i);
      v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
    } else {
      // Widened here rather than by the forward's StepRegs::get, whose per-value unpacking made
      // the bf16 backward 1.5-3 % slower (H200).
      const uint2 q = *reinterpret_cast<const uint2*>(row + i);
      const std::uint32_t w[2] = {q.x, q.y};
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // a bf16 is a float's high half
          v[i + 2 * j] = __uint_as_float(w[j] << 16);
          v[i + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        } else {
          __half2 h;
          std::memcpy(&h, &w[j], sizeof(h));
          const float2 f = __half22float2(h);
          v[i + 2 * j] = f.x, v[i + 2 * j + 1] = f.y;
        }
      }
    }
  }
}

}  // namespace ssmkit::cuda::detail
