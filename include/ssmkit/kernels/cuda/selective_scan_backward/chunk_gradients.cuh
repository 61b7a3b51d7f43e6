// Pass 3 of the CUDA scan backward: each chunk recomputes its states from its entry state and runs
// the adjoint g_t = q_t + C_t·dy_t, q_{t-1} = Ā_t·g_t back through them, giving every gradient.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/shared_layout.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/staged_rows.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/step_inputs.cuh"

namespace ssmkit::cuda::detail {

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

}  // namespace ssmkit::cuda::detail
