// The launches of the CUDA scan backward's passes, one function each (the benchmark times them
// separately), with the kernel build each layout and lane count takes.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dynamic_smem.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/adjoint_join.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/chunk_gradients.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/gradient_rounding.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/local_adjoint.cuh"
#include "ssmkit/kernels/cuda/selective_scan_backward/plan.cuh"

#include <cuda_runtime.h>
#include <cstddef>
#include <type_traits>

namespace ssmkit::cuda::detail {

constexpr int kFlatThreads = 256;

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
    allow_dynamic_smem(kernel, smem, "selective_scan_backward (pass 1)");
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
    allow_dynamic_smem(kernel, smem, "selective_scan_backward (pass 3)");
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

}  // namespace ssmkit::cuda::detail
