// The arguments every pass of the CUDA scan backward reads (ScanBackwardArgs), and where a
// thread sits among the lanes that share a channel's states.
#pragma once

#include "ssmkit/kernels/cuda/kernel_args.cuh"
#include "ssmkit/kernels/cuda/scan_math.cuh"
#include "ssmkit/kernels/cuda/step_loads.cuh"

namespace ssmkit::cuda::detail {

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

/// The lanes of the calling thread's channel, for __syncwarp.
__device__ __forceinline__ unsigned channel_lanes_mask(int lanes_per_channel) {
  if (lanes_per_channel >= 32)
    return 0xffffffffu;
  const int first = (static_cast<int>(threadIdx.x) & 31) & ~(lanes_per_channel - 1);
  return ((1u << lanes_per_channel) - 1u) << first;
}

}  // namespace ssmkit::cuda::detail
