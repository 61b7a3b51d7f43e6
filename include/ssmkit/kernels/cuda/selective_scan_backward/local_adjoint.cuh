// Pass 1 of the CUDA scan backward: each chunk from a zero adjoint, its ΣΔ and local adjoint
// Σ_t (Π_{s<=t} Ā_s)·C_t·dy_t (and, without checkpoints, its local final state).
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/shared_layout.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/staged_rows.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/step_inputs.cuh"

namespace ssmkit::cuda::detail {

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

}  // namespace ssmkit::cuda::detail
