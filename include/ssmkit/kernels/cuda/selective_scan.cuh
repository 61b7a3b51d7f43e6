// The S6 selective scan forward on the GPU (Mamba, arXiv 2312.00752, Algorithm 2), the expanded
// (B·L·D·N) state never leaving registers. Same math and argument struct as cpu::selective_scan.
//
// K lanes (2 for N <= 16) share one channel: each keeps S of its K·S >= N states in registers,
// and the per-step work outside the states (softplus, Δ·u, D skip, gate, loads and stores) is
// split between them rather than repeated (see LaneSplit). The block stages each tile's B and C
// rows in shared memory as float, a tile ahead. When batch·channels cannot fill the GPU, the
// sequence is cut into chunks: pass 1 computes each chunk's local final state (from zero) and ΣΔ;
// pass 2 starts every chunk from h0 carried through its predecessors,
// h ← exp(A·ΣΔ)·h + h_local, and scans again.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/cuda/kernel_args.cuh"
#include "ssmkit/kernels/cuda/scan_math.cuh"
#include "ssmkit/kernels/cuda/step_loads.cuh"
#include "ssmkit/kernels/selective_scan_params.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

namespace ssmkit::cuda {

/// Tuning knobs of selective_scan (pass another struct with the same members to try others;
/// only kThreads changes which kernels are built).
struct SelectiveScanPolicy {
  static constexpr int kThreads = 128;  ///< threads per block
  /// Sequences are not cut into chunks when batch·D gives at least this many warps per SM
  /// sub-partition (4 per SM): at 1.45 one pass beat chunks on the H100, at 0.97 chunks won.
  static constexpr double kUnchunkedWarpsPerScheduler = 1.25;
  /// Otherwise L is cut into chunks until about this many warps per sub-partition exist (more
  /// than fit at once: the surplus evens out the blocks' finishing times). H100, D=5120 L=16384
  /// and D=1536 L=131072: 12 beat 2 by 21-23 %, 8 and 16 by 1-3 %.
  static constexpr int kWarpsPerScheduler = 12;
  /// Shortest chunk worth a second pass. H100, one sequence (fp32 ms at 512 / 256 / 128 / 64):
  /// D=1536 L=2048 0.146 / 0.096 / 0.070 / 0.083, D=1536 L=4096 0.173 / 0.118 / 0.131 / 0.172,
  /// D=5120 L=2048 0.196 / 0.189 / 0.210 / 0.200; shorter chunks lose to the carry each chunk
  /// walks through its predecessors.
  static constexpr int kMinChunk = 256;
};

namespace detail {

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
  float* checkpoints;  // (count, batch, D, N) or null: the state entering every k-th step
  Index checkpoints_s[4];
  int checkpoint_interval;  // k, clamped to L
  bool checkpoints_vec;     // a channel's states contiguous and 16-byte aligned
  float* chunk_state;       // (chunks-1, batch, D, N): local final state of each chunk but the last
  float* chunk_dt;          // (chunks-1, batch, D): ΣΔ over each of those chunks
  // (batch, D, N): h0 as pass 1 read it, pass 2's entry state. The last chunk writes h_final,
  // which may alias h0, while blocks of the others still read their entry: they read this copy.
  float* h0_copy;
  int batch, L, D, N, channels_per_group, chunk_len;
  int lanes_per_channel;  // selective_state_update's split of a channel's states
  bool softplus;
};

/// How a channel's work is split over lanes: K lanes hold S of its states each (K·S >= N, zero
/// past N) and walk time in tiles of K·P steps, lane j preparing (softplus, Δ·u) and finishing
/// (D skip, gate, store) steps [j·P, j·P + P) of each tile, so that per-step work is not
/// repeated K times: Δ and Δ·u reach the other lanes by shuffles, and the K lanes' partial
/// outputs meet in a reduce-scatter that leaves each lane the sums of its own steps.
template <int K_, int S_, int P_>
struct LaneSplit {
  static constexpr int K = K_, S = S_, P = P_;
  static constexpr int kTile = K_ * P_;     ///< steps per tile
  static constexpr int kPaddedN = K_ * S_;  ///< states per channel, padded with zeros
};

/// Elements of the B and C rows of one tile each thread stages (room for two groups of a block).
template <int kThreads, class Split>
constexpr int stage_per_thread() {
  const int want = 2 * 2 * Split::kTile * Split::kPaddedN / kThreads;
  return want < 1 ? 1 : (want > 8 ? 8 : want);
}

/// Recursive halving over the K lanes of a channel: y[0, K·P) are one lane's partial outputs of
/// a tile; afterwards y[0, P) hold lane j's steps [j·P, j·P + P) summed over all K lanes.
template <int K, int P>
__device__ __forceinline__ void reduce_scatter(float (&y)[K * P], int j) {
#pragma unroll
  for (int o = K / 2; o >= 1; o /= 2) {
    const bool upper = (j & o) != 0;
#pragma unroll
    for (int k = 0; k < o * P; ++k) {
      const float send = upper ? y[k] : y[k + o * P];
      const float keep = upper ? y[k + o * P] : y[k];
      y[k] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
}

/// The scan of one chunk of one (batch, block of channels). kPass1: the chunk's local final
/// state and ΣΔ only. kStaged: the tile's B and C rows go through shared memory as float, loaded
/// a tile ahead by the whole block (else each lane reads its states from global memory).
/// Registers: with staged rows, 4 blocks per SM (128, no spills) for the full scan (H100: the
/// chunked shapes 4-5 % faster than at 3 blocks and 168 registers, and B=8 token-major 3 %, where
/// only 2 blocks per SM exist: the schedule ptxas makes under the cap is the better one); pass 1,
/// which issues an exponential every ~7 instructions and so needs warps more than registers to
/// keep the MUFU fed, at 5 (96, no spills; the chunked shapes 2-5 % faster than at 3, 4 gave
/// less; the full scan spills 72-104 bytes at 5). Without staging, 3 (168; those builds spill at
/// 128).
template <int kThreads, class Split, bool kStaged, bool kPass1, bool kRowsVec, class T>
__global__ void __launch_bounds__(kThreads, kStaged ? (kPass1 ? 5 : 4) : 3)
    selective_scan_kernel(const ScanArgs<T> a) {
  constexpr int K = Split::K, S = Split::S, P = Split::P;
  constexpr int kTile = Split::kTile, kPaddedN = Split::kPaddedN;
  constexpr int kStage = stage_per_thread<kThreads, Split>();
  const int tid = static_cast<int>(threadIdx.x);
  const int j = tid % K;
  const int d_raw = static_cast<int>(blockIdx.x) * (kThreads / K) + tid / K;
  const bool active = d_raw < a.D;
  const int d = active ? d_raw : a.D - 1;  // idle lanes still join the shuffles
  const int b = blockIdx.y, chunk = blockIdx.z;
  const int n0 = j * S;
  const int g = d / a.channels_per_group;
  const int t_begin = chunk * a.chunk_len;
  const int t_end = min(a.L, t_begin + a.chunk_len);

  float a2[S], h[S];  // A·log2(e), so that exp(Δ·A) = 2^(Δ·a2); zero past N
#pragma unroll
  for (int i = 0; i < S; ++i) {
    const int n = n0 + i;
    a2[i] = n < a.N ? a.A[d * a.A_s[0] + n * a.A_s[1]] * kLog2e : 0.f;
    h[i] = 0.f;
  }
  if (kPass1 && chunk == 0 && a.h0_copy != nullptr && active) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (n0 + i < a.N)
        a.h0_copy[(static_cast<Index>(b) * a.D + d) * a.N + n0 + i] =
            a.h0[b * a.h0_s[0] + d * a.h0_s[1] + (n0 + i) * a.h0_s[2]];
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
  const bool has_z = !kPass1 && a.z != nullptr;
  // This lane's steps of the tile at t0 are t0 + j·P + i, i < P.
  const Index first = t_begin + j * P;
  // Time strides as 32-bit values (selective_scan checks they fit): each lane walks a pointer
  // through its steps, one add per step, where 64-bit strides cost three to five instructions
  // per address.
  const int u_t = static_cast<int>(a.u_s[1]), dt_t = static_cast<int>(a.delta_s[1]);
  const int z_t = static_cast<int>(a.z_s[1]), out_t = static_cast<int>(a.out_s[1]);
  const T* u_p = a.u + b * a.u_s[0] + d * a.u_s[2] + first * u_t;
  const T* dt_p = a.delta + b * a.delta_s[0] + d * a.delta_s[2] + first * dt_t;
  const T* z_p = has_z ? a.z + b * a.z_s[0] + d * a.z_s[2] + first * z_t : nullptr;
  T* out_p = a.out + b * a.out_s[0] + d * a.out_s[2] + first * out_t;
  const T* B_row = a.B + b * a.B_s[0] + g * a.B_s[2];
  const T* C_row = a.C + b * a.C_s[0] + g * a.C_s[2];

  // Staging: element e of a tile's rows is [B|C][group - g_lo][step][state < kPaddedN], so that
  // a lane's rows of successive steps are a compile-time distance apart; each thread's elements
  // are the same every tile, so their offsets are worked out once. Thread st stages elements
  // st + s·kThreads: st = tid when B and C are (…, time, state) in memory; when they are
  // (…, state, time), st is permuted so that neighbouring lanes take neighbouring steps of one
  // state row (a warp's load covers 4 sectors instead of 32).
  __shared__ __align__(16) float stage_s[2][kStaged ? kStage * kThreads : 1];
  int groups = 1, gl = 0, count = 0, st = tid;
  const T* stage_src[kStage];  // this thread's elements of the next tile to load
  int stage_step[kStage];
  bool stage_c[kStage], stage_ok[kStage];
  // Held as stored and widened only when written to shared memory: a conversion next to the load
  // would wait for the load there instead of after the tile's scan.
  T stage_v[kStage];
  const T* B_tile = a.B + b * a.B_s[0] + static_cast<Index>(t_begin) * a.B_s[1];
  const T* C_tile = a.C + b * a.C_s[0] + static_cast<Index>(t_begin) * a.C_s[1];
  if constexpr (kStaged) {
    const int cpb = kThreads / K;
    const int d_first = static_cast<int>(blockIdx.x) * cpb;
    const int g_lo = d_first / a.channels_per_group;
    groups = (min(d_first + cpb, a.D) - 1) / a.channels_per_group - g_lo + 1;
    gl = g - g_lo;
    count = 2 * groups * kTile * kPaddedN;
    constexpr int kRow = kTile * kPaddedN;
    if constexpr (kThreads % kRow == 0) {
      if (a.B_s[1] == 1 && a.C_s[1] == 1)
        st = tid % kTile * kPaddedN + tid / kTile % kPaddedN + (tid - tid % kRow);
    }
#pragma unroll
    for (int s = 0; s < kStage; ++s) {
      const int e = st + s * kThreads;
      const int n = e % kPaddedN;
      stage_step[s] = e / kPaddedN % kTile;
      const int r = e / (kPaddedN * kTile);
      stage_c[s] = r >= groups;
      const int gr = g_lo + (stage_c[s] ? r - groups : r);
      stage_ok[s] = e < count && n < a.N && !(kPass1 && stage_c[s]);
      const Index* str = stage_c[s] ? a.C_s : a.B_s;
      stage_src[s] =
          (stage_c[s] ? C_tile : B_tile) + stage_step[s] * str[1] + gr * str[2] + n * str[3];
    }
  }
  // A tile's advance of each element, as 32-bit strides (checked by selective_scan).
  const int B_adv = kTile * static_cast<int>(a.B_s[1]), C_adv = kTile * static_cast<int>(a.C_s[1]);
  // Loads the rows of the tile at t0 into stage_v (issued early, stored after the tile's scan).
  const auto stage_load = [&](int t0) {
#pragma unroll
    for (int s = 0; s < kStage; ++s)
      stage_v[s] =
          stage_ok[s] && t0 + stage_step[s] < t_end ? __ldg(stage_src[s]) : from_float<T>(0.f);
  };
  const auto stage_store = [&](float* buf) {
#pragma unroll
    for (int s = 0; s < kStage; ++s)
      if (st + s * kThreads < count)
        buf[st + s * kThreads] = to_float(stage_v[s]);
  };
  int buf = 0;
  if constexpr (kStaged) {
    if (t_begin < t_end) {
      stage_load(t_begin);
      stage_store(stage_s[0]);
    }
    __syncthreads();
  }

  StepRegs<P, T, kRowsVec> u_r{}, dt_r{}, z_r{};
  if (t_begin < t_end) {
    load_steps<P>(u_p, u_t, static_cast<int>(first), t_end, u_r);
    load_steps<P>(dt_p, dt_t, static_cast<int>(first), t_end, dt_r);
    if (has_z)
      load_steps<P>(z_p, z_t, static_cast<int>(first), t_end, z_r);
  }
  float sum_dt = 0.f;
  // The next step whose entering state is a checkpoint (none in pass 1).
  const int every = a.checkpoint_interval;
  int next_checkpoint =
      !kPass1 && a.checkpoints != nullptr && active ? (t_begin + every - 1) / every * every : a.L;
  // This lane's B and C rows of step 0 in each staging buffer.
  const int B_row0 = gl * kTile * kPaddedN + n0;
  const int C_row0 = (groups + gl) * kTile * kPaddedN + n0;
  for (int t0 = t_begin; t0 < t_end; t0 += kTile) {
    const int mine = t0 + j * P;  // this lane's first step of the tile
    if (t0 == next_checkpoint) {
      float* ck = a.checkpoints + t0 / every * a.checkpoints_s[0] + b * a.checkpoints_s[1] +
                  d * a.checkpoints_s[2];
      if (a.checkpoints_vec && n0 + S <= a.N) {
        static_assert(S % 4 == 0, "a lane's states are stored as 16-byte vectors");
#pragma unroll
        for (int i = 0; i < S; i += 4)
          *reinterpret_cast<float4*>(ck + n0 + i) = make_float4(h[i], h[i + 1], h[i + 2], h[i + 3]);
      } else {
#pragma unroll
        for (int i = 0; i < S; ++i)
          if (n0 + i < a.N)
            ck[(n0 + i) * a.checkpoints_s[3]] = h[i];
      }
      next_checkpoint += every;
    }
    // Prepare this lane's steps; steps past the end get Δ = 0 and u = 0, which leave h as it is.
    float dt_l[P], du_l[P], u_l[P];
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const bool ok = mine + i < t_end;
      float x = dt_r.get(i) + bias;
      x = select_f(a.softplus, softplus_f(x), x);
      dt_l[i] = ok ? x : 0.f;
      u_l[i] = ok ? u_r.get(i) : 0.f;
      du_l[i] = dt_l[i] * u_l[i];
    }
    float z_l[P];
#pragma unroll
    for (int i = 0; i < P; ++i)
      z_l[i] = z_r.get(i);
    // The next tile's loads go out before this tile's arithmetic, which hides their latency.
    const int t1 = t0 + kTile;
    if (t1 < t_end) {
      u_p += kTile * u_t;
      dt_p += kTile * dt_t;
      load_steps<P>(u_p, u_t, mine + kTile, t_end, u_r);
      load_steps<P>(dt_p, dt_t, mine + kTile, t_end, dt_r);
      if (has_z) {
        z_p += kTile * z_t;
        load_steps<P>(z_p, z_t, mine + kTile, t_end, z_r);
      }
      if constexpr (kStaged) {
#pragma unroll
        for (int s = 0; s < kStage; ++s)
          stage_src[s] += stage_c[s] ? C_adv : B_adv;
        stage_load(t1);
      }
    }

    float y[kTile];
    // Every step's Δ and Δ·u are fetched before the states' loop: fetched inside it, the
    // channel-major builds stalled on each shuffle at its first use (H100, B=8: bf16
    // channel-major 2.5 % faster this way, the other rows within ±0.5 %).
    float dts_all[kTile], dus_all[kTile];
#pragma unroll
    for (int s = 0; s < kTile; ++s) {
      dts_all[s] = K == 1 ? dt_l[s % P] : __shfl_sync(0xffffffffu, dt_l[s % P], s / P, K);
      dus_all[s] = K == 1 ? du_l[s % P] : __shfl_sync(0xffffffffu, du_l[s % P], s / P, K);
    }
#pragma unroll
    for (int s = 0; s < kTile; ++s) {
      const float dts = dts_all[s], dus = dus_all[s];
      float Bv[S], Cv[S];
      if constexpr (kStaged) {
        read_states<S>(&stage_s[buf][B_row0 + s * kPaddedN], Bv);
        if (!kPass1)
          read_states<S>(&stage_s[buf][C_row0 + s * kPaddedN], Cv);
      } else {
        const bool ok = t0 + s < t_end;
        const Index t = ok ? t0 + s : t_begin;
        load_states<S>(B_row + t * a.B_s[1], a.B_s[3], n0, a.N, Bv);
        if (!kPass1)
          load_states<S>(C_row + t * a.C_s[1], a.C_s[3], n0, a.N, Cv);
      }
      float acc = 0.f;
#pragma unroll
      for (int n = 0; n < S; ++n) {
        h[n] = fmaf(ex2_mufu(dts * a2[n]), h[n], dus * Bv[n]);
        if (!kPass1)
          acc = fmaf(Cv[n], h[n], acc);
      }
      y[s] = acc;
      sum_dt += dts;
    }

    if (!kPass1) {
      reduce_scatter<K, P>(y, j);
      StepVector<P, T> o;
#pragma unroll
      for (int i = 0; i < P; ++i) {
        float v = fmaf(d_skip, u_l[i], y[i]);
        v = select_f(has_z, v * silu_f(z_l[i]), v);
        o.v[i] = from_float<T>(v);
      }
      if (kRowsVec && active && mine + P <= t_end) {
        *reinterpret_cast<StepVector<P, T>*>(out_p) = o;
      } else {
        T* q = out_p;
#pragma unroll
        for (int i = 0; i < P; ++i, q += out_t)
          if (active && mine + i < t_end)
            *q = o.v[i];
      }
      out_p += kTile * out_t;
    }
    if constexpr (kStaged) {
      // The other buffer was last read in the previous tile, which every thread has left.
      if (t1 < t_end)
        stage_store(stage_s[buf ^ 1]);
      buf ^= 1;
      __syncthreads();
    }
  }

  if (!active)
    return;
  if (kPass1) {
    const Index row = (static_cast<Index>(chunk) * a.batch + b) * a.D + d;
    if (j == 0)
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

/// The kernel arguments of a validated `p` (chunking fields left for the launcher).
template <class T>
ScanArgs<T> make_scan_args(const SelectiveScanParams<T, float>& p) {
  ScanArgs<T> args{};
  set_scan_inputs(p, args);
  set_view(p.out, args.out, args.out_s);
  set_view(p.h_final, args.h_final, args.h_final_s);
  set_view(p.checkpoints, args.checkpoints, args.checkpoints_s);
  args.checkpoint_interval =
      static_cast<int>(std::max<Index>(1, std::min(p.checkpoint_interval, p.length())));
  args.checkpoints_vec =
      args.checkpoints != nullptr && states_vec(args.checkpoints, args.checkpoints_s);
  args.batch = static_cast<int>(p.batch());
  args.L = static_cast<int>(p.length());
  args.D = static_cast<int>(p.channels());
  args.N = static_cast<int>(p.state_size());
  args.channels_per_group = static_cast<int>(p.channels() / p.groups());
  args.lanes_per_channel = 1;
  args.softplus = p.delta_softplus;
  return args;
}

/// The splits the kernel is built for, by state size: two lanes of 8 states for N <= 16 (on an
/// H200, 2 lanes beat 4, 8 and 16 at every target shape (benchmarks/RESULTS.md): the shuffles and
/// the reduce-scatter grow with the lanes), 4 of 16 for N <= 64, 16 of 16 for N <= 256.
using SplitSmall = LaneSplit<2, 8, 4>;
using SplitMid = LaneSplit<4, 16, 2>;
using SplitLarge = LaneSplit<16, 16, 1>;

/// The launch plan: the split, whether B and C are staged, chunks and their length.
template <class Policy>
struct ScanPlan {
  int lanes = 0;
  int tile = 0;
  bool staged = false;
  int chunks = 1;
  int chunk_len = 0;
  dim3 grid;

  ScanPlan(Index batch, Index L, Index D, Index N, Index G, int sm_count) {
    lanes = N <= 16 ? SplitSmall::K : N <= 64 ? SplitMid::K : SplitLarge::K;
    tile = N <= 16 ? SplitSmall::kTile : N <= 64 ? SplitMid::kTile : SplitLarge::kTile;
    const Index cpb = Policy::kThreads / lanes;
    if (N <= 16) {
      // Groups one block of channels can span: their rows must fit the staging.
      const Index groups = std::min<Index>(G, (cpb - 1) / std::max<Index>(D / G, 1) + 2);
      staged = 2 * groups * tile * SplitSmall::kPaddedN <=
               stage_per_thread<Policy::kThreads, SplitSmall>() * Policy::kThreads;
    }
    const Index schedulers = static_cast<Index>(sm_count) * 4;
    const Index warps = (D + cpb - 1) / cpb * batch * (Policy::kThreads / 32);
    Index chunks = 1;
    if (static_cast<double>(warps) < Policy::kUnchunkedWarpsPerScheduler * schedulers)
      chunks =
          std::max<Index>(1, schedulers * Policy::kWarpsPerScheduler / std::max<Index>(warps, 1));
    chunks = std::min<Index>(chunks, std::max<Index>(1, L / Policy::kMinChunk));
    chunks = std::min<Index>(chunks, 65535);
    const Index len = (L + chunks - 1) / chunks;
    chunk_len = static_cast<int>(std::max<Index>(tile, (len + tile - 1) / tile * tile));
    this->chunks = static_cast<int>(std::max<Index>(1, (L + chunk_len - 1) / chunk_len));
    grid = dim3(static_cast<unsigned>((D + cpb - 1) / cpb), static_cast<unsigned>(batch),
                static_cast<unsigned>(this->chunks));
  }
};

template <int kThreads, class Split, bool kStaged, bool kRowsVec = false, class T>
void launch_scan(const ScanArgs<T>& args, dim3 grid, int chunks, cudaStream_t stream) {
  if (chunks > 1) {
    dim3 grid1 = grid;
    grid1.z = chunks - 1;
    selective_scan_kernel<kThreads, Split, kStaged, true, kRowsVec>
        <<<grid1, kThreads, 0, stream>>>(args);
    SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel (pass 1)");
  }
  ScanArgs<T> pass2 = args;
  if (chunks > 1 && args.h0_copy != nullptr) {
    pass2.h0 = args.h0_copy;
    pass2.h0_s[0] = static_cast<Index>(args.D) * args.N;
    pass2.h0_s[1] = args.N;
    pass2.h0_s[2] = 1;
  }
  selective_scan_kernel<kThreads, Split, kStaged, false, kRowsVec>
      <<<grid, kThreads, 0, stream>>>(pass2);
  SSMKIT_CUDA_CHECK_LAUNCH("selective_scan_kernel");
}

/// Whether every (batch, time, channel) operand of `a` moves as P-step vectors: unit time
/// stride, batch and channel strides multiples of P, start aligned to the vector.
template <int P, class T>
bool rows_vectorisable(const ScanArgs<T>& a) {
  const auto ok = [](const void* p, const Index(&s)[3]) {
    return p == nullptr || (s[1] == 1 && s[0] % P == 0 && s[2] % P == 0 &&
                            reinterpret_cast<std::uintptr_t>(p) % (P * sizeof(T)) == 0);
  };
  return ok(a.u, a.u_s) && ok(a.delta, a.delta_s) && ok(a.z, a.z_s) && ok(a.out, a.out_s);
}

/// The usual state sizes (N <= 16, B and C staged) have a second build for channel-major rows that
/// move as vectors; in one build with a run-time switch the token-major scan ran 12-17 % slower.
template <class Policy, class T>
void launch_plan(const ScanArgs<T>& args, const ScanPlan<Policy>& plan, Index N,
                 cudaStream_t stream) {
  constexpr int kT = Policy::kThreads;
  if (N > 64)
    launch_scan<kT, SplitLarge, false>(args, plan.grid, plan.chunks, stream);
  else if (N > 16)
    launch_scan<kT, SplitMid, false>(args, plan.grid, plan.chunks, stream);
  else if (plan.staged && rows_vectorisable<SplitSmall::P>(args))
    launch_scan<kT, SplitSmall, true, true>(args, plan.grid, plan.chunks, stream);
  else if (plan.staged)
    launch_scan<kT, SplitSmall, true>(args, plan.grid, plan.chunks, stream);
  else
    launch_scan<kT, SplitSmall, false>(args, plan.grid, plan.chunks, stream);
}

/// The device's limits on sizes and strides. Checked before validate(): a view past them may
/// span other buffers, which its overlap checks would report instead.
template <class T, class W>
void check_scan_limits(const SelectiveScanParams<T, W>& p) {
  SSMKIT_CHECK(p.batch() <= 65535, "u", "batch size", "<= 65535 on CUDA", p.batch());
  SSMKIT_CHECK(p.length() <= (Index{1} << 31) - 1 - 64, "u", "length", "< 2^31 - 64 on CUDA",
               p.length());
  SSMKIT_CHECK(p.channels() <= (Index{1} << 31) - 1, "u", "channels", "< 2^31 on CUDA",
               p.channels());
  // 32-bit strides, multiplied by at most a 16-step tile.
  constexpr Index kStrideLimit = ((Index{1} << 31) - 1) / 64;
  check_time_stride(p.u, "u", kStrideLimit);
  check_time_stride(p.delta, "delta", kStrideLimit);
  check_time_stride(p.z, "z", kStrideLimit);
  check_time_stride(p.out, "out", kStrideLimit);
  check_time_stride(p.B, "B", kStrideLimit);
  check_time_stride(p.C, "C", kStrideLimit);
}

}  // namespace detail

/// Bytes of device workspace selective_scan needs for `p` on the current device (0 when the
/// sequence is not chunked; how it is chunked follows the device's multiprocessor count).
template <class Policy = SelectiveScanPolicy, class T, class W>
std::size_t selective_scan_workspace_size(const SelectiveScanParams<T, W>& p) {
  const detail::ScanPlan<Policy> plan(p.batch(), p.length(), p.channels(), p.state_size(),
                                      p.groups(), multiprocessor_count());
  if (plan.chunks == 1)
    return 0;
  const std::size_t rows = static_cast<std::size_t>(plan.chunks - 1) *
                           static_cast<std::size_t>(p.batch()) *
                           static_cast<std::size_t>(p.channels());
  const std::size_t h0_rows =
      p.h0.absent() ? 0
                    : static_cast<std::size_t>(p.batch()) * static_cast<std::size_t>(p.channels());
  return (rows * (static_cast<std::size_t>(p.state_size()) + 1) +
          h0_rows * static_cast<std::size_t>(p.state_size())) *
         sizeof(float);
}

/// The selective scan of `p` (views on Device::CUDA; storage float, __half or __nv_bfloat16 with
/// float A, D, δ_bias and states), ordered on `stream`. `workspace` holds at least
/// selective_scan_workspace_size(p) bytes of device memory. h0 and h_final may alias (a
/// chunked scan reads h0 from a copy in the workspace once the last chunk may be writing h_final).
/// Throws ssmkit::Error on invalid arguments or a failed launch.
template <class Policy = SelectiveScanPolicy, class T, class W>
void selective_scan(const SelectiveScanParams<T, W>& p, cudaStream_t stream, void* workspace,
                    std::size_t workspace_bytes) {
  static_assert(std::is_same_v<W, float>,
                "the CUDA scan keeps A, D, delta_bias and states in float");
  static_assert(
      std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
      "the CUDA scan stores float, __half or __nv_bfloat16");
  static_assert(Policy::kThreads % 32 == 0 && Policy::kThreads >= 32,
                "policy: whole warps per block");
  detail::check_scan_limits(p);
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  if (batch == 0 || D == 0)
    return;
  const std::size_t need = selective_scan_workspace_size<Policy>(p);
  detail::check_workspace(workspace, workspace_bytes, need);

  const detail::ScanPlan<Policy> plan(batch, L, D, N, p.groups(), multiprocessor_count());
  // A checkpoint is taken at the start of a tile.
  SSMKIT_CHECK(p.checkpoints.absent() || p.checkpoint_interval >= L ||
                   p.checkpoint_interval % plan.tile == 0,
               "checkpoint_interval", "value",
               "a multiple of " + std::to_string(plan.tile) +
                   " (the scan's tile at N = " + std::to_string(N) + ")",
               p.checkpoint_interval);
  detail::ScanArgs<T> args = detail::make_scan_args(p);
  args.chunk_dt = static_cast<float*>(workspace);
  args.chunk_state =
      need == 0 ? nullptr : args.chunk_dt + static_cast<Index>(plan.chunks - 1) * batch * D;
  args.h0_copy = need == 0 || p.h0.absent()
                     ? nullptr
                     : args.chunk_state + static_cast<Index>(plan.chunks - 1) * batch * D * N;
  args.chunk_len = plan.chunk_len;
  detail::launch_plan(args, plan, N, stream);
}

/// As above, with the workspace (if any) taken from and returned to the stream-ordered pool.
template <class Policy = SelectiveScanPolicy, class T, class W>
void selective_scan(const SelectiveScanParams<T, W>& p, cudaStream_t stream) {
  detail::check_scan_limits(p);
  validate(p, Device::CUDA);
  with_pool_workspace(
      selective_scan_workspace_size<Policy>(p), stream,
      [&](void* ws, std::size_t bytes) { selective_scan<Policy>(p, stream, ws, bytes); });
}

}  // namespace ssmkit::cuda
