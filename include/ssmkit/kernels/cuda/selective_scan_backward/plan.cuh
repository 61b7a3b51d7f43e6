// The CUDA scan backward's launch plan (lanes per channel, chunks, channel slices, serial walk
// or not) and the kernel arguments of validated parameters laid out per that plan.
#pragma once

#include "ssmkit/kernels/cuda/selective_scan_backward/args.cuh"
#include "ssmkit/kernels/selective_scan_backward_params.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace ssmkit::cuda::detail {

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
  set_scan_inputs(p, a);
  set_view(p.dout, a.dout, a.dout_s);
  set_view(p.checkpoints, a.checkpoints, a.checkpoints_s);
  set_view(p.dh_final, a.dh_final, a.dh_final_s);
  set_view(p.du, a.du, a.du_s);
  set_view(p.ddelta, a.ddelta, a.ddelta_s);
  set_view(p.dz, a.dz, a.dz_s);
  set_view(p.dB, a.dB, a.dB_s);
  set_view(p.dC, a.dC, a.dC_s);
  set_view(p.dA, a.dA, a.dA_s);
  set_view(p.dD_skip, a.dD_skip, a.dD_skip_s);
  set_view(p.ddelta_bias, a.ddelta_bias, a.ddelta_bias_s);
  set_view(p.dh0, a.dh0, a.dh0_s);

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
  a.entry_vec = N % 4 == 0 && states_vec(a.entry, a.entry_s);
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
/// of channels each to fill `sm_count` SMs, but no more than a grid's 65535 rows (the chunked
/// plan's wider slices were checked against that); `a` follows the plan's new slices.
template <class Policy, class T>
void choose_serial(ScanBackwardPlan<Policy>& plan, ScanBackwardArgs<T>& a, int sm_count) {
  constexpr int kUsualLanes = 16 / Policy::kStatesPerThread;
  const Index per_group = a.channels_per_group;
  const Index round = std::min<Index>(per_group, Policy::kThreads / plan.lanes_per_channel);
  const Index slices = (per_group + round - 1) / std::max<Index>(round, 1);
  const Index blocks = static_cast<Index>(a.batch) * a.G * slices;
  plan.serial = plan.from_checkpoints && plan.chunks > 0 && a.entry_every > 1 && a.entry_vec &&
                plan.lanes_per_channel == kUsualLanes && a.same_layout && round > 0 &&
                blocks >= static_cast<Index>(Policy::kSerialBlocksPerSM) * sm_count &&
                a.G * slices <= 65535;
  if (!plan.serial)
    return;
  plan.channels_per_slice = a.channels_per_slice = static_cast<int>(round);
  plan.slices_per_group = a.slices_per_group = static_cast<int>(slices);
}

}  // namespace ssmkit::cuda::detail
