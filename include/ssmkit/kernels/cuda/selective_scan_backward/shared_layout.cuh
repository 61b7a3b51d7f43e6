// How passes 1 and 3 of the CUDA scan backward lay out their shared memory: the strides of the
// step records and lane shares, and the floats each pass asks for.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"

namespace ssmkit::cuda::detail {

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

}  // namespace ssmkit::cuda::detail
