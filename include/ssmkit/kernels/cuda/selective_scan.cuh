// The S6 selective scan forward on the GPU (Mamba, arXiv 2312.00752, Algorithm 2), the expanded
// (B·L·D·N) state never leaving registers. Same math and argument struct as cpu::selective_scan.
//
// A thread owns one channel's slice of kStatesPerThread states (channels with more states get
// several lanes, whose partial outputs meet through warp shuffles) and walks time with the next
// tile of u/δ/z already in flight. When batch·channels cannot fill the GPU, the sequence is cut
// into chunks: pass 1 computes each chunk's local final state (from zero) and ΣΔ; pass 2 starts
// every chunk from h0 carried through its predecessors, h ← exp(A·ΣΔ)·h + h_local, and scans again.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace ssmkit::cuda {

/// Tuning knobs of selective_scan (pass another struct with the same members to try others).
struct SelectiveScanPolicy {
  static constexpr int kThreads = 128;         ///< threads per block
  static constexpr int kStatesPerThread = 16;  ///< states one thread keeps in registers
  /// Time steps per unrolled tile, also the prefetch depth: 8 spills in the second pass.
  static constexpr int kTile = 4;
  static constexpr int kPolyStates = 0;  ///< of those states, how many take exp2 on the FMA pipes
  /// Cut L into chunks until about this many warps run per SM sub-partition (4 per SM); also
  /// the occupancy the registers are budgeted for.
  static constexpr int kWarpsPerScheduler = 3;
  static constexpr int kMinChunk = 512;  ///< shortest chunk worth a second pass
};

namespace detail {

/// How the kernel may address u, δ, z, out (and B, C).
enum class ScanLayout {
  kGeneric,       ///< any strides, scalar loads (also when B, C rows exceed the staging)
  kTokenMajor,    ///< channel stride 1 (coalesced per step); B, C staged in shared memory
  kChannelMajor,  ///< time stride 1, 16-byte aligned rows: a tile per thread as 16-byte
                  ///< vectors; B, C staged in shared memory
};

template <class T>
struct ScanArgs {
  const T* u;
  const T* delta;
  const T* z;
  T* out;
  Index u_s[3], delta_s[3], z_s[3], out_s[3];  // (batch, time, channel) strides
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
  float* h_final;
  Index h_final_s[3];
  float* chunk_state;  // (chunks-1, batch, D, N): local final state of each chunk but the last
  float* chunk_dt;     // (chunks-1, batch, D): ΣΔ over each of those chunks
  int batch, L, D, N, channels_per_group, chunk_len, lanes_per_channel;
  bool softplus;
};

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2_mufu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// 2^x on the FMA pipes: 2^round(x) into the exponent bits times a degree-5 fit of 2^f on
/// [-1/2, 1/2] (relative error 8e-8). x is clamped at -125, where the state has long decayed.
__device__ __forceinline__ float ex2_poly(float x) {
  x = fmaxf(x, -125.f);
  const float shifter = 12582912.f;  // 1.5·2^23: adding it rounds to an integer in the low bits
  const float r = x + shifter;
  const int j = __float_as_int(r) - __float_as_int(shifter);
  const float f = x - (r - shifter);
  float p = 1.3266971e-3f;
  p = fmaf(p, f, 9.6754599e-3f);
  p = fmaf(p, f, 5.5507425e-2f);
  p = fmaf(p, f, 2.4022122e-1f);
  p = fmaf(p, f, 6.9314694e-1f);
  p = fmaf(p, f, 1.0000001f);
  return __int_as_float(__float_as_int(p) + (j << 23));
}

/// PyTorch's softplus (identity above 20) without branches, so that a tile of steps stays one
/// basic block the scheduler can interleave: max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1],
/// with log1p(e) = 2·atanh(s), s = e / (2 + e) <= 1/3, as its odd series to s^15 (error 3e-8).
__device__ __forceinline__ float softplus_f(float x) {
  const float e = __expf(-fabsf(x));
  const float s = __fdividef(e, 2.f + e), s2 = s * s;
  float p = 1.f / 15.f;
  p = fmaf(p, s2, 1.f / 13.f);
  p = fmaf(p, s2, 1.f / 11.f);
  p = fmaf(p, s2, 1.f / 9.f);
  p = fmaf(p, s2, 1.f / 7.f);
  p = fmaf(p, s2, 1.f / 5.f);
  p = fmaf(p, s2, 1.f / 3.f);
  p = fmaf(p, s2, 1.f);
  const float sp = fmaxf(x, 0.f) + 2.f * s * p;
  return x > 20.f ? x : sp;
}

/// x·σ(x); the quotient goes to 0 when e^-x overflows.
__device__ __forceinline__ float silu_f(float x) {
  return __fdividef(x, 1.f + __expf(-x));
}

/// The widest vector (16 or 8 bytes) that whole tiles of kTile elements of T are made of.
template <int kTile, class T>
using tile_vec_t = std::conditional_t<kTile * sizeof(T) % 16 == 0, uint4, uint2>;

/// Loads kTile consecutive elements at `p` (aligned to the vector) as vectors.
template <int kTile, class T>
__device__ __forceinline__ void load_vec(const T* p, T (&dst)[kTile]) {
  using V = tile_vec_t<kTile, T>;
  static_assert(kTile * sizeof(T) % sizeof(V) == 0, "a tile must be whole 8-byte vectors");
  constexpr int kVecs = kTile * sizeof(T) / sizeof(V);
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    const V raw = __ldg(reinterpret_cast<const V*>(p) + v);
    std::memcpy(&dst[v * sizeof(V) / sizeof(T)], &raw, sizeof(V));
  }
}

template <int kTile, class T>
__device__ __forceinline__ void store_vec(T* p, const T (&src)[kTile]) {
  using V = tile_vec_t<kTile, T>;
  constexpr int kVecs = kTile * sizeof(T) / sizeof(V);
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    V raw;
    std::memcpy(&raw, &src[v * sizeof(V) / sizeof(T)], sizeof(V));
    reinterpret_cast<V*>(p)[v] = raw;
  }
}

/// One tile of a (batch, time, channel) operand for one thread's channel: kTile steps from t0
/// (steps at or past t_end are not read).
template <ScanLayout kLayout, int kTile, class T>
__device__ __forceinline__ void load_tile(const T* base, const Index (&s)[3], int t0, int t_end,
                                          T (&dst)[kTile]) {
  if (kLayout == ScanLayout::kChannelMajor && t0 + kTile <= t_end) {
    load_vec<kTile>(base + t0, dst);
    return;
  }
#pragma unroll
  for (int i = 0; i < kTile; ++i)
    if (t0 + i < t_end)
      dst[i] = __ldg(base + static_cast<Index>(t0 + i) * s[1]);
}

/// This thread's slice [n0, n0 + S) of row B[b, t, g, :] (or C) from global memory, zero past N.
template <int S, class T>
__device__ __forceinline__ void load_states(const T* row, Index stride_n, int n0, int N,
                                            float (&v)[S]) {
#pragma unroll
  for (int i = 0; i < S; ++i)
    v[i] = n0 + i < N ? to_float(__ldg(row + static_cast<Index>(n0 + i) * stride_n)) : 0.f;
}

/// Elements of B and C one tile stages in shared memory, at most: each thread carries
/// kStagePerThread of them from global memory (issued a tile ahead) into the next buffer.
constexpr int kStagePerThread = 8;

/// The block's B and C rows of one tile, [B|C][step][group][state padded to a multiple of 4]
/// as float: converted once per block instead of once per thread, and read as broadcasts.
struct StateTile {
  int groups, padded_n, count;  // count = 2 * tile * groups * padded_n
};

template <int kThreads, int kTile, class T>
__device__ __forceinline__ void stage_states(const ScanArgs<T>& a, const StateTile& st, int b,
                                             int g_lo, int t0, int t_end,
                                             float (&stage)[kStagePerThread]) {
#pragma unroll
  for (int j = 0; j < kStagePerThread; ++j) {
    const int e = static_cast<int>(threadIdx.x) + j * kThreads;
    float v = 0.f;
    if (e < st.count) {
      const int n = e % st.padded_n;
      int r = e / st.padded_n;
      const int gl = r % st.groups;
      r /= st.groups;
      const int t = t0 + r % kTile;
      const bool is_c = r >= kTile;
      if (n < a.N && t < t_end) {
        const T* base = is_c ? a.C : a.B;
        const Index* str = is_c ? a.C_s : a.B_s;
        v = to_float(__ldg(base + b * str[0] + t * str[1] + (g_lo + gl) * str[2] + n * str[3]));
      }
    }
    stage[j] = v;
  }
}

template <int kThreads>
__device__ __forceinline__ void store_stage(float* buf, const StateTile& st,
                                            const float (&stage)[kStagePerThread]) {
#pragma unroll
  for (int j = 0; j < kStagePerThread; ++j) {
    const int e = static_cast<int>(threadIdx.x) + j * kThreads;
    if (e < st.count)
      buf[e] = stage[j];
  }
}

/// This thread's states [n0, n0 + S) of step i from a staged tile, as 16-byte broadcasts.
template <int S>
__device__ __forceinline__ void read_states(const float* row, int n0, int padded_n, float (&v)[S]) {
#pragma unroll
  for (int j = 0; j < S; j += 4) {
    float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
    if (n0 + j < padded_n)
      q = *reinterpret_cast<const float4*>(row + n0 + j);
    v[j] = q.x;
    v[j + 1] = q.y;
    v[j + 2] = q.z;
    v[j + 3] = q.w;
  }
}

/// The scan of one chunk of one (batch, channel-slice). kPass1: local final state only.
template <class Policy, ScanLayout kLayout, bool kPass1, class T>
__global__ void __launch_bounds__(Policy::kThreads,
                                  Policy::kWarpsPerScheduler * 128 / Policy::kThreads)
    selective_scan_kernel(const ScanArgs<T> a) {
  constexpr int S = Policy::kStatesPerThread;
  constexpr int kTile = Policy::kTile;
  const int K = a.lanes_per_channel;
  const int lane_in_channel = static_cast<int>(threadIdx.x) % K;
  const int d_raw =
      static_cast<int>(blockIdx.x) * (Policy::kThreads / K) + static_cast<int>(threadIdx.x) / K;
  const bool active = d_raw < a.D;
  const int d = active ? d_raw : a.D - 1;  // idle lanes still join the shuffles
  const int b = blockIdx.y, chunk = blockIdx.z;
  const int n0 = lane_in_channel * S;
  const int g = d / a.channels_per_group;
  const int t_begin = chunk * a.chunk_len;
  const int t_end = min(a.L, t_begin + a.chunk_len);

  float a2[S], h[S];  // A·log2(e), so that exp(Δ·A) = 2^(Δ·a2)
#pragma unroll
  for (int i = 0; i < S; ++i) {
    const int n = n0 + i;
    a2[i] = n < a.N ? a.A[d * a.A_s[0] + n * a.A_s[1]] * kLog2e : 0.f;
    h[i] = 0.f;
  }
  if (!kPass1) {
    if (a.h0 != nullptr) {
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (n0 + i < a.N)
          h[i] = a.h0[b * a.h0_s[0] + d * a.h0_s[1] + (n0 + i) * a.h0_s[2]];
    }
    for (int c = 0; c < chunk; ++c) {
      const Index row = (static_cast<Index>(c) * a.batch + b) * a.D + d;
      const float sum_dt = a.chunk_dt[row];
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (n0 + i < a.N)
          h[i] = ex2_mufu(a2[i] * sum_dt) * h[i] + a.chunk_state[row * a.N + n0 + i];
    }
  }

  const float bias = a.delta_bias != nullptr ? a.delta_bias[d * a.delta_bias_s] : 0.f;
  const float d_skip = a.D_skip != nullptr ? a.D_skip[d * a.D_skip_s] : 0.f;
  const bool has_z = a.z != nullptr;
  const T* u_p = a.u + b * a.u_s[0] + d * a.u_s[2];
  const T* dt_p = a.delta + b * a.delta_s[0] + d * a.delta_s[2];
  const T* z_p = has_z ? a.z + b * a.z_s[0] + d * a.z_s[2] : nullptr;
  T* out_p = a.out + b * a.out_s[0] + d * a.out_s[2];
  const T* B_p = a.B + b * a.B_s[0] + g * a.B_s[2];
  const T* C_p = a.C + b * a.C_s[0] + g * a.C_s[2];
  const bool writer = active && lane_in_channel == 0;

  constexpr bool kShared = kLayout != ScanLayout::kGeneric;
  __shared__ __align__(
      16) float states_s[kShared ? 2 : 1][kShared ? Policy::kThreads * kStagePerThread : 1];
  StateTile st{};
  int g_lo = 0, gl = 0;
  float stage[kStagePerThread];
  if constexpr (kShared) {
    const int cpb = Policy::kThreads / K;
    const int d_first = static_cast<int>(blockIdx.x) * cpb;
    const int d_last = min(d_first + cpb, a.D) - 1;
    g_lo = d_first / a.channels_per_group;
    gl = g - g_lo;
    st.groups = d_last / a.channels_per_group - g_lo + 1;
    st.padded_n = (a.N + 3) / 4 * 4;
    st.count = 2 * kTile * st.groups * st.padded_n;
    if (t_begin < t_end) {
      stage_states<Policy::kThreads, kTile>(a, st, b, g_lo, t_begin, t_end, stage);
      store_stage<Policy::kThreads>(states_s[0], st, stage);
    }
    __syncthreads();
  }
  int buf = 0;

  T u_r[kTile], dt_r[kTile], z_r[kTile];
  float sum_dt = 0.f;
  if (t_begin < t_end) {
    load_tile<kLayout, kTile>(u_p, a.u_s, t_begin, t_end, u_r);
    load_tile<kLayout, kTile>(dt_p, a.delta_s, t_begin, t_end, dt_r);
    if (!kPass1 && has_z)
      load_tile<kLayout, kTile>(z_p, a.z_s, t_begin, t_end, z_r);
  }
  for (int t0 = t_begin; t0 < t_end; t0 += kTile) {
    // The next tile's loads go out before this tile's arithmetic, which hides their latency.
    T u_n[kTile], dt_n[kTile], z_n[kTile];
    const int t1 = t0 + kTile;
    if constexpr (kShared) {
      if (t1 < t_end)
        stage_states<Policy::kThreads, kTile>(a, st, b, g_lo, t1, t_end, stage);
    }
    if (t1 < t_end) {
      load_tile<kLayout, kTile>(u_p, a.u_s, t1, t_end, u_n);
      load_tile<kLayout, kTile>(dt_p, a.delta_s, t1, t_end, dt_n);
      if (!kPass1 && has_z)
        load_tile<kLayout, kTile>(z_p, a.z_s, t1, t_end, z_n);
    }
    T y_r[kTile];
    // One step; a full tile runs without per-step checks so that its steps form one basic
    // block (the loads, exponentials and the h chain of neighbouring steps interleave).
    const auto step = [&](int i) {
      const int t = t0 + i;
      float dt = to_float(dt_r[i]) + bias;
      dt = a.softplus ? softplus_f(dt) : dt;
      const float uf = to_float(u_r[i]);
      const float du = dt * uf;
      float Bv[S];
      if constexpr (kShared)
        read_states<S>(&states_s[buf][(i * st.groups + gl) * st.padded_n], n0, st.padded_n, Bv);
      else
        load_states<S>(B_p + t * a.B_s[1], a.B_s[3], n0, a.N, Bv);
      if (kPass1) {
        sum_dt += dt;
#pragma unroll
        for (int n = 0; n < S; ++n) {
          const float x = dt * a2[n];
          const float decay = n < Policy::kPolyStates ? ex2_poly(x) : ex2_mufu(x);
          h[n] = fmaf(decay, h[n], du * Bv[n]);
        }
      } else {
        float Cv[S];
        if constexpr (kShared)
          read_states<S>(&states_s[buf][((kTile + i) * st.groups + gl) * st.padded_n], n0,
                         st.padded_n, Cv);
        else
          load_states<S>(C_p + t * a.C_s[1], a.C_s[3], n0, a.N, Cv);
        float y0 = 0.f, y1 = 0.f;  // two partial sums halve the dependent chain
#pragma unroll
        for (int n = 0; n < S; ++n) {
          const float x = dt * a2[n];
          const float decay = n < Policy::kPolyStates ? ex2_poly(x) : ex2_mufu(x);
          h[n] = fmaf(decay, h[n], du * Bv[n]);
          if (n % 2 == 0)
            y0 = fmaf(Cv[n], h[n], y0);
          else
            y1 = fmaf(Cv[n], h[n], y1);
        }
        float y = y0 + y1;
        for (int off = K / 2; off > 0; off /= 2)
          y += __shfl_xor_sync(0xffffffffu, y, off);
        y = fmaf(d_skip, uf, y);
        y = has_z ? y * silu_f(to_float(z_r[i])) : y;
        y_r[i] = from_float<T>(y);
        if (kLayout != ScanLayout::kChannelMajor && writer)
          out_p[t * a.out_s[1]] = y_r[i];
      }
    };
    if (t1 <= t_end) {
#pragma unroll
      for (int i = 0; i < kTile; ++i)
        step(i);
    } else {
#pragma unroll
      for (int i = 0; i < kTile; ++i)
        if (i < t_end - t0)
          step(i);
    }
    if (kLayout == ScanLayout::kChannelMajor && !kPass1 && writer) {
      if (t1 <= t_end) {
        store_vec<kTile>(out_p + t0, y_r);
      } else {
#pragma unroll
        for (int i = 0; i < kTile; ++i)
          if (t0 + i < t_end)
            out_p[t0 + i] = y_r[i];
      }
    }
    if constexpr (kShared) {
      // The other buffer was last read in the previous tile, which every thread has left.
      if (t1 < t_end)
        store_stage<Policy::kThreads>(states_s[buf ^ 1], st, stage);
      buf ^= 1;
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
      u_r[i] = u_n[i];
      dt_r[i] = dt_n[i];
      z_r[i] = z_n[i];
    }
  }

  if (!active)
    return;
  if (kPass1) {
    const Index row = (static_cast<Index>(chunk) * a.batch + b) * a.D + d;
    if (lane_in_channel == 0)
      a.chunk_dt[row] = sum_dt;
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (n0 + i < a.N)
        a.chunk_state[row * a.N + n0 + i] = h[i];
  } else if (a.h_final != nullptr && t_end == a.L) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (n0 + i < a.N)
        a.h_final[b * a.h_final_s[0] + d * a.h_final_s[1] + (n0 + i) * a.h_final_s[2]] = h[i];
  }
}

template <class V, std::size_t R>
void copy_strides(const V& v, Index (&s)[R]) {
  for (std::size_t i = 0; i < R; ++i)
    s[i] = v.absent() ? 0 : v.stride(static_cast<int>(i));
}

/// The kernel arguments of a validated `p` (chunking fields left for the launcher).
template <class T>
ScanArgs<T> make_scan_args(const SelectiveScanParams<T, float>& p) {
  ScanArgs<T> args{};
  args.u = p.u.data();
  args.delta = p.delta.data();
  args.z = p.z.absent() ? nullptr : p.z.data();
  args.out = p.out.data();
  copy_strides(p.u, args.u_s);
  copy_strides(p.delta, args.delta_s);
  copy_strides(p.z, args.z_s);
  copy_strides(p.out, args.out_s);
  args.B = p.B.data();
  args.C = p.C.data();
  copy_strides(p.B, args.B_s);
  copy_strides(p.C, args.C_s);
  args.A = p.A.data();
  copy_strides(p.A, args.A_s);
  args.D_skip = p.D_skip.absent() ? nullptr : p.D_skip.data();
  args.D_skip_s = p.D_skip.absent() ? 0 : p.D_skip.stride(0);
  args.delta_bias = p.delta_bias.absent() ? nullptr : p.delta_bias.data();
  args.delta_bias_s = p.delta_bias.absent() ? 0 : p.delta_bias.stride(0);
  args.h0 = p.h0.absent() ? nullptr : p.h0.data();
  copy_strides(p.h0, args.h0_s);
  args.h_final = p.h_final.absent() ? nullptr : p.h_final.data();
  copy_strides(p.h_final, args.h_final_s);
  args.batch = static_cast<int>(p.batch());
  args.L = static_cast<int>(p.length());
  args.D = static_cast<int>(p.channels());
  args.N = static_cast<int>(p.state_size());
  args.channels_per_group = static_cast<int>(p.channels() / p.groups());
  args.lanes_per_channel = 1;
  args.softplus = p.delta_softplus;
  return args;
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

/// True when a (batch, time, channel) view can be read as 16-byte vectors along time.
template <class T, class V>
bool channel_major_vectorisable(const V& v) {
  if (v.absent())
    return true;
  constexpr Index kVec = 16 / sizeof(T);
  return v.stride(1) == 1 && aligned16(v.data()) && v.stride(0) % kVec == 0 &&
         v.stride(2) % kVec == 0;
}

/// True when a tile of the B and C rows any block touches fits the shared-memory staging.
template <class Policy>
bool states_fit_staging(Index D, Index N, Index G, int lanes_per_channel) {
  const Index channels_per_block = Policy::kThreads / lanes_per_channel;
  const Index channels_per_group = D / G;
  const Index groups = std::min<Index>(G, (channels_per_block - 1) / channels_per_group + 2);
  const Index padded_n = (N + 3) / 4 * 4;
  return 2 * Policy::kTile * groups * padded_n <= Policy::kThreads * kStagePerThread;
}

/// The launch plan: lanes per channel, chunks and their length.
template <class Policy>
struct ScanPlan {
  int lanes_per_channel = 1;
  int chunks = 1;
  int chunk_len = 0;
  dim3 grid;

  ScanPlan(Index batch, Index L, Index D, Index N, int sm_count) {
    while (lanes_per_channel * Policy::kStatesPerThread < N)
      lanes_per_channel *= 2;
    const Index channels_per_block = Policy::kThreads / lanes_per_channel;
    const Index blocks = (D + channels_per_block - 1) / channels_per_block * batch;
    const Index warps_wanted = static_cast<Index>(sm_count) * 4 * Policy::kWarpsPerScheduler;
    const Index warps = blocks * (Policy::kThreads / 32);
    Index chunks = std::max<Index>(1, warps_wanted / std::max<Index>(warps, 1));
    chunks = std::min<Index>(chunks, std::max<Index>(1, L / Policy::kMinChunk));
    chunks = std::min<Index>(chunks, 65535);
    const Index len = (L + chunks - 1) / chunks;
    chunk_len = static_cast<int>(
        std::max<Index>(Policy::kTile, (len + Policy::kTile - 1) / Policy::kTile * Policy::kTile));
    this->chunks = static_cast<int>(std::max<Index>(1, (L + chunk_len - 1) / chunk_len));
    grid = dim3(static_cast<unsigned>((D + channels_per_block - 1) / channels_per_block),
                static_cast<unsigned>(batch), static_cast<unsigned>(this->chunks));
  }
};

template <class Policy, ScanLayout kLayout, class T>
void launch_scan(const ScanArgs<T>& args, const ScanPlan<Policy>& plan, cudaStream_t stream) {
  if (plan.chunks > 1) {
    dim3 grid1 = plan.grid;
    grid1.z = plan.chunks - 1;
    selective_scan_kernel<Policy, kLayout, true><<<grid1, Policy::kThreads, 0, stream>>>(args);
    SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel (pass 1)");
  }
  selective_scan_kernel<Policy, kLayout, false><<<plan.grid, Policy::kThreads, 0, stream>>>(args);
  SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel");
}

}  // namespace detail

/// Bytes of device workspace selective_scan needs for `p` (0 when the sequence is not chunked).
template <class Policy = SelectiveScanPolicy, class T, class W>
std::size_t selective_scan_workspace_size(const SelectiveScanParams<T, W>& p) {
  const detail::ScanPlan<Policy> plan(p.batch(), p.length(), p.channels(), p.state_size(),
                                      multiprocessor_count());
  const std::size_t rows = static_cast<std::size_t>(plan.chunks - 1) *
                           static_cast<std::size_t>(p.batch()) *
                           static_cast<std::size_t>(p.channels());
  return rows * (static_cast<std::size_t>(p.state_size()) + 1) * sizeof(float);
}

/// The selective scan of `p` (views on Device::CUDA; storage float, __half or __nv_bfloat16 with
/// float A, D, δ_bias and states), ordered on `stream`. `workspace` holds at least
/// selective_scan_workspace_size(p) bytes of device memory. h0 and h_final may alias.
/// Throws ssmkit::Error on invalid arguments or a failed launch.
template <class Policy = SelectiveScanPolicy, class T, class W>
void selective_scan(const SelectiveScanParams<T, W>& p, cudaStream_t stream, void* workspace,
                    std::size_t workspace_bytes) {
  static_assert(std::is_same_v<W, float>,
                "the CUDA scan keeps A, D, delta_bias and states in float");
  static_assert(
      std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
      "the CUDA scan stores float, __half or __nv_bfloat16");
  static_assert(Policy::kThreads % 32 == 0 && Policy::kStatesPerThread % 8 == 0,
                "policy: whole warps, states in 16-byte vectors");
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  SSMKIT_CHECK(batch <= 65535, "u", "batch size", "<= 65535 on CUDA", batch);
  SSMKIT_CHECK(L <= (Index{1} << 31) - 1 - Policy::kTile, "u", "length", "< 2^31 on CUDA", L);
  SSMKIT_CHECK(D <= (Index{1} << 31) - 1, "u", "channels", "< 2^31 on CUDA", D);
  if (batch == 0 || D == 0)
    return;
  const std::size_t need = selective_scan_workspace_size<Policy>(p);
  SSMKIT_CHECK(need == 0 || (workspace != nullptr && workspace_bytes >= need), "workspace", "bytes",
               ">= " + std::to_string(need), workspace_bytes);

  const detail::ScanPlan<Policy> plan(batch, L, D, N, multiprocessor_count());
  detail::ScanArgs<T> args = detail::make_scan_args(p);
  args.chunk_dt = static_cast<float*>(workspace);
  args.chunk_state =
      need == 0 ? nullptr : args.chunk_dt + static_cast<Index>(plan.chunks - 1) * batch * D;
  args.chunk_len = plan.chunk_len;
  args.lanes_per_channel = plan.lanes_per_channel;

  const bool states_vec =
      detail::states_fit_staging<Policy>(D, N, p.groups(), plan.lanes_per_channel);
  const bool token_major = p.u.stride(2) == 1 && p.delta.stride(2) == 1 &&
                           (p.z.absent() || p.z.stride(2) == 1) && p.out.stride(2) == 1;
  const bool channel_major = detail::channel_major_vectorisable<T>(p.u) &&
                             detail::channel_major_vectorisable<T>(p.delta) &&
                             detail::channel_major_vectorisable<T>(p.z) &&
                             detail::channel_major_vectorisable<T>(p.out);
  using detail::ScanLayout;
  if (states_vec && channel_major && !token_major)
    detail::launch_scan<Policy, ScanLayout::kChannelMajor>(args, plan, stream);
  else if (states_vec && token_major)
    detail::launch_scan<Policy, ScanLayout::kTokenMajor>(args, plan, stream);
  else
    detail::launch_scan<Policy, ScanLayout::kGeneric>(args, plan, stream);
}

/// As above, with the workspace (if any) taken from and returned to the stream-ordered pool.
template <class Policy = SelectiveScanPolicy, class T, class W>
void selective_scan(const SelectiveScanParams<T, W>& p, cudaStream_t stream) {
  validate(p, Device::CUDA);
  const std::size_t bytes = selective_scan_workspace_size<Policy>(p);
  void* ws = nullptr;
  if (bytes > 0)
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&ws, bytes, stream));
  try {
    selective_scan<Policy>(p, stream, ws, bytes);
  } catch (...) {
    if (ws != nullptr)
      cudaFreeAsync(ws, stream);
    throw;
  }
  if (ws != nullptr)
    SSMKIT_CUDA_CHECK(cudaFreeAsync(ws, stream));
}

}  // namespace ssmkit::cuda
