// The S6 selective scan forward on the GPU (Mamba, arXiv 2312.00752, Algorithm 2), the expanded
// (B·L·D·N) state never leaving registers. Same math and argument struct as cpu::selective_scan.
//
// A block owns a group of channels and walks time in tiles of kTile steps, three phases a tile:
//  1. prepare (cooperative): per (step, channel) Δ = softplus(δ + bias) and Δ·u, computed once and
//     staged in shared memory with B and C rows as float; the next tile's loads are issued here.
//     The (step, channel) tasks follow the memory order (channel-fastest for token-major,
//     step-fastest for channel-major), so global accesses coalesce in both layouts.
//  2. scan: each channel's N states are split over K lanes of kStatesPerThread states; a lane
//     runs h = exp(Δ·A)·h + Δu·B, y = C·h over the tile from shared memory and leaves its partial
//     y per step in shared memory (no shuffles, no global accesses, no index math per step).
//  3. finish (cooperative, same tasks as 1): y = Σ partials + D·u, times silu(z), stored.
// When batch·channels cannot fill the GPU, the sequence is cut into chunks: pass 1 computes each
// chunk's local final state (from zero) and ΣΔ; pass 2 starts every chunk from h0 carried through
// its predecessors, h ← exp(A·ΣΔ)·h + h_local, and scans again.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

namespace ssmkit::cuda {

/// Tuning knobs of selective_scan (pass another struct with the same members to try others).
struct SelectiveScanPolicy {
  static constexpr int kThreads = 128;        ///< threads per block
  static constexpr int kStatesPerThread = 4;  ///< states one lane keeps in registers
  /// Lanes per channel at least (more when N > kMinLanes · kStatesPerThread), so that a block
  /// holds at most kThreads / kMinLanes channels.
  static constexpr int kMinLanes = 4;
  static constexpr int kTile = 32;  ///< time steps per tile (a power of two, multiple of 4)
  /// Cut L into chunks until about this many warps run per SM sub-partition (4 per SM): the
  /// 4 blocks of 4 warps an SM holds at kMinBlocksPerSM = 4.
  static constexpr int kWarpsPerScheduler = 4;
  static constexpr int kMinChunk = 512;  ///< shortest chunk worth a second pass
  /// B and C elements of a tile each thread carries from global to shared memory, at most
  /// (larger tiles of B, C rows are read from global memory by each lane instead).
  static constexpr int kStagePerThread = 8;
  /// Blocks per SM the registers are budgeted for (4: 16 warps, at most 128 registers; pass 1,
  /// which spills at 128, one block fewer).
  static constexpr int kMinBlocksPerSM = 4;
};

namespace detail {

/// The arguments of a validated SelectiveScanParams as pointers and strides (the decode step's).
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
  int batch, L, D, N, channels_per_group, lanes_per_channel;
  bool softplus;
};

template <class V, std::size_t R>
void copy_strides(const V& v, Index (&s)[R]) {
  for (std::size_t i = 0; i < R; ++i)
    s[i] = v.absent() ? 0 : v.stride(static_cast<int>(i));
}

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

/// The tiled scan's arguments: per-tile offsets as int, block geometry from ScanPlan.
template <class T>
struct TileScanArgs {
  const T* u;
  const T* delta;
  const T* z;
  T* out;
  // (batch, time, channel) strides; time and channel ones as int (checked to fit per block).
  Index u_b, delta_b, z_b, out_b;
  int u_t, u_c, delta_t, delta_c, z_t, z_c, out_t, out_c;
  const T* B;
  const T* C;
  Index B_b, C_b;
  int B_t, B_g, B_n, C_t, C_g, C_n;  // (time, group, state) strides
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
  int batch, L, D, N, G, channels_per_group, chunk_len;
  // Block geometry (ScanPlan): K lanes per channel, C = kThreads / K channels per block.
  int lanes, log2_lanes, channels, log2_channels;
  int partial_pad;   // partials of lane l, channel c at l·(C + pad) + c: conflict-free both ways
  int partial_row;   // floats per step of the partials
  int stage_groups;  // B/C groups staged per block (a power of two), 0: read from global
  int log2_stage_groups, padded_n, log2_padded_n;
  bool softplus, time_fastest;
};

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2_mufu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// PyTorch's softplus (identity above 20) without branches: max(x, 0) + log1p(e),
/// e = exp(-|x|) in (0, 1], with log1p(e) = 2·atanh(s), s = e / (2 + e) <= 1/3, as its odd
/// series to s^15 (error 3e-8).
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

/// Floats of shared memory the partial outputs of one tile may take (ScanPlan stays within it).
template <class Policy>
constexpr int partial_capacity() {
  return Policy::kTile * (Policy::kThreads + std::max(32, Policy::kThreads / 2) + 1);
}

/// The scan of one chunk of one (batch, block of channels). kPass1: local final state only;
/// kStaged: B and C tiles through shared memory (else each lane reads its states itself).
template <class Policy, bool kPass1, bool kStaged, class T>
__global__ void __launch_bounds__(Policy::kThreads,
                                  kPass1 ? Policy::kMinBlocksPerSM - 1 : Policy::kMinBlocksPerSM)
    selective_scan_kernel(const TileScanArgs<T> a) {
  constexpr int S = Policy::kStatesPerThread, kT = Policy::kTile, kThreads = Policy::kThreads;
  constexpr int kMaxChannels = kThreads / Policy::kMinLanes;
  constexpr int kTasks = kT * kMaxChannels / kThreads;  // (step, channel) pairs per thread
  constexpr int kLog2T = __builtin_ctz(kT);
  constexpr int kStage = kStaged ? Policy::kStagePerThread : 0;
  // Rows of Δ padded by 4: one warp's float4 reads of 8 channels' rows hit distinct banks.
  constexpr int kRow = kT + 4;
  __shared__ __align__(16) float dt_s[kMaxChannels * kRow];
  __shared__ __align__(16) float du_s[kMaxChannels * kRow];
  // u again for the finish, and z read only there: registers held across the scan are what
  // limits occupancy.
  __shared__ float u_s[kPass1 ? 1 : kMaxChannels * kRow];
  __shared__ __align__(16) float bc_s[kStaged ? kThreads * Policy::kStagePerThread : 1];
  __shared__ float part_s[kPass1 ? 1 : partial_capacity<Policy>()];

  const int tid = static_cast<int>(threadIdx.x);
  const int C = a.channels;
  const int d_first = static_cast<int>(blockIdx.x) * C;
  const int b = static_cast<int>(blockIdx.y), chunk = static_cast<int>(blockIdx.z);
  const int t_begin = chunk * a.chunk_len;
  const int t_end = min(a.L, t_begin + a.chunk_len);
  const bool has_z = !kPass1 && a.z != nullptr;
  const int g_lo = d_first / a.channels_per_group;

  // Task j of this thread is (step, channel) number tid + j·kThreads of the tile, in the order
  // of the activations' memory so that neighbouring threads touch neighbouring addresses. As C
  // and kT divide kThreads, that is (t_task + j·dt_task, c_task + j·dc_task): one offset and one
  // increment per tensor, computed once.
  int t_task, c_task, dt_task, dc_task;
  if (a.time_fastest) {
    t_task = tid & (kT - 1), c_task = tid >> kLog2T, dt_task = 0, dc_task = kThreads / kT;
  } else {
    c_task = tid & (C - 1), t_task = tid >> a.log2_channels, dt_task = a.lanes, dc_task = 0;
  }
  const int live_tasks = kT * C;  // tasks with tid + j·kThreads below this exist
  const int u_off = t_task * a.u_t + c_task * a.u_c, u_inc = dt_task * a.u_t + dc_task * a.u_c;
  const int dt_off = t_task * a.delta_t + c_task * a.delta_c,
            dt_inc = dt_task * a.delta_t + dc_task * a.delta_c;
  const int z_off = t_task * a.z_t + c_task * a.z_c, z_inc = dt_task * a.z_t + dc_task * a.z_c;
  const int o_off = t_task * a.out_t + c_task * a.out_c,
            o_inc = dt_task * a.out_t + dc_task * a.out_c;
  // Whether task j of the tile starting at t0 is a real (step, channel).
  const auto task_ok = [&](int j, int t0) {
    return tid + j * kThreads < live_tasks && d_first + c_task + j * dc_task < a.D &&
           t0 + t_task + j * dt_task < t_end;
  };

  // B/C staging: the block's rows of Gs·padded_n elements (a power of two dividing kThreads),
  // so each thread keeps one (group, state) column and walks rows r_base + j·r_inc.
  const int row_elems = a.stage_groups * a.padded_n;
  const int log2_row = a.log2_stage_groups + a.log2_padded_n;
  const int st_in_row = tid & (row_elems - 1);
  const int st_n = st_in_row & (a.padded_n - 1), st_g = st_in_row >> a.log2_padded_n;
  const int st_r = tid >> log2_row, st_inc = kThreads >> log2_row;
  const bool st_col = st_n < a.N && g_lo + st_g < a.G;
  const int B_off = st_g * a.B_g + st_n * a.B_n, C_off = st_g * a.C_g + st_n * a.C_n;

  // Global loads of one tile into registers. Tasks that are not real read the tile's first
  // element instead (always valid) and are masked later: no branches around the loads.
  T dt_n[kTasks], u_n[kTasks];
  float bc_n[kStage > 0 ? kStage : 1];
  const auto load_tile = [&](int t0) {
    const T* u_p =
        a.u + b * a.u_b + static_cast<Index>(d_first) * a.u_c + static_cast<Index>(t0) * a.u_t;
    const T* dt_p = a.delta + b * a.delta_b + static_cast<Index>(d_first) * a.delta_c +
                    static_cast<Index>(t0) * a.delta_t;
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const bool ok = task_ok(j, t0);
      dt_n[j] = __ldg(dt_p + (ok ? dt_off + j * dt_inc : 0));
      u_n[j] = __ldg(u_p + (ok ? u_off + j * u_inc : 0));
    }
    if constexpr (kStaged) {
      const Index row0 = static_cast<Index>(t0);
      const T* B_p = a.B + b * a.B_b + static_cast<Index>(g_lo) * a.B_g + row0 * a.B_t;
      const T* C_p = a.C + b * a.C_b + static_cast<Index>(g_lo) * a.C_g + row0 * a.C_t;
#pragma unroll
      for (int j = 0; j < kStage; ++j) {
        const int r = st_r + j * st_inc;  // rows 0..kT-1 are B's steps, kT..2kT-1 C's
        const bool is_c = r >= kT;
        const int t = r & (kT - 1);
        const bool ok = r < 2 * kT && st_col && t0 + t < t_end;
        const T* src = is_c ? C_p + C_off + t * a.C_t : B_p + B_off + t * a.B_t;
        const float v = to_float(__ldg(ok ? src : B_p));
        bc_n[j] = ok ? v : 0.f;
      }
    }
  };

  // This thread's lane of the scan: channel c_s, states [n0, n0 + S).
  const int c_s = tid >> a.log2_lanes, lane = tid & (a.lanes - 1), n0 = lane * S;
  const int d_s = min(d_first + c_s, a.D - 1);
  const int g_s = d_s / a.channels_per_group;
  float a2[S], h[S];  // A·log2(e), so that exp(Δ·A) = 2^(Δ·a2)
#pragma unroll
  for (int i = 0; i < S; ++i) {
    const int n = n0 + i;
    a2[i] = n < a.N ? a.A[d_s * a.A_s[0] + n * a.A_s[1]] * kLog2e : 0.f;
    h[i] = 0.f;
  }
  const bool owner = d_first + c_s < a.D;
  if (!kPass1 && owner) {
    if (a.h0 != nullptr) {
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (n0 + i < a.N)
          h[i] = a.h0[b * a.h0_s[0] + d_s * a.h0_s[1] + (n0 + i) * a.h0_s[2]];
    }
    for (int c = 0; c < chunk; ++c) {
      const Index row = (static_cast<Index>(c) * a.batch + b) * a.D + d_s;
      const float sum_dt = a.chunk_dt[row];
#pragma unroll
      for (int i = 0; i < S; ++i)
        if (n0 + i < a.N)
          h[i] = ex2_mufu(a2[i] * sum_dt) * h[i] + a.chunk_state[row * a.N + n0 + i];
    }
  }
  const float* dt_row = dt_s + c_s * kRow;
  const float* du_row = du_s + c_s * kRow;
  const int bc_step = a.stage_groups * a.padded_n;
  const float* b_row = bc_s + (g_s - g_lo) * a.padded_n + n0;
  const float* c_row = b_row + kT * bc_step;
  float* part = part_s + lane * (C + a.partial_pad) + c_s;
  const T* B_g = a.B + b * a.B_b + static_cast<Index>(g_s) * a.B_g;
  const T* C_g = a.C + b * a.C_b + static_cast<Index>(g_s) * a.C_g;
  float sum_dt = 0.f;

  if (t_begin < t_end)
    load_tile(t_begin);
  for (int t0 = t_begin; t0 < t_end; t0 += kT) {
    // 1. prepare: Δ and Δ·u once per (step, channel); steps past the end get Δ = 0, which
    // leaves the state unchanged.
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const bool ok = task_ok(j, t0);
      const int t = t_task + j * dt_task, c = c_task + j * dc_task;
      // Per-channel constants re-read through L1 each tile: registers are the scarce resource.
      const int d = min(d_first + c, a.D - 1);
      float dt = to_float(dt_n[j]) +
                 (a.delta_bias != nullptr ? __ldg(a.delta_bias + d * a.delta_bias_s) : 0.f);
      dt = a.softplus ? softplus_f(dt) : dt;
      dt = ok ? dt : 0.f;
      const float u = to_float(u_n[j]);
      if (tid + j * kThreads < live_tasks) {
        dt_s[c * kRow + t] = dt;
        du_s[c * kRow + t] = dt * u;
        if (!kPass1)
          u_s[c * kRow + t] = u;
      }
    }
    if constexpr (kStaged) {
#pragma unroll
      for (int j = 0; j < kStage; ++j)
        if (st_r + j * st_inc < 2 * kT)
          bc_s[tid + j * kThreads] = bc_n[j];
    }
    if (t0 + kT < t_end)
      load_tile(t0 + kT);  // in flight during this tile's scan
    __syncthreads();

    // 2. scan this thread's states over the tile.
    const Index row0 = static_cast<Index>(t0);
    const T* B_t = B_g + row0 * a.B_t;
    const T* C_t = C_g + row0 * a.C_t;
    const int last = t_end - 1 - t0;  // unstaged reads past the end re-read the last step
#pragma unroll
    for (int i4 = 0; i4 < kT; i4 += 4) {
      const float4 dt4 = *reinterpret_cast<const float4*>(dt_row + i4);
      const float4 du4 = *reinterpret_cast<const float4*>(du_row + i4);
      const float dtv[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
      const float duv[4] = {du4.x, du4.y, du4.z, du4.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i = i4 + k;
        float Bv[S], Cv[S];
        if constexpr (kStaged) {
#pragma unroll
          for (int q = 0; q < S; q += 4) {
            const float4 bq = *reinterpret_cast<const float4*>(b_row + i * bc_step + q);
            Bv[q] = bq.x, Bv[q + 1] = bq.y, Bv[q + 2] = bq.z, Bv[q + 3] = bq.w;
            if (!kPass1) {
              const float4 cq = *reinterpret_cast<const float4*>(c_row + i * bc_step + q);
              Cv[q] = cq.x, Cv[q + 1] = cq.y, Cv[q + 2] = cq.z, Cv[q + 3] = cq.w;
            }
          }
        } else {
          const int ti = min(i, last);
#pragma unroll
          for (int q = 0; q < S; ++q) {
            const bool in = n0 + q < a.N;
            Bv[q] = in ? to_float(__ldg(B_t + ti * a.B_t + (n0 + q) * a.B_n)) : 0.f;
            if (!kPass1)
              Cv[q] = in ? to_float(__ldg(C_t + ti * a.C_t + (n0 + q) * a.C_n)) : 0.f;
          }
        }
        float y = 0.f;
#pragma unroll
        for (int q = 0; q < S; ++q) {
          h[q] = fmaf(ex2_mufu(dtv[k] * a2[q]), h[q], duv[k] * Bv[q]);
          if (!kPass1)
            y = fmaf(Cv[q], h[q], y);
        }
        if (kPass1)
          sum_dt += dtv[k];
        else
          part[i * a.partial_row] = y;
      }
    }
    __syncthreads();

    // 3. finish: sum the lanes' partials, skip connection and gate, store.
    if constexpr (!kPass1) {
      T* out_p = a.out + b * a.out_b + static_cast<Index>(d_first) * a.out_c + row0 * a.out_t;
      const T* z_p =
          has_z ? a.z + b * a.z_b + static_cast<Index>(d_first) * a.z_c + row0 * a.z_t : nullptr;
#pragma unroll
      for (int j = 0; j < kTasks; ++j) {
        if (tid + j * kThreads >= live_tasks)
          continue;
        const int t = t_task + j * dt_task, c = c_task + j * dc_task;
        const float* p = part_s + t * a.partial_row + c;
        const int lane_stride = C + a.partial_pad;
        float y = 0.f;
        if (a.lanes == Policy::kMinLanes) {
#pragma unroll
          for (int l = 0; l < Policy::kMinLanes; ++l)
            y += p[l * lane_stride];
        } else {
          for (int l = 0; l < a.lanes; ++l)
            y += p[l * lane_stride];
        }
        const int d = min(d_first + c, a.D - 1);
        if (a.D_skip != nullptr)
          y = fmaf(__ldg(a.D_skip + d * a.D_skip_s), u_s[c * kRow + t], y);
        if (has_z)
          y *= silu_f(to_float(__ldg(z_p + (task_ok(j, t0) ? z_off + j * z_inc : 0))));
        if (task_ok(j, t0))
          out_p[o_off + j * o_inc] = from_float<T>(y);
      }
    }
  }

  if (!owner)
    return;
  if (kPass1) {
    const Index row = (static_cast<Index>(chunk) * a.batch + b) * a.D + d_s;
    if (lane == 0)
      a.chunk_dt[row] = sum_dt;
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (n0 + i < a.N)
        a.chunk_state[row * a.N + n0 + i] = h[i];
  } else if (a.h_final != nullptr && t_end == a.L) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (n0 + i < a.N)
        a.h_final[b * a.h_final_s[0] + d_s * a.h_final_s[1] + (n0 + i) * a.h_final_s[2]] = h[i];
  }
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

inline int log2_exact(int x) {
  int k = 0;
  while ((1 << k) < x)
    ++k;
  return k;
}

/// The launch plan: block geometry, B/C staging and the chunks of the sequence.
template <class Policy>
struct ScanPlan {
  int lanes = Policy::kMinLanes;
  int channels = 0, partial_pad = 0, partial_row = 0, padded_n = 0, stage_groups = 0;
  int chunks = 1, chunk_len = 0;
  dim3 grid;

  ScanPlan(Index batch, Index L, Index D, Index N, Index G, int sm_count) {
    while (lanes * Policy::kStatesPerThread < N)
      lanes *= 2;
    channels = Policy::kThreads / lanes;
    padded_n = lanes * Policy::kStatesPerThread;
    // A warp's lanes write one step's partials at l·(C + pad) + c: with C + pad an odd multiple
    // of the channels a warp holds, its 32 writes land in 32 banks.
    const int warp_channels = std::max(1, 32 / lanes);
    while ((channels + partial_pad) % warp_channels != 0 ||
           (channels + partial_pad) / warp_channels % 2 == 0)
      ++partial_pad;
    partial_row = lanes * (channels + partial_pad) + 1;  // odd: a channel's steps in distinct banks
    const Index per_group = D / G;
    Index spanned = per_group % channels == 0 ? 1 : (channels - 1) / per_group + 2;
    spanned = std::min(spanned, G);
    const int groups_pow2 = 1 << log2_exact(static_cast<int>(spanned));
    if (2 * Policy::kTile * groups_pow2 * padded_n <= Policy::kThreads * Policy::kStagePerThread &&
        groups_pow2 * padded_n <= Policy::kThreads)
      stage_groups = groups_pow2;

    const Index blocks = (D + channels - 1) / channels * batch;
    const Index warps_wanted = static_cast<Index>(sm_count) * 4 * Policy::kWarpsPerScheduler;
    const Index warps = blocks * (Policy::kThreads / 32);
    Index n_chunks = std::max<Index>(1, warps_wanted / std::max<Index>(warps, 1));
    n_chunks = std::min<Index>(n_chunks, std::max<Index>(1, L / Policy::kMinChunk));
    n_chunks = std::min<Index>(n_chunks, 65535);
    const Index len = (L + n_chunks - 1) / n_chunks;
    chunk_len = static_cast<int>(
        std::max<Index>(Policy::kTile, (len + Policy::kTile - 1) / Policy::kTile * Policy::kTile));
    chunks = static_cast<int>(std::max<Index>(1, (L + chunk_len - 1) / chunk_len));
    grid = dim3(static_cast<unsigned>((D + channels - 1) / channels), static_cast<unsigned>(batch),
                static_cast<unsigned>(chunks));
  }
};

/// `s` as int, after checking that offsets within one tile of one block fit in int.
inline int tile_stride(Index s, Index extent, const char* arg) {
  SSMKIT_CHECK(std::abs(s) * extent < (Index{1} << 31), arg, "stride",
               "< 2^31 / (elements a block spans along it) on CUDA", s);
  return static_cast<int>(s);
}

/// The kernel arguments of a validated `p` under `plan`.
template <class Policy, class T>
TileScanArgs<T> make_tile_args(const SelectiveScanParams<T, float>& p,
                               const ScanPlan<Policy>& plan) {
  constexpr Index kT = Policy::kTile;
  const Index C = plan.channels, N = p.state_size(), Gs = std::max(plan.stage_groups, 1);
  TileScanArgs<T> a{};
  a.u = p.u.data();
  a.delta = p.delta.data();
  a.z = p.z.absent() ? nullptr : p.z.data();
  a.out = p.out.data();
  a.u_b = p.u.stride(0);
  a.u_t = tile_stride(p.u.stride(1), kT, "u");
  a.u_c = tile_stride(p.u.stride(2), C, "u");
  a.delta_b = p.delta.stride(0);
  a.delta_t = tile_stride(p.delta.stride(1), kT, "delta");
  a.delta_c = tile_stride(p.delta.stride(2), C, "delta");
  if (a.z != nullptr) {
    a.z_b = p.z.stride(0);
    a.z_t = tile_stride(p.z.stride(1), kT, "z");
    a.z_c = tile_stride(p.z.stride(2), C, "z");
  }
  a.out_b = p.out.stride(0);
  a.out_t = tile_stride(p.out.stride(1), kT, "out");
  a.out_c = tile_stride(p.out.stride(2), C, "out");
  a.B = p.B.data();
  a.C = p.C.data();
  a.B_b = p.B.stride(0);
  a.B_t = tile_stride(p.B.stride(1), kT, "B");
  a.B_g = tile_stride(p.B.stride(2), Gs, "B");
  a.B_n = tile_stride(p.B.stride(3), N, "B");
  a.C_b = p.C.stride(0);
  a.C_t = tile_stride(p.C.stride(1), kT, "C");
  a.C_g = tile_stride(p.C.stride(2), Gs, "C");
  a.C_n = tile_stride(p.C.stride(3), N, "C");
  a.A = p.A.data();
  a.A_s[0] = p.A.stride(0);
  a.A_s[1] = p.A.stride(1);
  a.D_skip = p.D_skip.absent() ? nullptr : p.D_skip.data();
  a.D_skip_s = p.D_skip.absent() ? 0 : p.D_skip.stride(0);
  a.delta_bias = p.delta_bias.absent() ? nullptr : p.delta_bias.data();
  a.delta_bias_s = p.delta_bias.absent() ? 0 : p.delta_bias.stride(0);
  a.h0 = p.h0.absent() ? nullptr : p.h0.data();
  a.h_final = p.h_final.absent() ? nullptr : p.h_final.data();
  for (int i = 0; i < 3; ++i) {
    a.h0_s[i] = p.h0.absent() ? 0 : p.h0.stride(i);
    a.h_final_s[i] = p.h_final.absent() ? 0 : p.h_final.stride(i);
  }
  a.batch = static_cast<int>(p.batch());
  a.L = static_cast<int>(p.length());
  a.D = static_cast<int>(p.channels());
  a.N = static_cast<int>(N);
  a.G = static_cast<int>(p.groups());
  a.channels_per_group = static_cast<int>(p.channels() / p.groups());
  a.chunk_len = plan.chunk_len;
  a.lanes = plan.lanes;
  a.log2_lanes = log2_exact(plan.lanes);
  a.channels = plan.channels;
  a.log2_channels = log2_exact(plan.channels);
  a.partial_pad = plan.partial_pad;
  a.partial_row = plan.partial_row;
  a.stage_groups = std::max(plan.stage_groups, 1);
  a.log2_stage_groups = log2_exact(a.stage_groups);
  a.padded_n = plan.padded_n;
  a.log2_padded_n = log2_exact(plan.padded_n);
  a.softplus = p.delta_softplus;
  // Step-fastest tasks when time is the contiguous axis of u (channel-major), else channel-fastest.
  a.time_fastest = std::abs(p.u.stride(1)) < std::abs(p.u.stride(2));
  return a;
}

template <class Policy, bool kStaged, class T>
void launch_scan(const TileScanArgs<T>& args, const ScanPlan<Policy>& plan, cudaStream_t stream) {
  if (plan.chunks > 1) {
    dim3 grid1 = plan.grid;
    grid1.z = plan.chunks - 1;
    selective_scan_kernel<Policy, true, kStaged><<<grid1, Policy::kThreads, 0, stream>>>(args);
    SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel (pass 1)");
  }
  selective_scan_kernel<Policy, false, kStaged><<<plan.grid, Policy::kThreads, 0, stream>>>(args);
  SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel");
}

}  // namespace detail

/// Bytes of device workspace selective_scan needs for `p` (0 when the sequence is not chunked).
template <class Policy = SelectiveScanPolicy, class T, class W>
std::size_t selective_scan_workspace_size(const SelectiveScanParams<T, W>& p) {
  const detail::ScanPlan<Policy> plan(p.batch(), p.length(), p.channels(), p.state_size(),
                                      p.groups(), multiprocessor_count());
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
  static_assert(Policy::kThreads % 32 == 0 && Policy::kStatesPerThread % 4 == 0 &&
                    Policy::kTile % 4 == 0 && (Policy::kTile & (Policy::kTile - 1)) == 0 &&
                    (Policy::kThreads & (Policy::kThreads - 1)) == 0 &&
                    Policy::kThreads % Policy::kTile == 0 &&
                    Policy::kTile * Policy::kThreads / Policy::kMinLanes % Policy::kThreads == 0,
                "policy: whole warps, states in float4s, a power-of-two tile of whole tasks");
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  SSMKIT_CHECK(batch <= 65535, "u", "batch size", "<= 65535 on CUDA", batch);
  SSMKIT_CHECK(L <= (Index{1} << 31) - 1 - Policy::kTile, "u", "length", "< 2^31 on CUDA", L);
  SSMKIT_CHECK(D <= (Index{1} << 31) - 1, "u", "channels", "< 2^31 on CUDA", D);
  SSMKIT_CHECK(N <= Policy::kThreads * Policy::kStatesPerThread, "A", "state size",
               "<= " + std::to_string(Policy::kThreads * Policy::kStatesPerThread) + " on CUDA", N);
  if (batch == 0 || D == 0)
    return;
  const std::size_t need = selective_scan_workspace_size<Policy>(p);
  SSMKIT_CHECK(need == 0 || (workspace != nullptr && workspace_bytes >= need), "workspace", "bytes",
               ">= " + std::to_string(need), workspace_bytes);

  const detail::ScanPlan<Policy> plan(batch, L, D, N, p.groups(), multiprocessor_count());
  SSMKIT_CHECK(Policy::kTile * plan.partial_row <= detail::partial_capacity<Policy>(), "Policy",
               "partial outputs", "<= shared-memory capacity", plan.partial_row);
  detail::TileScanArgs<T> args = detail::make_tile_args(p, plan);
  args.chunk_dt = static_cast<float*>(workspace);
  args.chunk_state =
      need == 0 ? nullptr : args.chunk_dt + static_cast<Index>(plan.chunks - 1) * batch * D;
  if (plan.stage_groups > 0)
    detail::launch_scan<Policy, true>(args, plan, stream);
  else
    detail::launch_scan<Policy, false>(args, plan, stream);
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
