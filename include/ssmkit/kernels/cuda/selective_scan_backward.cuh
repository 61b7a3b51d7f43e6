// The S6 selective scan's backward pass on the GPU (reverse-mode derivative of Mamba's Algorithm 2,
// arXiv 2312.00752): same math and argument struct as cpu::selective_scan_backward.
//
// With q_t = ∂ℓ/∂h_t less C_t·dy_t, the adjoint runs backwards as g_t = q_t + C_t·dy_t,
// q_{t-1} = Ā_t·g_t, and every gradient is a local product of g_t, h_{t-1} and the step's inputs.
// Time is cut into chunks that run in parallel, never storing more than one state per chunk:
//  1. each chunk from zero: its local final state, ΣΔ, and its local adjoint
//     Σ_t (Π_{s<=t} Ā_s)·C_t·dy_t, which a forward walk computes with a running product (from
//     checkpoints, one lane per channel: scan_backward_adjoint_kernel);
//  2. a walk over the chunks joins them: the state entering and the adjoint leaving each chunk
//     (h ← 2^(A·log2e·ΣΔ)·h + h_local, and the same backwards for q), and ∂ℓ/∂h0. When the
//     forward left checkpoints at the chunks' starts, the states entering them are those, and
//     passes 1 and 2 form the adjoints alone;
//  3. each chunk recomputes its states from its entry state, sub-chunk by sub-chunk in registers
//     (from checkpoints at every sub-chunk, when the forward took them that often), and runs the
//     adjoint back through them. dB and dC (shared by a group's channels) meet in
//     shared memory, dA, dD, dδ_bias (shared by batch and time) go to float accumulators by
//     atomics, and a last pass rounds the accumulators into the gradient views.
// From fine checkpoints, when batch·D alone fills the GPU, pass 3 instead walks all chunks of its
// channels from the last, carrying the adjoint in registers, and passes 1 and 2 do not run.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/selective_scan.cuh"
#include "ssmkit/kernels/selective_scan_backward_params.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace ssmkit::cuda {

/// Tuning knobs of selective_scan_backward (pass another struct with the same members to try
/// others).
struct SelectiveScanBackwardPolicy {
  static constexpr int kThreads = 128;        ///< threads per block
  static constexpr int kStatesPerThread = 4;  ///< states per lane; a channel has up to 32 lanes
  /// Steps whose states and decays one lane keeps in registers.
  static constexpr int kSubChunk = 8;
  /// Steps per chunk when N <= 16 (halved per doubling of N, so that a chunk's dB and dC sums
  /// stay in 8 KB of shared memory). Each chunk stores one state per channel in the workspace.
  static constexpr int kChunk = 64;
  /// Channels one block walks through in turn: its chunk's B and C rows are staged once for all
  /// of them, and (pass 3) their dB and dC summed in shared memory before one atomic per element
  /// goes out.
  static constexpr int kChannelsPerBlock = 256;
  static constexpr int kMinBlocksPerSM = 3;  ///< the occupancy the registers are budgeted for
  /// Pass 3's occupancy from fine checkpoints: it keeps no entry states in shared memory and
  /// recomputes each step's decays on the way back instead of holding a sub-chunk of them in
  /// registers, which fits a fourth block (128 registers). H100: the backward 2.5-6 % faster than
  /// with 3 blocks (1.6 % of it from the recomputation alone).
  static constexpr int kFineMinBlocksPerSM = 4;
  /// From fine checkpoints, when batch·D gives at least this many blocks of one round of channels
  /// per SM, pass 3 walks all chunks of its channels in turn, carrying the adjoint in registers,
  /// and passes 1 and 2 do not run (H100, B=8 D=2048: 512 such blocks, one wave at 4 per SM).
  static constexpr int kSerialBlocksPerSM = 3;
  /// Pass 3's dB, dC block sums (where the lane count is compiled in): consecutive states per
  /// thread (a multiple of 4), read as 16-byte vectors and added as such (the serial walk's by
  /// 16-byte atomics where the GPU has them). H100: 4 beat 2 (which spilled) and 1.
  static constexpr int kSumVector = 4;
};

/// Largest state size N the CUDA backward accepts.
inline constexpr Index kMaxBackwardStateSize = 128;

namespace detail {

template <class T>
struct ScanBackwardArgs {
  const T* u;
  const T* delta;
  const T* z;
  const T* dout;
  Index u_s[3], delta_s[3], z_s[3], dout_s[3];  // (batch, time, channel) strides
  const T* B;
  const T* C;
  Index B_s[4], C_s[4];  // (batch, time, group, state)
  const float* A;
  Index A_s[2];
  const float* D_skip;
  Index D_skip_s;
  const float* delta_bias;
  Index delta_bias_s;
  const float* h0;
  Index h0_s[3];
  const float* checkpoints;  // the forward's (chunks, batch, D, N), or null
  Index checkpoints_s[4];
  // The states pass 3 starts from: checkpoints, else chunk_h; entry_every of them per chunk (one,
  // or one per sub-chunk: then pass 3 has no walk forwards through the chunk)
  const float* entry;
  Index entry_s[4];
  int entry_every;
  bool entry_vec;  // a channel's entry states contiguous, 16-byte aligned, and N % 4 == 0
  // B and C with unit time stride, every row 16-byte aligned and chunks a whole number of
  // 16-byte vectors (mamba_ssm's (batch, group, state, time)): staged a vector per load
  bool bc_time_vec;
  const float* dh_final;
  Index dh_final_s[3];

  T* du;
  T* ddelta;
  T* dz;
  Index du_s[3], ddelta_s[3], dz_s[3];
  T* dB;
  T* dC;
  Index dB_s[4], dC_s[4];
  float* dA;
  Index dA_s[2];
  float* dD_skip;
  Index dD_skip_s;
  float* ddelta_bias;
  Index ddelta_bias_s;
  float* dh0;
  Index dh0_s[3];

  // Workspace. The accumulators come first (zeroed in one memset).
  float* dBC_acc;    // (batch, L, G, 2, N): dB and dC summed over channels
  float* dA_acc;     // (D, N)
  float* dD_acc;     // (D)
  float* dbias_acc;  // (D)
  float* chunk_dt;   // (chunks, batch, D): ΣΔ over each chunk
  // (chunks, batch, D, N): local final state, then (pass 2) the entry state; null with checkpoints
  float* chunk_h;
  float* chunk_q;  // (chunks, batch, D, N): local adjoint, then (pass 2) the adjoint leaving

  // Time strides in bytes (selective_scan_backward checks they fit 32 bits): see at_step.
  int delta_tb, u_tb, dout_tb, z_tb, du_tb, ddelta_tb, dz_tb;
  int batch, L, D, N, G, channels_per_group;
  int lanes_per_channel, padded_n;  // padded_n = lanes_per_channel · states per lane
  int chunk_len, chunks, slices_per_group, channels_per_slice;
  bool softplus;
  bool same_layout;  // δ, dout, du, dδ have u's batch and channel strides, dz has z's
  // every activation with unit time stride and rows starting at even steps of aligned pointers:
  // a lane's two consecutive steps move as one vector (scan_backward_chunk_kernel's kRowsVec)
  bool rows_vec;
};

/// σ(x); 0 when e^-x overflows.
__device__ __forceinline__ float sigmoid_f(float x) {
  return __fdividef(1.f, 1.f + exp_ftz(-x));
}

/// Stores v at (b, t, d) of a (batch, time, channel) operand.
template <class T>
__device__ __forceinline__ void store_act(T* base, const Index (&s)[3], int b, int t, int d,
                                          float v) {
  base[b * s[0] + t * s[1] + d * s[2]] = from_float<T>(v);
}

/// Σ over the lanes of a channel (lanes_per_channel consecutive lanes, a power of two).
__device__ __forceinline__ float sum_channel_lanes(float v, int lanes) {
  for (int m = lanes / 2; m > 0; m /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

/// Floats one warp writes per step for the block's dB, dC sums: after one shuffle that adds each
/// even channel's values to its odd neighbour's (the even lane keeps dB, the odd one dC), a row
/// of [channel pair][B|C][state] — 32·S whatever the lane count; with 32 lanes per channel (no
/// neighbour) the lanes write both halves, 64·S. Summing these rows over warps and pairs in a
/// fixed order after the sub-chunk costs about a third of a shuffle reduction over the warp.
template <int S>
__host__ __device__ constexpr int warp_bc_row(int lanes_per_channel) {
  return lanes_per_channel < 32 ? 32 * S : 64 * S;
}

/// Where a thread of passes 1 and 3 sits: lanes_per_channel consecutive lanes share a channel,
/// each holding S of its states from n0.
struct LanePlace {
  int lane, n0, channel;  // channel: index among the block's channels of one round
};

__device__ __forceinline__ LanePlace lane_place(int lanes_per_channel, int states_per_lane) {
  const int tid = static_cast<int>(threadIdx.x);
  return {tid % lanes_per_channel, tid % lanes_per_channel * states_per_lane,
          tid / lanes_per_channel};
}

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

/// dst[e] += v[e] in global memory for e < count (<= V, a multiple of 4): 16-byte atomics where
/// the GPU has them (sm_90) and `vec` says dst is 16-byte aligned with count == V, else one atomic
/// per element.
template <int V>
__device__ __forceinline__ void atomic_add_floats(float* dst, const float (&v)[V], int count,
                                                  bool vec) {
  static_assert(V % 4 == 0, "16-byte atomics");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (vec) {
#pragma unroll
    for (int i = 0; i < V; i += 4)
      atomicAdd(reinterpret_cast<float4*>(dst + i),
                make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]));
    return;
  }
#else
  (void)vec;
#endif
#pragma unroll
  for (int e = 0; e < V; ++e)
    if (e < count)
      atomicAdd(dst + e, v[e]);
}

/// Stores v[from, from + S) at `dst` (16-byte aligned) as 16-byte vectors.
template <int S, int V>
__device__ __forceinline__ void store_states(float* dst, const float (&v)[V], int from = 0) {
  static_assert(S % 4 == 0, "states are stored as 16-byte vectors");
#pragma unroll
  for (int i = 0; i < S; i += 4)
    *reinterpret_cast<float4*>(dst + i) =
        make_float4(v[from + i], v[from + i + 1], v[from + i + 2], v[from + i + 3]);
}

/// What one step of a channel needs besides the states: Δ, u, softplus'(δ + bias), dy = ∂ℓ/∂y,
/// and the factor fz with ∂ℓ/∂z = y·fz.
struct StepValues {
  float dt, u, dsp, dy, fz;
};

/// The stored inputs of one step of a channel: δ, u, and for dy, dout and z.
template <class T>
struct RawStep {
  T delta, u, dout, z;
};

/// base + t time steps of `stride_bytes` bytes: one 32 x 32 -> 64-bit multiply-add (IMAD.WIDE)
/// per address, where a 64-bit stride in elements cost three to six instructions. The product is
/// PTX: from C++ the compiler multiplied the two sign-extended operands in 64 bits (five to seven
/// instructions) wherever the stride was loaded under a predicate (dout, z).
template <class T>
__device__ __forceinline__ T* at_step(T* base, int t, int stride_bytes) {
  long long offset;
  asm("mul.wide.s32 %0, %1, %2;" : "=l"(offset) : "r"(t), "r"(stride_bytes));
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<Byte*>(base) + offset);
}

/// Where one channel's inputs start: (b, 0, d) of δ, u, dout and z (z null when absent), worked
/// out once per channel so that a step's loads cost one product each (pass 1, which has the
/// registers to keep them).
template <class T>
struct ChannelRows {
  const T *delta, *u, *dout, *z;

  __device__ __forceinline__ ChannelRows(const ScanBackwardArgs<T>& a, int b, int d)
      : delta(a.delta + b * a.delta_s[0] + d * a.delta_s[2]),
        u(a.u + b * a.u_s[0] + d * a.u_s[2]),
        dout(a.dout + b * a.dout_s[0] + d * a.dout_s[2]),
        z(a.z != nullptr ? a.z + b * a.z_s[0] + d * a.z_s[2] : nullptr) {}

  /// Step t; dout (zero when !live) and z only if kDy.
  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(at_step(delta, t, a.delta_tb));
    r.u = __ldg(at_step(u, t, a.u_tb));
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(at_step(dout, t, a.dout_tb));
      if (z != nullptr)
        r.z = __ldg(at_step(z, t, a.z_tb));
    }
    return r;
  }
};

/// The same loads from the channel's coordinates, every address worked out at the load (pass 3:
/// four pointers held across its loops made it spill).
template <class T>
struct ChannelCoords {
  int b, d;

  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(a.delta + b * a.delta_s[0] + t * a.delta_s[1] + d * a.delta_s[2]);
    r.u = __ldg(a.u + b * a.u_s[0] + t * a.u_s[1] + d * a.u_s[2]);
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(a.dout + b * a.dout_s[0] + t * a.dout_s[1] + d * a.dout_s[2]);
      if (a.z != nullptr)
        r.z = __ldg(a.z + b * a.z_s[0] + t * a.z_s[1] + d * a.z_s[2]);
    }
    return r;
  }
};

/// The StepValues of a step's δ, u, dout and z (zero when absent); dy only if kDy, dsp and fz only
/// if kGrad.
template <bool kDy, bool kGrad, class T>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, float delta,
                                                  float u, float dout, float z, float bias) {
  // Both sides of each flag are computed and selected (select_f), which keeps a sub-chunk's
  // steps in one basic block.
  StepValues v{0.f, 0.f, 1.f, 0.f, 0.f};
  const float raw = delta + bias;
  v.dt = select_f(a.softplus, softplus_f(raw), raw);
  v.u = u;
  if (kGrad)
    v.dsp = select_f(a.softplus, raw > 20.f ? 1.f : sigmoid_f(raw), 1.f);
  if (kDy) {
    const float s = sigmoid_f(z);
    const bool gated = a.z != nullptr;
    v.dy = select_f(gated, dout * z * s, dout);
    if (kGrad)
      v.fz = select_f(gated, dout * s * fmaf(z, 1.f - s, 1.f), 0.f);
  }
  return v;
}

/// The same for a loaded step.
template <bool kDy, bool kGrad, class T>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, const RawStep<T>& r,
                                                  float bias) {
  return step_values<kDy, kGrad>(a, to_float(r.delta), to_float(r.u), to_float(r.dout),
                                 to_float(r.z), bias);
}

/// The same loads where every (batch, time, channel) operand has u's batch and channel strides but
/// z and dz, which share theirs (a Mamba block's z is the second half of in_proj's output): the
/// channel's place is one offset for each group (pass 3's usual case).
template <class T>
struct ChannelOffset {
  Index off, z_off;

  template <bool kDy>
  __device__ __forceinline__ RawStep<T> load(const ScanBackwardArgs<T>& a, int t, bool live) const {
    RawStep<T> r;
    r.delta = __ldg(at_step(a.delta + off, t, a.delta_tb));
    r.u = __ldg(at_step(a.u + off, t, a.u_tb));
    r.dout = r.z = from_float<T>(0.f);
    if (kDy) {
      if (live)
        r.dout = __ldg(at_step(a.dout + off, t, a.dout_tb));
      if (a.z != nullptr)
        r.z = __ldg(at_step(a.z + z_off, t, a.z_tb));
    }
    return r;
  }
};

/// The StepValues of step t of a channel (ChannelRows, ChannelCoords or ChannelOffset), loaded
/// now.
template <bool kDy, bool kGrad, class T, class Rows>
__device__ __forceinline__ StepValues step_values(const ScanBackwardArgs<T>& a, const Rows& c,
                                                  int t, float bias, bool live) {
  return step_values<kDy, kGrad>(a, c.template load<kDy>(a, t, live), bias);
}

/// The inputs of the steps one lane prepares in a sub-chunk (steps lane + r·lanes, r < R), loaded
/// a sub-chunk ahead so that their latency hides behind the current sub-chunk's arithmetic.
template <int R, bool kDy, class T>
struct StepPrefetch {
  RawStep<T> raw[R];

  template <class Rows>
  __device__ __forceinline__ void load(const ScanBackwardArgs<T>& a, const Rows& c, int t0,
                                       int steps, int lane, int lanes, bool live) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane + r * lanes < steps)
        raw[r] = c.template load<kDy>(a, t0 + lane + r * lanes, live);
  }

  /// Calls put(k, values) for each step k of the lane's share of the sub-chunk at t0: the
  /// prefetched ones, then any beyond R·lanes loaded now.
  template <bool kGrad, class Rows, class Put>
  __device__ __forceinline__ void prepare(const ScanBackwardArgs<T>& a, const Rows& c, int t0,
                                          int steps, int lane, int lanes, bool live, float bias,
                                          Put&& put) const {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane + r * lanes < steps)
        put(lane + r * lanes, step_values<kDy, kGrad>(a, raw[r], bias));
    for (int k = lane + R * lanes; k < steps; k += lanes)
      put(k, step_values<kDy, kGrad>(a, c, t0 + k, bias, live));
  }

  /// As prepare, and puts a no-op step (Δ = u = dy = 0 and softplus' = 0: the state and the
  /// adjoint pass through unchanged, every gradient term is zero) at each step of the lane's
  /// share from `steps` to K, so that the sub-chunk's loops need no bound.
  template <int K, bool kGrad, class Rows, class Put>
  __device__ __forceinline__ void prepare_padded(const ScanBackwardArgs<T>& a, const Rows& c,
                                                 int t0, int steps, int lane, int lanes, bool live,
                                                 float bias, Put&& put) const {
    prepare<kGrad>(a, c, t0, steps, lane, lanes, live, bias, put);
    for (int k = lane + (steps - lane + lanes - 1) / lanes * lanes; k < K; k += lanes)
      put(k, StepValues{0.f, 0.f, 0.f, 0.f, 0.f});
  }
};

/// Stores x0, x1 at steps t, t + 1 of a row with unit time stride at p (pointing at step t) as one
/// vector.
template <class T>
__device__ __forceinline__ void store_step_pair(T* p, float x0, float x1) {
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float2*>(p) = make_float2(x0, x1);
  } else {
    const T v[2] = {from_float<T>(x0), from_float<T>(x1)};
    unsigned w;
    std::memcpy(&w, v, sizeof(w));
    *reinterpret_cast<unsigned*>(p) = w;
  }
}

/// StepPrefetch where every activation has unit time stride (channel-major; ScanBackwardArgs::
/// rows_vec): a lane prepares two consecutive steps of a sub-chunk, 2·lane and 2·lane + 1, loaded
/// a sub-chunk ahead as one vector per operand and held as loaded until prepared. Lanes taking
/// steps lane and lane + 4 made every warp request touch 8 rows for 16 bytes each, twice per
/// sector.
template <class T>
struct StepPairPrefetch {
  StepRegs<2, T, true> delta, u, dout, z;

  __device__ __forceinline__ void load(const ScanBackwardArgs<T>& a, const ChannelOffset<T>& c,
                                       int t0, int steps, int lane, int, bool live) {
    // Both steps as one vector when both are before `steps`, else the first alone if it is.
    const int k = 2 * lane, t = t0 + k;
    load_steps(a.delta + c.off + t, 1, k, steps, delta);
    load_steps(a.u + c.off + t, 1, k, steps, u);
    if (live)
      load_steps(a.dout + c.off + t, 1, k, steps, dout);
    if (a.z != nullptr)
      load_steps(a.z + c.z_off + t, 1, k, steps, z);
  }

  /// As StepPrefetch::prepare_padded.
  template <int K, bool kGrad, class Put>
  __device__ __forceinline__ void prepare_padded(const ScanBackwardArgs<T>& a,
                                                 const ChannelOffset<T>&, int, int steps, int lane,
                                                 int, bool live, float bias, Put&& put) const {
    static_assert(K % 2 == 0, "whole pairs of steps");
    const auto values = [&](int r) {
      return step_values<true, kGrad>(a, delta.get(r), u.get(r), live ? dout.get(r) : 0.f,
                                      a.z != nullptr ? z.get(r) : 0.f, bias);
    };
    // A whole sub-chunk (all but a sequence's last) in a branch of its own: with both puts in
    // one path the compiler predicates them, and the no-op step's stores, though predicated off,
    // took an issue slot each (ncu: 10 more shared stores per warp and sub-chunk).
    if (steps >= K) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
        put(2 * lane + r, values(r));
      return;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * lane + r;
      if (k < steps)
        put(k, values(r));
      else
        put(k, StepValues{0.f, 0.f, 0.f, 0.f, 0.f});
    }
  }
};

/// The lanes of the calling thread's channel, for __syncwarp.
__device__ __forceinline__ unsigned channel_lanes_mask(int lanes_per_channel) {
  if (lanes_per_channel >= 32)
    return 0xffffffffu;
  const int first = (static_cast<int>(threadIdx.x) & 31) & ~(lanes_per_channel - 1);
  return ((1u << lanes_per_channel) - 1u) << first;
}

/// Floats of shared memory per channel for the step work the lanes of passes 1 and 3 share,
/// [step][4 floats] (pass 3: Δ·log2e, Δ·u, dy, Δ): 16-byte records, read by all of a channel's
/// lanes at once. The 4 extra floats put neighbouring channels on other banks.
template <class Policy>
constexpr int step_record_stride() {
  return Policy::kSubChunk * 4 + 4;
}

/// The same for pass 1 from checkpoints, whose records are [Δ, dy] (8 bytes): a stride of 8 floats
/// past a multiple of 32 puts the 8-byte records of a half-warp's channels on distinct banks both
/// when each lane writes its own step and when all lanes read one step (16-byte records at any
/// stride meet conflicts on one or the other: H100, ncu).
template <class Policy>
constexpr int adjoint_record_stride() {
  return (Policy::kSubChunk * 2 + 23) / 32 * 32 + 8;
}

/// Row stride, in floats, of pass 3's per-step lane shares ([step][thread]): one float of padding
/// per row, so that the finish's lanes, each reading its own step's shares of the channel, meet
/// no bank conflict (a row of kThreads floats put them all on one bank: 4-way conflicts).
template <class Policy>
constexpr int lane_share_stride() {
  return Policy::kThreads + 1;
}

/// Floats per step of pass 3's lane shares (y, then (gB, gA·h)) in either layout of them (see
/// scan_backward_chunk_kernel's kRowsVec).
template <class Policy>
constexpr int lane_shares_floats() {
  constexpr int kThreadOrder = 3 * lane_share_stride<Policy>();
  constexpr int kLaneOrder = (Policy::kThreads + 4) + 2 * (Policy::kThreads + 2);
  return kThreadOrder > kLaneOrder ? kThreadOrder : kLaneOrder;
}

/// What pass 3's finish needs of each step a lane prepared, kept by that lane: u, Δ, dy, then
/// (softplus'(δ), fz) as one 8-byte pair ([trip][value][thread] in shared memory, conflict-free).
/// fz alone was read inside the branch that stores dz, just before its use (ncu: 1.3 % of the
/// channel-major serial walk's stall samples on the multiply after it); paired with softplus',
/// which every step needs, it is read with the other values.
inline constexpr int kFinishValues = 5;

/// Shared memory of pass 1, in floats: the chunk's B and C rows, then (with
/// lanes_per_channel > 0) the channels' shared step work.
template <class Policy>
constexpr int local_smem_floats(int chunk_len, int padded_n, int lanes_per_channel) {
  constexpr int kRecords = step_record_stride<Policy>() > adjoint_record_stride<Policy>()
                               ? step_record_stride<Policy>()
                               : adjoint_record_stride<Policy>();
  return chunk_len * 2 * padded_n +
         (lanes_per_channel > 0 ? Policy::kThreads / lanes_per_channel * kRecords : 0);
}

/// Shared memory of pass 3, in floats: the staged B and C rows, the chunk's dB, dC sums, the
/// sub-chunks' entry states (not from fine checkpoints), the warps' dB, dC sums of a sub-chunk, the
/// channels' shared step work, each lane's partial y and (gB, gA·h) of a sub-chunk's steps, then
/// the finish's values of the steps each lane prepared.
template <class Policy>
constexpr int chunk_smem_floats(int chunk_len, int padded_n, int N, int lanes_per_channel,
                                bool fine) {
  return local_smem_floats<Policy>(chunk_len, padded_n, 0) + chunk_len * 2 * N +
         (fine ? 0 : chunk_len / Policy::kSubChunk * Policy::kStatesPerThread * Policy::kThreads) +
         Policy::kThreads / 32 * Policy::kSubChunk *
             warp_bc_row<Policy::kStatesPerThread>(lanes_per_channel) +
         Policy::kThreads / lanes_per_channel * step_record_stride<Policy>() +
         Policy::kSubChunk * lane_shares_floats<Policy>() +
         (Policy::kSubChunk + lanes_per_channel - 1) / lanes_per_channel * kFinishValues *
             Policy::kThreads;
}

/// Pass 1: each chunk from a zero state and a zero adjoint, walking forwards: its local final
/// state (kStates; not needed with checkpoints), its ΣΔ and its local adjoint Σ_t P_t·C_t·dy_t
/// with P_t = Π_{s<=t} Ā_s. A block takes one chunk of one batch element and a slice of one
/// group's channels, a round of kThreads / lanes_per_channel channels at a time.
template <class Policy, int kLanes, bool kStates, class T>
__global__ void __launch_bounds__(Policy::kThreads)
    scan_backward_local_kernel(const ScanBackwardArgs<T> a) {
  constexpr int S = Policy::kStatesPerThread, K = Policy::kSubChunk;
  constexpr int R = (K + (kLanes > 0 ? kLanes : 1) - 1) / (kLanes > 0 ? kLanes : 1);
  extern __shared__ __align__(16) float smem_local[];
  const int lanes = kLanes > 0 ? kLanes : a.lanes_per_channel;
  const int padded_n = kLanes > 0 ? kLanes * S : a.padded_n;
  const LanePlace lp = lane_place(lanes, S);
  float* bc = smem_local;  // the chunk's B and C rows
  float* mine = bc + local_smem_floats<Policy>(a.chunk_len, a.padded_n, 0) +
                lp.channel * (kStates ? step_record_stride<Policy>()
                                      : adjoint_record_stride<Policy>());  // this channel's steps
  const int g = static_cast<int>(blockIdx.y) / a.slices_per_group;
  const int slice = static_cast<int>(blockIdx.y) % a.slices_per_group;
  const int slice_end = min((slice + 1) * a.channels_per_slice, a.channels_per_group);
  const int c = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.z);
  const int t_begin = c * a.chunk_len, t_end = min(a.L, t_begin + a.chunk_len);
  // Rows past the chunk's end are staged as zeros for the no-op steps of a partial sub-chunk.
  stage_chunk_states<Policy::kThreads>(a, bc, b, g, t_begin, t_end - t_begin,
                                       (t_end - t_begin + K - 1) / K * K, padded_n);
  __syncthreads();
  const unsigned mask = channel_lanes_mask(lanes);
  // Channels past the slice's end leave whole: the lanes of the others only wait for each other.
  for (int in_group = slice * a.channels_per_slice + lp.channel; in_group < slice_end;
       in_group += Policy::kThreads / lanes) {
    const int d = g * a.channels_per_group + in_group;
    float a2[S], h[S], decay[S], q[S];
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const int n = lp.n0 + i;
      a2[i] = n < a.N ? a.A[d * a.A_s[0] + n * a.A_s[1]] * kLog2e : 0.f;
      h[i] = q[i] = 0.f;
      decay[i] = 1.f;
    }
    const float bias = a.delta_bias != nullptr ? a.delta_bias[d * a.delta_bias_s] : 0.f;
    float sum_dt = 0.f;
    const ChannelRows<T> rows(a, b, d);
    StepPrefetch<R, true, T> next;
    next.load(a, rows, t_begin, min(K, t_end - t_begin), lp.lane, lanes, true);
    for (int t0 = t_begin; t0 < t_end; t0 += K) {
      const int steps = min(K, t_end - t0);
      next.template prepare_padded<K, false>(
          a, rows, t0, steps, lp.lane, lanes, true, bias, [&](int k, const StepValues& v) {
            // Without kStates u is never read, and its load goes.
            if constexpr (kStates)
              *reinterpret_cast<float4*>(mine + 4 * k) = make_float4(v.dt, v.dt * v.u, v.dy, 0.f);
            else
              *reinterpret_cast<float2*>(mine + 2 * k) = make_float2(v.dt, v.dy);
          });
      if (t0 + K < t_end)
        next.load(a, rows, t0 + K, min(K, t_end - t0 - K), lp.lane, lanes, true);
      __syncwarp(mask);
      // Whole sub-chunks (no-op steps past the end): one basic block.
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int t = t0 + k;
        float dt, du = 0.f, dy;
        if constexpr (kStates) {
          const float4 v = *reinterpret_cast<const float4*>(mine + 4 * k);
          dt = v.x, du = v.y, dy = v.z;
        } else {
          const float2 v = *reinterpret_cast<const float2*>(mine + 2 * k);
          dt = v.x, dy = v.y;
        }
        float Bv[S], Cv[S];
        if constexpr (kStates)
          chunk_states<T>(bc, padded_n, t - t_begin, 0, lp.n0, Bv);
        chunk_states<T>(bc, padded_n, t - t_begin, 1, lp.n0, Cv);
        sum_dt += dt;
#pragma unroll
        for (int i = 0; i < S; ++i) {
          if constexpr (kStates) {
            const float ab = ex2_mufu(dt * a2[i]);
            h[i] = fmaf(ab, h[i], du * Bv[i]);
            decay[i] *= ab;
          } else {
            decay[i] = ex2_mufu(sum_dt * a2[i]);  // P_t from ΣΔ: a multiply fewer than Π Ā
          }
          q[i] = fmaf(decay[i], Cv[i] * dy, q[i]);
        }
      }
      __syncwarp(mask);  // read before the next sub-chunk's (or channel's) values overwrite them
    }
    const Index row = (static_cast<Index>(c) * a.batch + b) * a.D + d;
    if (lp.lane == 0)
      a.chunk_dt[row] = sum_dt;
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (lp.n0 + i < a.N) {
        if constexpr (kStates)
          a.chunk_h[row * a.N + lp.n0 + i] = h[i];
        a.chunk_q[row * a.N + lp.n0 + i] = q[i];
      }
  }
}

/// Pass 1 from checkpoints with one lane per channel, all of its padded_n = 16 states in the lane
/// (N = 9..16): the same ΣΔ and local adjoint as scan_backward_local_kernel<..., false>, but a
/// step's loads, softplus and gate serve 16 states instead of 4, with no records shared between
/// lanes. The lanes' loads must be whole: either the channels of a warp are adjacent in memory
/// (unit channel stride of δ, dout and z: a line per step), or (kTimeVec, 2-byte types) each
/// lane's steps are, read as one 16-byte vector per row and 8 steps (unit time stride, aligned
/// rows). D=5120 L=16384 fp32 token-major, ncu on an H200: 618 against 760 µs, 280 M against 425 M
/// warp instructions, the pass then bound by the exponentials (MUFU 87 % busy); the whole backward
/// from fine checkpoints 2.92-2.93 -> 2.82-2.83 ms (H100).
template <class Policy, bool kTimeVec, class T>
__global__ void __launch_bounds__(Policy::kThreads)
    scan_backward_adjoint_kernel(const ScanBackwardArgs<T> a) {
  constexpr int S = 16, V = 16 / static_cast<int>(sizeof(T));
  extern __shared__ __align__(16) float smem_adjoint[];
  float* bc = smem_adjoint;  // the chunk's B and C rows
  const int g = static_cast<int>(blockIdx.y) / a.slices_per_group;
  const int slice = static_cast<int>(blockIdx.y) % a.slices_per_group;
  const int slice_end = min((slice + 1) * a.channels_per_slice, a.channels_per_group);
  const int c = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.z);
  const int t_begin = c * a.chunk_len, len = min(a.L - t_begin, a.chunk_len);
  // C as floats: each lane reads all 16 every step, and 2-byte values widened there cost
  // an instruction each per lane-step.
  stage_chunk_states<Policy::kThreads, T, float>(a, bc, b, g, t_begin, len, len, S);
  __syncthreads();
  for (int in_group = slice * a.channels_per_slice + static_cast<int>(threadIdx.x);
       in_group < slice_end; in_group += Policy::kThreads) {
    const int d = g * a.channels_per_group + in_group;
    float a2[S], q[S];
#pragma unroll
    for (int i = 0; i < S; ++i) {
      a2[i] = i < a.N ? a.A[d * a.A_s[0] + i * a.A_s[1]] * kLog2e : 0.f;
      q[i] = 0.f;
    }
    const float bias = a.delta_bias != nullptr ? a.delta_bias[d * a.delta_bias_s] : 0.f;
    const T* delta = a.delta + b * a.delta_s[0] + d * a.delta_s[2];
    const T* dout = a.dout + b * a.dout_s[0] + d * a.dout_s[2];
    const T* z = a.z != nullptr ? a.z + b * a.z_s[0] + d * a.z_s[2] : nullptr;
    float sum_dt = 0.f;
    const auto step = [&](int k, float delta_k, float dout_k, float z_k) {
      const StepValues v = step_values<true, false>(a, delta_k, 0.f, dout_k, z_k, bias);
      float Cv[S];
      chunk_states<float>(bc, S, k, 1, 0, Cv);
      sum_dt += v.dt;
#pragma unroll
      for (int i = 0; i < S; ++i)
        q[i] = fmaf(ex2_mufu(sum_dt * a2[i]), Cv[i] * v.dy, q[i]);  // P_t from ΣΔ, as pass 1
    };
    if constexpr (kTimeVec) {
      for (int k0 = 0; k0 < len; k0 += V) {
        const int t0 = t_begin + k0;
        StepRegs<V, T, true> dr, yr, zr;
        load_steps(delta + t0, 1, k0, len, dr);
        load_steps(dout + t0, 1, k0, len, yr);
        if (z != nullptr)
          load_steps(z + t0, 1, k0, len, zr);
#pragma unroll
        for (int i = 0; i < V; ++i)
          if (k0 + i < len)
            step(k0 + i, dr.get(i), yr.get(i), z != nullptr ? zr.get(i) : 0.f);
      }
    } else {
#pragma unroll 4
      for (int k = 0; k < len; ++k) {
        const int t = t_begin + k;
        step(k, to_float(__ldg(at_step(delta, t, a.delta_tb))),
             to_float(__ldg(at_step(dout, t, a.dout_tb))),
             z != nullptr ? to_float(__ldg(at_step(z, t, a.z_tb))) : 0.f);
      }
    }
    const Index row = (static_cast<Index>(c) * a.batch + b) * a.D + d;
    a.chunk_dt[row] = sum_dt;
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (i < a.N)
        a.chunk_q[row * a.N + i] = q[i];
  }
}

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

/// Pass 3 (kLanes: lanes_per_channel compiled in, or 0 to read it from `a`): a block takes one
/// chunk of one batch element and a slice of one group's channels, a round of
/// kThreads / lanes_per_channel channels at a time. Per round: a walk forwards from the entry
/// state keeps the state entering each sub-chunk in shared memory; then, sub-chunk by sub-chunk
/// from the last, the states and decays are recomputed into registers (giving dz) and the
/// adjoint runs back through them (giving du, ddelta). kSameLayout: every (batch, time, channel)
/// operand has u's batch and channel strides but z and dz, which share theirs
/// (ScanBackwardArgs::same_layout). kFine: the entry
/// state of every sub-chunk is a checkpoint, read a sub-chunk ahead instead of walked to.
/// kSerial (choose_serial; grid.x = 1, one round of channels per block): the block takes every
/// chunk in turn from the last, the adjoint carried over in registers instead of read from
/// passes 1 and 2, and writes ∂ℓ/∂h0 itself.
template <class Policy, int kLanes, bool kSameLayout, bool kFine, bool kSerial, class T,
          bool kRowsVec = false>
__global__ void __launch_bounds__(Policy::kThreads,
                                  kFine ? Policy::kFineMinBlocksPerSM : Policy::kMinBlocksPerSM)
    scan_backward_chunk_kernel(const ScanBackwardArgs<T> a) {
  static_assert(!kSerial || kFine, "the serial walk starts its chunks from fine checkpoints");
  static_assert(!kRowsVec || (kSameLayout && kFine && kLanes == 4 && Policy::kSubChunk == 8),
                "pairs of steps per lane: one layout, fine checkpoints, 4 lanes of 2 steps (the "
                "shares' columns are laid out for 8 channels a warp)");
  constexpr int S = Policy::kStatesPerThread, K = Policy::kSubChunk, NT = Policy::kThreads;
  // Steps each lane prefetches per sub-chunk: all of its share when the lane count is known.
  constexpr int R = kLanes > 0 ? (K + kLanes - 1) / kLanes : 1;
  extern __shared__ __align__(16) float smem[];
  const int N = a.N, two_n = 2 * a.N;
  const int tid = static_cast<int>(threadIdx.x);
  const int lanes = kLanes > 0 ? kLanes : a.lanes_per_channel;
  const LanePlace lp = lane_place(lanes, S);
  float* bc = smem;  // [step][B|C][padded state]
  float* acc = bc + local_smem_floats<Policy>(a.chunk_len, a.padded_n, 0);  // [step][B|C][state]
  float* entry = acc + a.chunk_len * two_n;  // [sub-chunk][i][thread]
  constexpr int kWarps = NT / 32;
  const int padded_n = kLanes > 0 ? kLanes * S : a.padded_n;
  const int row_bc = warp_bc_row<S>(lanes);  // a warp's dB, dC partial sums of one step
  const int pairs = lanes < 32 ? 16 / lanes : 1;
  // [warp][step][pair][B|C][state]
  float* warp_sums = entry + (kFine ? 0 : a.chunk_len / K * S * NT);
  float* step_work = warp_sums + kWarps * K * row_bc;
  float* mine = step_work + lp.channel * step_record_stride<Policy>();  // this channel's step work
  // Each lane's share of a step's per-channel sums, [step][thread]: y, then (gB, gA·h).
  // kRowsVec: a lane prepares steps 2·lane, 2·lane + 1, so that the finish's lanes of a warp read
  // steps 0, 2, 4, 6 (+1): the shares go to columns 8·lane + channel (y) and 4·lane + channel % 4
  // + 16·(channel / 4) (float2) of the warp's 32, at row strides of 4 mod 32 floats and 2 mod 16
  // float2s, which keeps both the reverse loop's writes and those reads conflict-free.
  constexpr int kShareY = kRowsVec ? NT + 4 : lane_share_stride<Policy>();
  constexpr int kShareG = kRowsVec ? NT + 2 : lane_share_stride<Policy>();
  static_assert(K % 2 == 0, "policy: the (gB, gA·h) shares are 8-byte aligned");
  float* y_part = step_work + NT / lanes * step_record_stride<Policy>();
  float2* g_part = reinterpret_cast<float2*>(y_part + K * kShareY);
  // The finish's values of the steps this lane prepares (steps lane + r·lanes: trip r); the pair
  // (softplus', fz) of thread i at 3·NT + 2·i.
  float* finish_values = reinterpret_cast<float*>(g_part + K * kShareG) + tid;
  const int lane_shift = __ffs(lanes) - 1;  // lanes is a power of two
  const int first_lane = tid - lp.lane;     // the channel's lane 0
  // The columns of lane l's shares (kRowsVec; else first_lane + l).
  const int warp_base = tid & ~31, warp_channel = (tid & 31) >> 2;
  const auto y_col = [&](int l) {
    return kRowsVec ? warp_base + (l << 3) + warp_channel : first_lane + l;
  };
  const auto g_col = [&](int l) {
    return kRowsVec ? warp_base + (l << 2) + (warp_channel & 3) + ((warp_channel >> 2) << 4)
                    : first_lane + l;
  };
  const int b = static_cast<int>(blockIdx.z);
  const int g = static_cast<int>(blockIdx.y) / a.slices_per_group;
  const int slice = static_cast<int>(blockIdx.y) % a.slices_per_group;
  const int d_begin = g * a.channels_per_group + slice * a.channels_per_slice;
  const int d_end = min(d_begin + a.channels_per_slice, (g + 1) * a.channels_per_group);
  // kSerial: the block walks every chunk from the last with one round of channels, carrying the
  // adjoint from chunk to chunk in registers (no passes 1 and 2); else it takes chunk blockIdx.x.
  int c = kSerial ? a.chunks - 1 : static_cast<int>(blockIdx.x);
  int t_begin = 0, len = 0, subs = 0;
  // Where the block's dB, dC sums of step t go (worked out at each use: a pointer held across the
  // loops spilled). They go out once every round of channels has added its own; kSerial has one
  // round, so each sub-chunk sends its sums at once and `acc` is not used.
  const auto dbc_out = [&](int t) {
    return a.dBC_acc + ((static_cast<Index>(b) * a.L + t) * a.G + g) * two_n;
  };
  const auto begin_chunk = [&] {  // stages chunk c's B and C rows and clears its dB, dC sums
    t_begin = c * a.chunk_len;
    len = min(a.chunk_len, a.L - t_begin);
    subs = (len + K - 1) / K;
    if constexpr (!kSerial) {
      for (int i = tid; i < subs * K * two_n; i += NT)  // padded steps too: they add zeros
        acc[i] = 0.f;
    }
    stage_chunk_states<NT>(a, bc, b, g, t_begin, len, subs * K, padded_n);
    __syncthreads();
  };
  const auto end_chunk = [&] {  // the chunk's dB, dC sums out, once every warp has added its own
    if constexpr (!kSerial) {
      __syncthreads();
      float* out = dbc_out(t_begin);
      const Index step_stride = static_cast<Index>(a.G) * two_n;
      for (int i = tid; i < len * two_n; i += NT)
        atomicAdd(&out[i / two_n * step_stride + i % two_n], acc[i]);
    }
  };
  begin_chunk();
  const bool has_z = a.z != nullptr;

  for (int d_round = d_begin; d_round < d_end; d_round += NT / lanes) {
    // Lanes past the slice's end run a real channel's numbers with a zero adjoint and dout, so
    // that every gradient term they add is zero; they store nothing.
    const bool active = d_round + lp.channel < d_end;
    const int d = active ? d_round + lp.channel : d_end - 1;
    // The step records hold Δ·log2e, so that Ā = 2^(Δ·log2e·A) needs A alone (four registers
    // fewer than keeping A·log2e too).
    float A[S], h[S], q[S], dA[S];
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const int n = lp.n0 + i;
      A[i] = n < N ? a.A[d * a.A_s[0] + n * a.A_s[1]] : 0.f;
      dA[i] = 0.f;
    }
    const float bias = a.delta_bias != nullptr ? a.delta_bias[d * a.delta_bias_s] : 0.f;
    const float skip = a.D_skip != nullptr ? a.D_skip[d * a.D_skip_s] : 0.f;
    float d_skip = 0.f, d_bias = 0.f;
    if constexpr (kSerial) {  // the adjoint leaving the last chunk
#pragma unroll
      for (int i = 0; i < S; ++i)
        q[i] = lp.n0 + i < N && active && a.dh_final != nullptr
                   ? a.dh_final[b * a.dh_final_s[0] + d * a.dh_final_s[1] +
                                (lp.n0 + i) * a.dh_final_s[2]]
                   : 0.f;
    }
    using Rows = std::conditional_t<kSameLayout, ChannelOffset<T>, ChannelCoords<T>>;
    Rows rows{};
    if constexpr (kSameLayout)
      rows.off = b * a.u_s[0] + d * a.u_s[2], rows.z_off = b * a.z_s[0] + d * a.z_s[2];
    else
      rows.b = b, rows.d = d;
    std::conditional_t<kRowsVec, StepPairPrefetch<T>, StepPrefetch<R, true, T>> next;
    // kSerial: the next chunk's last sub-chunk (inputs and entry state) was loaded during this
    // chunk's first one.
    bool carried = false;
    // Chunk c's entry states: stepped back a chunk at a time (kSerial), since working it out from
    // d at each chunk reloaded d from the stack (channel-major fp32 build) and waited on it
    // (ncu: 1.5 % of its stall samples).
    const float* entry_h = a.entry + static_cast<Index>(c) * a.entry_every * a.entry_s[0] +
                           b * a.entry_s[1] + d * a.entry_s[2];
    for (;;) {  // the chunks: one unless kSerial
      const Index row = (static_cast<Index>(c) * a.batch + b) * a.D + d;
      // Sub-chunk j's entry state (kFine), or the chunk's (j = 0).
      const auto entry_state = [&](int j, float(&v)[S]) {
        if constexpr (kFine) {  // 16-byte loads (entry_vec): a lane's states are all past N or none
          const float4* src = reinterpret_cast<const float4*>(entry_h + j * a.entry_s[0] + lp.n0);
#pragma unroll
          for (int i = 0; i < S; i += 4) {
            const float4 q = lp.n0 < N ? src[i / 4] : make_float4(0.f, 0.f, 0.f, 0.f);
            v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
          }
        } else {
#pragma unroll
          for (int i = 0; i < S; ++i)
            v[i] = lp.n0 + i < N ? entry_h[j * a.entry_s[0] + (lp.n0 + i) * a.entry_s[3]] : 0.f;
        }
      };
      if constexpr (!kFine)
        entry_state(0, h);
      if constexpr (!kSerial) {
#pragma unroll
        for (int i = 0; i < S; ++i)
          q[i] = lp.n0 + i < N && active ? a.chunk_q[row * N + lp.n0 + i] : 0.f;
      }

      // The state entering each sub-chunk (the last sub-chunk's states are not needed).
      // The adjoint's first (the chunk's last) sub-chunk is loaded during the sweep's last one, so
      // that its latency hides behind that sub-chunk's arithmetic.
      const int last_t0 = t_begin + (subs - 1) * K, last_steps = len - (subs - 1) * K;
      StepPrefetch<R, false, T> sweep_next;
      if (subs > 1 && !kFine)
        sweep_next.load(a, rows, t_begin, K, lp.lane, lanes, active);
      else if (!carried)
        next.load(a, rows, last_t0, last_steps, lp.lane, lanes, active);
      for (int j = 0; !kFine; ++j) {
#pragma unroll
        for (int i = 0; i < S; ++i)
          entry[(j * S + i) * NT + tid] = h[i];
        if (j + 1 == subs)
          break;
        const int t0 = t_begin + j * K;
        sweep_next.template prepare<false>(
            a, rows, t0, K, lp.lane, lanes, active, bias, [&](int k, const StepValues& v) {
              *reinterpret_cast<float2*>(mine + 4 * k) = make_float2(v.dt * kLog2e, v.dt * v.u);
            });
        if (j + 2 < subs)
          sweep_next.load(a, rows, t0 + K, K, lp.lane, lanes, active);
        else
          next.load(a, rows, last_t0, last_steps, lp.lane, lanes, active);
        __syncwarp();
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int t = t0 + k;
          const float2 v = *reinterpret_cast<const float2*>(mine + 4 * k);
          const float dt2 = v.x, du = v.y;
          float Bv[S];
          chunk_states<T>(bc, padded_n, t - t_begin, 0, lp.n0, Bv);
#pragma unroll
          for (int i = 0; i < S; ++i)
            h[i] = fmaf(ex2_mufu(dt2 * A[i]), h[i], du * Bv[i]);
        }
        __syncwarp();  // read before the next sub-chunk's values overwrite them
      }

      if (kFine && !carried)
        entry_state(subs - 1, h);  // h: the next sub-chunk's entry state from here on
      // kSerial: after the first sub-chunk come the previous chunk's (whole) sub-chunks.
      const bool more = kSerial && c > 0;
      for (int j = subs - 1; j >= 0; --j) {
        const int t0 = t_begin + j * K, steps = min(K, t_begin + len - t0);
        float hs[K + 1][S], decay[kFine ? 1 : K][S];
#pragma unroll
        for (int i = 0; i < S; ++i)
          hs[0][i] = kFine ? h[i] : entry[(j * S + i) * NT + tid];
        if (kFine && (j > 0 || more))
          entry_state(j - 1, h);  // j = 0: the previous chunk's last checkpoint
        // Forwards through the sub-chunk: states, decays, dy, and dz (which needs y).
        next.template prepare_padded<K, true>(
            a, rows, t0, steps, lp.lane, lanes, active, bias, [&](int k, const StepValues& v) {
              *reinterpret_cast<float4*>(mine + 4 * k) =
                  make_float4(v.dt * kLog2e, v.dt * v.u, v.dy, v.dt);
              float* f = finish_values + (kRowsVec ? k & 1 : k >> lane_shift) * kFinishValues * NT;
              f[0] = v.u, f[NT] = v.dt, f[2 * NT] = v.dy;
              *reinterpret_cast<float2*>(f + 3 * NT + tid) = make_float2(v.dsp, v.fz);
            });
        if (j > 0 || more)
          next.load(a, rows, t0 - K, K, lp.lane, lanes, active);
        __syncwarp();
        const int k0 = t0 - t_begin;  // the sub-chunk's first step in the staged rows
        // A step's inputs to the way back: its record [Δ·log2e, Δ·u, dy, Δ] and this lane's B and C
        // states.
        struct StepInputs {
          float4 w;
          float B[S], C[S];
        };
        const auto inputs = [&](int k) {
          StepInputs in;
          in.w = *reinterpret_cast<const float4*>(mine + 4 * k);
          chunk_states<T>(bc, padded_n, k0 + k, 0, lp.n0, in.B);
          chunk_states<T>(bc, padded_n, k0 + k, 1, lp.n0, in.C);
          return in;
        };
        // Forwards through the sub-chunk, from step k's Δ·log2e, Δ·u and this lane's B states (the
        // loop stores nothing to shared memory, so its reads can be issued early).
        const auto recompute = [&](int k, float dt2, float dtu, const float(&Bv)[S]) {
#pragma unroll
          for (int i = 0; i < S; ++i) {
            const float dk = ex2_mufu(dt2 * A[i]);
            if constexpr (!kFine)
              decay[k][i] = dk;
            hs[k + 1][i] = fmaf(dk, hs[k][i], dtu * Bv[i]);
          }
        };
        // Backwards through it.
        const auto reverse = [&](int k, const StepInputs& in) {
          const float dt2 = in.w.x, dtu = in.w.y, dy = in.w.z, dt = in.w.w;
          const float(&Bv)[S] = in.B;
          const float(&Cv)[S] = in.C;
          // y (for dz only) is cheaper to compute than to branch around.
          float gB = 0.f, gAh = 0.f, y = 0.f, gs[S];
#pragma unroll
          for (int i = 0; i < S; ++i) {
            const float gi = fmaf(dy, Cv[i], q[i]);  // ∂ℓ/∂h_t
            float dk;                                // Ā_t
            if constexpr (kFine)
              dk = ex2_mufu(dt2 * A[i]);
            else
              dk = decay[k][i];
            q[i] = gi * dk;  // ∂ℓ/∂h_{t-1} less its own C·dy
            const float gah = q[i] * hs[k][i];
            gAh = fmaf(gah, A[i], gAh);
            dA[i] = fmaf(gah, dt, dA[i]);
            gB = fmaf(gi, Bv[i], gB);
            y = fmaf(Cv[i], hs[k + 1][i], y);
            gs[i] = gi;
          }
          // The lanes' shares meet after the sub-chunk.
          y_part[k * kShareY + y_col(lp.lane)] = y;
          g_part[k * kShareG + g_col(lp.lane)] = make_float2(gB, gAh);
          // dB = g·Δu and dC = dy·h of neighbouring channels added, then the warp's row for this
          // step. The odd channel sends its dB and keeps its dC, the even one the reverse; choosing
          // the factors rather than the products saves a multiply per state.
          float* row = warp_sums + (tid / 32 * K + k) * row_bc + lp.n0;
          float v[2 * S];
          if (lanes < 32) {
            const int c = (tid & 31) / lanes;
            const bool odd = (c & 1) != 0;
            const float send_by = odd ? dtu : dy, keep_by = odd ? dy : dtu;
#pragma unroll
            for (int i = 0; i < S; ++i) {
              const float send = (odd ? gs[i] : hs[k + 1][i]) * send_by;
              v[i] = fmaf(odd ? hs[k + 1][i] : gs[i], keep_by,
                          __shfl_xor_sync(0xffffffffu, send, lanes));
            }
            store_states<S>(row + (c & ~1) * padded_n + (odd ? padded_n : 0), v);
          } else {
#pragma unroll
            for (int i = 0; i < S; ++i) {
              v[i] = gs[i] * dtu;
              v[S + i] = dy * hs[k + 1][i];
            }
            store_states<S>(row, v, 0);
            store_states<S>(row + padded_n, v, S);
          }
        };
        // Whole sub-chunks: the steps past the chunk's end are no-ops (their staged B, C rows are
        // zero), so each loop is one basic block. On the way back each step's inputs are read
        // before the previous step's stores to shared memory (which the compiler cannot move them
        // past).
#pragma unroll
        for (int k = 0; k < K - 1; ++k) {
          const float2 w = *reinterpret_cast<const float2*>(mine + 4 * k);
          float Bv[S];
          chunk_states<T>(bc, padded_n, k0 + k, 0, lp.n0, Bv);
          recompute(k, w.x, w.y, Bv);
        }
        // The last step forwards reads the first step back's inputs: read after the walk forwards,
        // its record was waited on (ncu: 1.4 % of the channel-major serial walk's stall samples).
        StepInputs cur = inputs(K - 1), nxt;
        recompute(K - 1, cur.w.x, cur.w.y, cur.B);
#pragma unroll
        for (int k = K - 1; k >= 0; --k) {
          if (k > 0)
            nxt = inputs(k - 1);
          reverse(k, cur);
          if (k > 0)
            cur = nxt;
        }
        // Over the block's warps, into the chunk's sums.
        __syncthreads();
        // Every step of the sub-chunk, the no-op ones too (they add zeros inside the chunk's rows),
        // so that the trip count is a constant where the lane count is; one sum per warp, then
        // theirs, keeps the dependent additions few.
        if constexpr (kLanes > 0) {
          // A thread takes V consecutive states of one step: the warps' rows read as V-float
          // vectors and the sum added as one (where N % V == 0), which spares most of the loads
          // and address arithmetic of a thread per element. kSerial sends it by an atomic, from
          // the sub-chunk's first step by 32-bit offsets (64-bit ones held for each element
          // across the loops spilled in the channel-major build).
          constexpr int V = Policy::kSumVector, kPerStep = 2 * kLanes * S / V;
          static_assert(V % 4 == 0 && S % V == 0,
                        "policy: whole 16-byte vectors, each within a lane's states");
          float* const out = kSerial ? dbc_out(t0) : acc + (t0 - t_begin) * two_n;
          const int out_step = kSerial ? a.G * two_n : two_n;
#pragma unroll
          for (int g0 = 0; g0 < K * kPerStep; g0 += NT) {
            const int gi = g0 + tid, k = gi / kPerStep, col = gi % kPerStep * V;
            const int which = col / padded_n, n = col % padded_n;
            if ((K * kPerStep) % NT != 0 && gi >= K * kPerStep)
              break;
            float part[kWarps][V], sum[V];
#pragma unroll
            for (int w = 0; w < kWarps; ++w) {
              const float* row = warp_sums + (w * K + k) * row_bc + col;
#pragma unroll
              for (int q = 0; q < pairs; ++q) {
                float x[V];
                read_states<V>(row + q * 2 * padded_n, x);
#pragma unroll
                for (int e = 0; e < V; ++e)
                  part[w][e] = q == 0 ? x[e] : part[w][e] + x[e];
              }
            }
#pragma unroll
            for (int e = 0; e < V; ++e) {
              sum[e] = part[0][e];
#pragma unroll
              for (int w = 1; w < kWarps; ++w)
                sum[e] += part[w][e];
            }
            float* const dst = out + (k * out_step + which * N + n);
            if constexpr (kSerial) {
              if (n < N && k < steps)
                atomic_add_floats<V>(dst, sum, min(V, N - n), N % V == 0);
            } else if (n < N && N % V == 0) {  // padded steps add zeros inside the chunk's rows
#pragma unroll
              for (int i = 0; i < V; i += 4) {
                float4 x = *reinterpret_cast<const float4*>(dst + i);
                x.x += sum[i], x.y += sum[i + 1], x.z += sum[i + 2], x.w += sum[i + 3];
                *reinterpret_cast<float4*>(dst + i) = x;
              }
            } else if (n < N) {
#pragma unroll
              for (int e = 0; e < V; ++e)
                if (n + e < N)
                  dst[e] += sum[e];
            }
          }
        } else {
          static_assert(!kSerial, "the serial walk's lane count is compiled in");
          const int slots = K * 2 * padded_n;
#pragma unroll
          for (int i0 = 0; i0 < slots; i0 += NT) {
            // Slots past the rows are read at slot 0 and only their update is skipped, so that the
            // iterations' loads are not behind branches and can all be in flight at once.
            const int i = i0 + tid < slots ? i0 + tid : 0;
            const int k = i / (2 * padded_n), col = i % (2 * padded_n);
            const int which = col / padded_n, n = col % padded_n;
            float part[kWarps];
#pragma unroll
            for (int w = 0; w < kWarps; ++w) {
              // Sums start from their first term: 0 + x is an addition the compiler must keep.
              const float* row = warp_sums + (w * K + k) * row_bc + col;
              part[w] = row[0];
              for (int q = 1; q < pairs; ++q)
                part[w] += row[q * 2 * padded_n];
            }
            float sum = part[0];
#pragma unroll
            for (int w = 1; w < kWarps; ++w)
              sum += part[w];
            if (i0 + tid < slots && n < N)
              acc[(t0 - t_begin + k) * two_n + which * N + n] += sum;
          }
        }
        // The channel's gradients of du, dδ and dz, step by step: lane l takes steps l, l + lanes,
        // … and adds the lanes' shares in lane order. Where the lane count is compiled in (and the
        // registers allow: not at 128 from fine checkpoints, where it spilled), the trip count is
        // too and every trip runs (padded steps add zeros and store nothing), so that the trips'
        // shared-memory reads and sums overlap instead of each waiting on the last.
        constexpr bool kWholeTrips = kLanes > 0 && !kFine;
        static_assert(!kWholeTrips || K % (kLanes > 0 ? kLanes : 1) == 0,
                      "policy: whole sub-chunks per lane");
        // The step of trip r and its du, dδ, dz (kRowsVec: both trips' are stored at once).
        const auto finish_step = [&](int k, int r, float& du, float& draw, float& dz) {
          const float* f = finish_values + r * kFinishValues * NT;
          const float u = f[0], dt = f[NT], dy = f[2 * NT];
          const float2 sp_fz = *reinterpret_cast<const float2*>(f + 3 * NT + tid);
          const float dsp = sp_fz.x, fz = sp_fz.y;
          float y = y_part[k * kShareY + y_col(0)];
          float gB = g_part[k * kShareG + g_col(0)].x, gAh = g_part[k * kShareG + g_col(0)].y;
          for (int l = 1; l < lanes; ++l) {
            y += y_part[k * kShareY + y_col(l)];
            const float2 gl = g_part[k * kShareG + g_col(l)];
            gB += gl.x;
            gAh += gl.y;
          }
          draw = fmaf(u, gB, gAh) * dsp;
          d_bias += draw;
          d_skip = fmaf(dy, u, d_skip);
          du = fmaf(dt, gB, dy * skip), dz = fmaf(skip, u, y) * fz;
        };
        if constexpr (kRowsVec) {
          float du[2], draw[2], dz[2];
          const int k = 2 * lp.lane;
          finish_step(k, 0, du[0], draw[0], dz[0]);
          finish_step(k + 1, 1, du[1], draw[1], dz[1]);
          const Index at = rows.off + t0 + k, z_at = rows.z_off + t0 + k;
          if (active && k + 1 < steps) {
            store_step_pair(a.du + at, du[0], du[1]);
            store_step_pair(a.ddelta + at, draw[0], draw[1]);
            if (has_z)
              store_step_pair(a.dz + z_at, dz[0], dz[1]);
          } else if (active && k < steps) {
            a.du[at] = from_float<T>(du[0]);
            a.ddelta[at] = from_float<T>(draw[0]);
            if (has_z)
              a.dz[z_at] = from_float<T>(dz[0]);
          }
        }
        const int finish_end = kRowsVec ? 0 : kWholeTrips ? lp.lane + K : steps;
#pragma unroll
        for (int k = lp.lane, r = 0; k < finish_end; k += lanes, ++r) {
          float du, draw, dz;
          finish_step(k, r, du, draw, dz);
          if (active && k < steps) {
            const int t = t0 + k;
            if constexpr (kSameLayout) {
              *at_step(a.du + rows.off, t, a.du_tb) = from_float<T>(du);
              *at_step(a.ddelta + rows.off, t, a.ddelta_tb) = from_float<T>(draw);
              if (has_z)
                *at_step(a.dz + rows.z_off, t, a.dz_tb) = from_float<T>(dz);
            } else {
              store_act(a.du, a.du_s, b, t, d, du);
              store_act(a.ddelta, a.ddelta_s, b, t, d, draw);
              if (has_z)
                store_act(a.dz, a.dz_s, b, t, d, dz);
            }
          }
        }
        // Every warp has read this sub-chunk's dB, dC rows and step work before the next one
        // overwrites them.
        __syncthreads();
      }
      if (!kSerial || c == 0)
        break;
      carried = true;
      end_chunk();
      --c;
      entry_h -= static_cast<Index>(a.entry_every) * a.entry_s[0];
      begin_chunk();
    }
    if (kSerial && active && a.dh0 != nullptr) {  // what leaves the first chunk is ∂ℓ/∂h0
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (lp.n0 + i < N)
          a.dh0[b * a.dh0_s[0] + d * a.dh0_s[1] + (lp.n0 + i) * a.dh0_s[2]] = q[i];
    }
    d_skip = sum_channel_lanes(d_skip, lanes);
    d_bias = sum_channel_lanes(d_bias, lanes);
    if (active) {
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (lp.n0 + i < N)
          atomicAdd(&a.dA_acc[d * N + lp.n0 + i], dA[i]);
      if (lp.lane == 0) {
        atomicAdd(&a.dD_acc[d], d_skip);
        atomicAdd(&a.dbias_acc[d], d_bias);
      }
    }
  }
  end_chunk();
}

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

/// The launch plan: lanes per channel, chunks, and the channel slices of passes 1 and 3.
template <class Policy>
struct ScanBackwardPlan {
  int lanes_per_channel = 1, padded_n = 0, chunk_len = 0, chunks = 0, slices_per_group = 1;
  int channels_per_slice = 1;
  bool from_checkpoints = false;  // the chunks' entry states come from the forward
  bool serial = false;            // pass 3 walks every chunk itself (choose_serial)
  Index accumulator_floats = 0, chunk_floats = 0;

  ScanBackwardPlan(Index batch, Index L, Index D, Index N, Index G, bool checkpoints = false)
      : from_checkpoints(checkpoints) {
    while (lanes_per_channel * Policy::kStatesPerThread < N)
      lanes_per_channel *= 2;
    padded_n = lanes_per_channel * Policy::kStatesPerThread;
    chunk_len = Policy::kChunk;
    while (chunk_len > Policy::kSubChunk && chunk_len * padded_n > Policy::kChunk * 16)
      chunk_len /= 2;
    chunks = static_cast<int>((L + chunk_len - 1) / chunk_len);
    const Index per_group = D / std::max<Index>(G, 1);
    const Index round = Policy::kThreads / lanes_per_channel;
    channels_per_slice = static_cast<int>(
        std::min<Index>(per_group, std::max<Index>(round, Policy::kChannelsPerBlock)));
    channels_per_slice = std::max(channels_per_slice, 1);
    slices_per_group = static_cast<int>((per_group + channels_per_slice - 1) / channels_per_slice);
    accumulator_floats = batch * L * G * 2 * N + D * N + 2 * D;
    chunk_floats = static_cast<Index>(chunks) * batch * D * ((from_checkpoints ? 1 : 2) * N + 1);
  }

  std::size_t workspace_bytes() const {
    return static_cast<std::size_t>(accumulator_floats + chunk_floats) * sizeof(float);
  }
};

template <class V, class P>
void set_optional(const V& v, P& ptr) {
  ptr = v.absent() ? nullptr : v.data();
}

/// Whether x's rows along time (stride 1) load as whole 16-byte vectors from any multiple of the
/// vector: unit time stride, a 16-byte aligned start, every other stride a multiple of it.
template <class T, std::size_t R>
bool time_vectors(const T* x, const Index (&strides)[R]) {
  constexpr Index kVec = 16 / static_cast<Index>(sizeof(T));
  bool whole = aligned16(x) && strides[1] == 1;
  for (std::size_t i = 0; i < R; ++i)
    whole = whole && (i == 1 || strides[i] % kVec == 0);
  return whole;
}

/// The kernel arguments of a validated `p` with its workspace `ws` laid out per `plan`.
template <class Policy, class T>
ScanBackwardArgs<T> make_backward_args(const SelectiveScanBackwardParams<T, float>& p,
                                       const ScanBackwardPlan<Policy>& plan, float* ws) {
  ScanBackwardArgs<T> a{};
  a.u = p.u.data();
  a.delta = p.delta.data();
  set_optional(p.z, a.z);
  a.dout = p.dout.data();
  copy_strides(p.u, a.u_s);
  copy_strides(p.delta, a.delta_s);
  copy_strides(p.z, a.z_s);
  copy_strides(p.dout, a.dout_s);
  a.B = p.B.data();
  a.C = p.C.data();
  copy_strides(p.B, a.B_s);
  copy_strides(p.C, a.C_s);
  a.A = p.A.data();
  copy_strides(p.A, a.A_s);
  set_optional(p.D_skip, a.D_skip);
  a.D_skip_s = p.D_skip.absent() ? 0 : p.D_skip.stride(0);
  set_optional(p.delta_bias, a.delta_bias);
  a.delta_bias_s = p.delta_bias.absent() ? 0 : p.delta_bias.stride(0);
  set_optional(p.h0, a.h0);
  copy_strides(p.h0, a.h0_s);
  set_optional(p.checkpoints, a.checkpoints);
  copy_strides(p.checkpoints, a.checkpoints_s);
  set_optional(p.dh_final, a.dh_final);
  copy_strides(p.dh_final, a.dh_final_s);
  a.du = p.du.data();
  a.ddelta = p.ddelta.data();
  set_optional(p.dz, a.dz);
  copy_strides(p.du, a.du_s);
  copy_strides(p.ddelta, a.ddelta_s);
  copy_strides(p.dz, a.dz_s);
  a.dB = p.dB.data();
  a.dC = p.dC.data();
  copy_strides(p.dB, a.dB_s);
  copy_strides(p.dC, a.dC_s);
  a.dA = p.dA.data();
  copy_strides(p.dA, a.dA_s);
  set_optional(p.dD_skip, a.dD_skip);
  a.dD_skip_s = p.dD_skip.absent() ? 0 : p.dD_skip.stride(0);
  set_optional(p.ddelta_bias, a.ddelta_bias);
  a.ddelta_bias_s = p.ddelta_bias.absent() ? 0 : p.ddelta_bias.stride(0);
  set_optional(p.dh0, a.dh0);
  copy_strides(p.dh0, a.dh0_s);

  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index G = p.groups(), chunks = plan.chunks;
  a.dBC_acc = ws;
  a.dA_acc = a.dBC_acc + batch * L * G * 2 * N;
  a.dD_acc = a.dA_acc + D * N;
  a.dbias_acc = a.dD_acc + D;
  a.chunk_dt = a.dbias_acc + D;
  a.chunk_h = plan.from_checkpoints ? nullptr : a.chunk_dt + chunks * batch * D;
  a.chunk_q = a.chunk_dt + chunks * batch * D * (plan.from_checkpoints ? 1 : N + 1);
  a.entry = plan.from_checkpoints ? a.checkpoints : a.chunk_h;
  a.entry_every = 1;
  if (!plan.from_checkpoints) {
    const Index s[4] = {batch * D * N, D * N, N, 1};
    std::copy(s, s + 4, a.entry_s);
  } else {
    std::copy(a.checkpoints_s, a.checkpoints_s + 4, a.entry_s);
    a.entry_every = static_cast<int>(plan.chunk_len / p.checkpoint_interval);
  }
  a.entry_vec = aligned16(a.entry) && N % 4 == 0 && a.entry_s[3] == 1 && a.entry_s[0] % 4 == 0 &&
                a.entry_s[1] % 4 == 0 && a.entry_s[2] % 4 == 0;
  constexpr Index kVec = 16 / static_cast<Index>(sizeof(T));
  a.bc_time_vec =
      plan.chunk_len % kVec == 0 && time_vectors(a.B, a.B_s) && time_vectors(a.C, a.C_s);
  const auto time_bytes = [](const auto& v) {
    return v.absent() ? 0 : static_cast<int>(v.stride(1) * static_cast<Index>(sizeof(T)));
  };
  a.delta_tb = time_bytes(p.delta);
  a.u_tb = time_bytes(p.u);
  a.dout_tb = time_bytes(p.dout);
  a.z_tb = time_bytes(p.z);
  a.du_tb = time_bytes(p.du);
  a.ddelta_tb = time_bytes(p.ddelta);
  a.dz_tb = time_bytes(p.dz);
  a.batch = static_cast<int>(batch);
  a.L = static_cast<int>(L);
  a.D = static_cast<int>(D);
  a.N = static_cast<int>(N);
  a.G = static_cast<int>(G);
  a.channels_per_group = static_cast<int>(D / G);
  a.lanes_per_channel = plan.lanes_per_channel;
  a.padded_n = plan.padded_n;
  a.chunk_len = plan.chunk_len;
  a.chunks = plan.chunks;
  a.slices_per_group = plan.slices_per_group;
  a.channels_per_slice = plan.channels_per_slice;
  a.softplus = p.delta_softplus;
  const auto like = [](const auto& v, const auto& w) {
    return v.absent() || (v.stride(0) == w.stride(0) && v.stride(2) == w.stride(2));
  };
  a.same_layout = like(p.delta, p.u) && like(p.dout, p.u) && like(p.du, p.u) &&
                  like(p.ddelta, p.u) && (p.z.absent() || like(p.dz, p.z));
  const auto pairs = [](const auto& v) {
    return v.absent() || (v.stride(1) == 1 && v.stride(0) % 2 == 0 && v.stride(2) % 2 == 0 &&
                          reinterpret_cast<std::uintptr_t>(v.data()) % (2 * sizeof(T)) == 0);
  };
  a.rows_vec = pairs(p.u) && pairs(p.delta) && pairs(p.dout) && pairs(p.z) && pairs(p.du) &&
               pairs(p.ddelta) && pairs(p.dz);
  return a;
}

/// Makes `plan` serial (Policy::kSerialBlocksPerSM) where pass 3 has a kernel for it (fine
/// checkpoints read as vectors, the usual lane count, one layout) and enough blocks of one round
/// of channels each to fill `sm_count` SMs; `a` follows the plan's new slices.
template <class Policy, class T>
void choose_serial(ScanBackwardPlan<Policy>& plan, ScanBackwardArgs<T>& a, int sm_count) {
  constexpr int kUsualLanes = 16 / Policy::kStatesPerThread;
  const Index per_group = a.channels_per_group;
  const Index round = std::min<Index>(per_group, Policy::kThreads / plan.lanes_per_channel);
  const Index slices = (per_group + round - 1) / std::max<Index>(round, 1);
  const Index blocks = static_cast<Index>(a.batch) * a.G * slices;
  plan.serial = plan.from_checkpoints && plan.chunks > 0 && a.entry_every > 1 && a.entry_vec &&
                plan.lanes_per_channel == kUsualLanes && a.same_layout && round > 0 &&
                blocks >= static_cast<Index>(Policy::kSerialBlocksPerSM) * sm_count;
  if (!plan.serial)
    return;
  plan.channels_per_slice = a.channels_per_slice = static_cast<int>(round);
  plan.slices_per_group = a.slices_per_group = static_cast<int>(slices);
}

constexpr int kFlatThreads = 256;

/// Lets `kernel` take `bytes` of dynamic shared memory (beyond the default 48 KB needs opting in).
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
}

inline unsigned flat_blocks(Index n) {
  return static_cast<unsigned>((n + kFlatThreads - 1) / kFlatThreads);
}

// The passes one by one (the benchmark times them separately); each launches nothing when it
// has no work.

/// Zeroes the accumulators.
template <class Policy, class T>
void launch_backward_clear(const ScanBackwardArgs<T>& a, const ScanBackwardPlan<Policy>& plan,
                           cudaStream_t stream) {
  SSMKIT_CUDA_CHECK(cudaMemsetAsync(
      a.dBC_acc, 0, static_cast<std::size_t>(plan.accumulator_floats) * sizeof(float), stream));
}

template <class Policy, class T>
void launch_backward_local(const ScanBackwardArgs<T>& a, const ScanBackwardPlan<Policy>& plan,
                           cudaStream_t stream) {
  if (a.batch == 0 || plan.chunks == 0 || plan.serial)
    return;
  const dim3 grid(static_cast<unsigned>(plan.chunks),
                  static_cast<unsigned>(a.G * plan.slices_per_group),
                  static_cast<unsigned>(a.batch));
  constexpr int kUsualLanes = 16 / Policy::kStatesPerThread;  // as in pass 3
  const auto launch = [&](auto kernel, int lanes_per_channel) {
    const std::size_t smem = static_cast<std::size_t>(local_smem_floats<Policy>(
                                 plan.chunk_len, plan.padded_n, lanes_per_channel)) *
                             sizeof(float);
    allow_dynamic_smem(kernel, smem);
    kernel<<<grid, Policy::kThreads, smem, stream>>>(a);
  };
  const bool usual = plan.lanes_per_channel == kUsualLanes;
  // One lane per channel where the states fill 16 and its loads are whole lines or vectors (see
  // scan_backward_adjoint_kernel); elsewhere the lanes of one channel share it.
  const auto adjacent = [](const T* x, const Index* st) { return x == nullptr || st[2] == 1; };
  const auto time_vec = [](const T* x, const Index(&st)[3]) {
    return x == nullptr || time_vectors(x, st);
  };
  if (plan.from_checkpoints && plan.padded_n == 16) {
    if (adjacent(a.delta, a.delta_s) && adjacent(a.dout, a.dout_s) && adjacent(a.z, a.z_s)) {
      launch(scan_backward_adjoint_kernel<Policy, false, T>, 0);
      SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_adjoint_kernel");
      return;
    }
    // Along time for 2-byte types only: fp32 channel-major took 2.95 -> 3.16-3.18 ms (H100, D=5120
    // from fine checkpoints; a lane's 4 steps per load touch a line each), bf16 2.81-2.82 ->
    // 2.74-2.77.
    if constexpr (sizeof(T) == 2) {
      if (plan.chunk_len % (16 / static_cast<int>(sizeof(T))) == 0 &&
          time_vec(a.delta, a.delta_s) && time_vec(a.dout, a.dout_s) && time_vec(a.z, a.z_s)) {
        launch(scan_backward_adjoint_kernel<Policy, true, T>, 0);
        SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_adjoint_kernel");
        return;
      }
    }
  }
  if (plan.from_checkpoints)
    launch(usual ? scan_backward_local_kernel<Policy, kUsualLanes, false, T>
                 : scan_backward_local_kernel<Policy, 0, false, T>,
           plan.lanes_per_channel);
  else
    launch(usual ? scan_backward_local_kernel<Policy, kUsualLanes, true, T>
                 : scan_backward_local_kernel<Policy, 0, true, T>,
           plan.lanes_per_channel);
  SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_local_kernel");
}

template <class Policy, class T>
void launch_backward_join(const ScanBackwardArgs<T>& a, const ScanBackwardPlan<Policy>& plan,
                          cudaStream_t stream) {
  const Index states = static_cast<Index>(a.batch) * a.D * a.N;
  if (states == 0 || plan.serial)
    return;
  scan_backward_join_kernel<<<flat_blocks(states), kFlatThreads, 0, stream>>>(a);
  SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_join_kernel");
}

template <class Policy, class T>
void launch_backward_chunks(const ScanBackwardArgs<T>& a, const ScanBackwardPlan<Policy>& plan,
                            cudaStream_t stream) {
  if (a.batch == 0 || plan.chunks == 0)
    return;
  const dim3 grid(static_cast<unsigned>(plan.serial ? 1 : plan.chunks),
                  static_cast<unsigned>(a.G * plan.slices_per_group),
                  static_cast<unsigned>(a.batch));
  // Entry states at every sub-chunk, loaded as vectors; other layouts of fine checkpoints take
  // the walk from each chunk's first one.
  const bool fine = a.entry_every > 1 && a.entry_vec;
  const std::size_t smem = static_cast<std::size_t>(chunk_smem_floats<Policy>(
                               plan.chunk_len, plan.padded_n, a.N, plan.lanes_per_channel, fine)) *
                           sizeof(float);
  // The lane count of the usual state sizes (N = 9..16 with 4 states per lane) is compiled in, so
  // that its shuffles and index arithmetic fold; other sizes read it at run time.
  constexpr int kUsualLanes = 16 / Policy::kStatesPerThread;
  const auto launch = [&](auto kernel) {
    allow_dynamic_smem(kernel, smem);
    kernel<<<grid, Policy::kThreads, smem, stream>>>(a);
  };
  // kRowsVec builds (two steps per lane) exist for 4 usual lanes and 8-step sub-chunks.
  constexpr bool kPairs = kUsualLanes == 4 && Policy::kSubChunk == 8;
  const auto pick = [&](auto fine) {
    constexpr bool kFine = decltype(fine)::value;
    if constexpr (kFine && kPairs) {
      if (plan.lanes_per_channel == kUsualLanes && a.same_layout && a.rows_vec) {
        launch(scan_backward_chunk_kernel<Policy, kUsualLanes, true, true, false, T, true>);
        return;
      }
    }
    if (plan.lanes_per_channel == kUsualLanes && a.same_layout)
      launch(scan_backward_chunk_kernel<Policy, kUsualLanes, true, kFine, false, T>);
    else if (plan.lanes_per_channel == kUsualLanes)
      launch(scan_backward_chunk_kernel<Policy, kUsualLanes, false, kFine, false, T>);
    else
      launch(scan_backward_chunk_kernel<Policy, 0, false, kFine, false, T>);
  };
  const auto serial = [&] {  // choose_serial checked what these kernels need
    if constexpr (kPairs) {
      if (a.rows_vec) {
        launch(scan_backward_chunk_kernel<Policy, kUsualLanes, true, true, true, T, true>);
        return;
      }
    }
    launch(scan_backward_chunk_kernel<Policy, kUsualLanes, true, true, true, T>);
  };
  if (plan.serial)
    serial();
  else if (fine)
    pick(std::true_type{});
  else
    pick(std::false_type{});
  SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_chunk_kernel");
}

/// Rounds the accumulators into the gradient views.
template <class Policy, class T>
void launch_backward_finish(const ScanBackwardArgs<T>& a, const ScanBackwardPlan<Policy>&,
                            cudaStream_t stream) {
  const Index projections = static_cast<Index>(a.batch) * a.L * a.G * a.N;
  if (projections > 0) {
    scan_backward_dbc_kernel<<<flat_blocks(projections), kFlatThreads, 0, stream>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_dbc_kernel");
  }
  const Index params = static_cast<Index>(a.D) * a.N;
  if (params > 0) {
    scan_backward_params_kernel<<<flat_blocks(params), kFlatThreads, 0, stream>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("scan_backward_params_kernel");
  }
}

}  // namespace detail

/// Bytes of device workspace selective_scan_backward needs for `p`.
template <class Policy = SelectiveScanBackwardPolicy, class T, class W>
std::size_t selective_scan_backward_workspace_size(const SelectiveScanBackwardParams<T, W>& p) {
  return detail::ScanBackwardPlan<Policy>(p.batch(), p.length(), p.channels(), p.state_size(),
                                          p.groups(), !p.checkpoints.absent())
      .workspace_bytes();
}

/// Every gradient of `p` (views on Device::CUDA; storage float, __half or __nv_bfloat16 with
/// float A, D, δ_bias, states and their gradients), ordered on `stream`, as
/// cpu::selective_scan_backward computes them. `workspace` holds at least
/// selective_scan_backward_workspace_size(p) bytes of device memory. dB, dC, dA, dD and dδ_bias
/// are sums formed with float atomics, so their last bits may vary from run to run. With the
/// forward's checkpoints (p.checkpoints, every selective_scan_checkpoint_interval(N) steps) the
/// chunks start from them instead of states the backward would form itself.
/// Throws ssmkit::Error on invalid arguments or a failed launch.
template <class Policy = SelectiveScanBackwardPolicy, class T, class W>
void selective_scan_backward(const SelectiveScanBackwardParams<T, W>& p, cudaStream_t stream,
                             void* workspace, std::size_t workspace_bytes) {
  static_assert(std::is_same_v<W, float>,
                "the CUDA backward keeps A, D, delta_bias, states and their gradients in float");
  static_assert(
      std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
      "the CUDA backward stores float, __half or __nv_bfloat16");
  static_assert(Policy::kThreads % 32 == 0 && Policy::kChunk % Policy::kSubChunk == 0,
                "policy: whole warps, whole sub-chunks per chunk");
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index G = p.groups();
  SSMKIT_CHECK(N <= kMaxBackwardStateSize, "A", "state size N = size(1)",
               "<= " + std::to_string(kMaxBackwardStateSize) + " on the CUDA backward", N);
  SSMKIT_CHECK(batch <= 65535, "u", "batch size", "<= 65535 on CUDA", batch);
  SSMKIT_CHECK(L <= (Index{1} << 31) - 1 - Policy::kChunk, "u", "length", "< 2^31 on CUDA", L);
  // 32-bit byte strides.
  constexpr Index kStrideLimit = ((Index{1} << 31) - 1) / static_cast<Index>(sizeof(T));
  detail::check_time_stride(p.u, "u", kStrideLimit);
  detail::check_time_stride(p.delta, "delta", kStrideLimit);
  detail::check_time_stride(p.z, "z", kStrideLimit);
  detail::check_time_stride(p.dout, "dout", kStrideLimit);
  detail::check_time_stride(p.du, "du", kStrideLimit);
  detail::check_time_stride(p.ddelta, "ddelta", kStrideLimit);
  detail::check_time_stride(p.dz, "dz", kStrideLimit);
  detail::ScanBackwardPlan<Policy> plan(batch, L, D, N, G, !p.checkpoints.absent());
  SSMKIT_CHECK(G * plan.slices_per_group <= 65535, "u", "channels",
               "at most 65535 blocks of channels on CUDA", D);
  SSMKIT_CHECK(p.checkpoints.absent() || p.checkpoint_interval == plan.chunk_len ||
                   p.checkpoint_interval == Policy::kSubChunk,
               "checkpoint_interval", "value",
               std::to_string(plan.chunk_len) + " or " + std::to_string(Policy::kSubChunk) +
                   " (the backward's chunk and sub-chunk lengths at N = " + std::to_string(N) + ")",
               p.checkpoint_interval);
  const std::size_t need = plan.workspace_bytes();
  SSMKIT_CHECK(need == 0 || (workspace != nullptr && workspace_bytes >= need), "workspace", "bytes",
               ">= " + std::to_string(need), workspace == nullptr ? 0 : workspace_bytes);
  if (D == 0)
    return;
  detail::ScanBackwardArgs<T> a =
      detail::make_backward_args(p, plan, static_cast<float*>(workspace));
  detail::choose_serial(plan, a, multiprocessor_count());
  detail::launch_backward_clear(a, plan, stream);
  detail::launch_backward_local(a, plan, stream);
  detail::launch_backward_join(a, plan, stream);
  detail::launch_backward_chunks(a, plan, stream);
  detail::launch_backward_finish(a, plan, stream);
}

/// As above, with the workspace taken from and returned to the stream-ordered pool.
template <class Policy = SelectiveScanBackwardPolicy, class T, class W>
void selective_scan_backward(const SelectiveScanBackwardParams<T, W>& p, cudaStream_t stream) {
  validate(p, Device::CUDA);
  with_pool_workspace(
      selective_scan_backward_workspace_size<Policy>(p), stream,
      [&](void* ws, std::size_t bytes) { selective_scan_backward<Policy>(p, stream, ws, bytes); });
}

}  // namespace ssmkit::cuda
