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
// The passes are in selective_scan_backward/: local_adjoint (1), adjoint_join (2), chunk_gradients
// (3) and gradient_rounding (4); plan and launch pick and launch their builds.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/launch.cuh"
#include "ssmkit/kernels/selective_scan_backward_params.hpp"

#include <cuda_runtime.h>

#include <cstddef>
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

/// The device's limits on sizes and strides. Checked before validate(): a view past them may
/// span other buffers, which its overlap checks would report instead.
template <class Policy, class T, class W>
void check_backward_limits(const SelectiveScanBackwardParams<T, W>& p) {
  SSMKIT_CHECK(p.state_size() <= kMaxBackwardStateSize, "A", "state size N = size(1)",
               "<= " + std::to_string(kMaxBackwardStateSize) + " on the CUDA backward",
               p.state_size());
  SSMKIT_CHECK(p.batch() <= 65535, "u", "batch size", "<= 65535 on CUDA", p.batch());
  SSMKIT_CHECK(p.length() <= (Index{1} << 31) - 1 - Policy::kChunk, "u", "length", "< 2^31 on CUDA",
               p.length());
  // 32-bit byte strides.
  constexpr Index kStrideLimit = ((Index{1} << 31) - 1) / static_cast<Index>(sizeof(T));
  check_time_stride(p.u, "u", kStrideLimit);
  check_time_stride(p.delta, "delta", kStrideLimit);
  check_time_stride(p.z, "z", kStrideLimit);
  check_time_stride(p.dout, "dout", kStrideLimit);
  check_time_stride(p.du, "du", kStrideLimit);
  check_time_stride(p.ddelta, "ddelta", kStrideLimit);
  check_time_stride(p.dz, "dz", kStrideLimit);
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
  detail::check_backward_limits<Policy>(p);
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index G = p.groups();
  detail::ScanBackwardPlan<Policy> plan(batch, L, D, N, G, !p.checkpoints.absent());
  SSMKIT_CHECK(
      G * plan.slices_per_group <= 65535, "u",
      "blocks of channels, groups x ceil(channels per group / channels per block)",
      "<= 65535 on CUDA (" + std::to_string(plan.channels_per_slice) + " channels per block)",
      G * plan.slices_per_group);
  SSMKIT_CHECK(p.checkpoints.absent() || p.checkpoint_interval == plan.chunk_len ||
                   p.checkpoint_interval == Policy::kSubChunk,
               "checkpoint_interval", "value",
               std::to_string(plan.chunk_len) + " or " + std::to_string(Policy::kSubChunk) +
                   " (the backward's chunk and sub-chunk lengths at N = " + std::to_string(N) + ")",
               p.checkpoint_interval);
  const std::size_t need = plan.workspace_bytes();
  detail::check_workspace(workspace, workspace_bytes, need);
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
  detail::check_backward_limits<Policy>(p);
  validate(p, Device::CUDA);
  with_pool_workspace(
      selective_scan_backward_workspace_size<Policy>(p), stream,
      [&](void* ws, std::size_t bytes) { selective_scan_backward<Policy>(p, stream, ws, bytes); });
}

}  // namespace ssmkit::cuda
