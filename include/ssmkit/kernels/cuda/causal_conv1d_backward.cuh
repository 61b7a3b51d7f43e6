// Gradients of the depthwise causal conv1d on the GPU, the math of cpu::causal_conv1d_backward
// (same argument struct): dp = dout·silu'(p) (or dout), dx̃[s] = Σ_k w[k]·dp[s-k],
// dw[k] = Σ_t dp[t]·x̃[t+k], dbias = Σ_t dp[t], summed over the batch.
//
// Pass 1: a block per (batch, 64 steps, 32 channels) stages its inputs and dp in shared memory,
// writes dx (and dinitial_state) and its tile's partial dw, dbias into the workspace. Pass 2 sums
// the partials per (channel, tap) in a fixed order, so dweight and dbias are the same on every
// run (no atomics).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cpu/causal_conv1d_backward.hpp"
#include "ssmkit/kernels/cuda/causal_conv1d.cuh"  // detail::ConvInputs, set_conv_inputs
#include "ssmkit/kernels/cuda/kernel_args.cuh"

#include <cuda_runtime.h>

#include <string>
#include <type_traits>

namespace ssmkit::cuda {

namespace detail {

constexpr int kConvBwdChannels = 32;  ///< channels per block (a warp's row of loads)
constexpr int kConvBwdRows = 4;       ///< warps per block, each taking every 4th step
constexpr int kConvBwdSteps = 64;     ///< steps per block
constexpr int kConvBwdMaxK = 16;      ///< longest kernel the shared tiles are sized for

template <class T>
struct ConvBwdArgs : ConvInputs<T, float> {
  const T* dout;
  Index dout_s[3];
  T* dx;
  Index dx_s[3];
  T* dinit;  // null without initial_state
  Index dinit_s[3];
  float* dweight;
  Index dw_s[2];
  float* dbias;  // null without bias
  Index dbias_s;
  float* partial;  // (batch·time tiles, C, K+1): per-tile dw[0..K-1], dbias
  int batch, L, C, K, time_tiles, channel_tiles;
  bool silu;
};

/// Pass 1. Shared rows: xs holds x̃ of times t0-(K-1) … t0+64+K-2 (zero past L or before an
/// absent initial state), dp the gradient at the pre-activation of times t0 … t0+64+K-2 (zero
/// past L), ws the taps, red each warp's partial dw and dbias; all 32 channels wide.
template <class T>
__global__ void __launch_bounds__(kConvBwdChannels* kConvBwdRows)
    causal_conv1d_backward_kernel(const ConvBwdArgs<T> a) {
  constexpr int kW = kConvBwdChannels;
  extern __shared__ float smem[];
  const int K = a.K;
  const int x_rows = kConvBwdSteps + 2 * (K - 1), dp_rows = kConvBwdSteps + K - 1;
  float* xs = smem;
  float* dp = xs + x_rows * kW;
  float* ws = dp + dp_rows * kW;
  float* red = ws + K * kW;  // (K+1, warps, channels)

  const int lane = static_cast<int>(threadIdx.x) % kW;
  const int row = static_cast<int>(threadIdx.x) / kW;
  const int ct = static_cast<int>(blockIdx.x % a.channel_tiles);
  const int tt = static_cast<int>(blockIdx.x / a.channel_tiles % a.time_tiles);
  const Index b = blockIdx.x / a.channel_tiles / a.time_tiles;
  const int c = ct * kW + lane;
  const bool active = c < a.C;
  const int t0 = tt * kConvBwdSteps;
  const int t1 = min(t0 + kConvBwdSteps, a.L);

  // This thread's channel of batch b; time offsets are added per row.
  const T* x = a.x + b * a.x_s[0] + c * a.x_s[2];
  const T* dout = a.dout + b * a.dout_s[0] + c * a.dout_s[2];
  for (int k = row; k < K; k += kConvBwdRows)
    ws[k * kW + lane] = active ? a.weight[c * a.w_s[0] + k * a.w_s[1]] : 0.f;
  for (int r = row; r < x_rows; r += kConvBwdRows) {
    const int tau = t0 - (K - 1) + r;
    float v = 0.f;
    if (active && tau < a.L) {
      if (tau >= 0)
        v = x[tau * a.x_s[1]];
      else if (a.init != nullptr)
        v = a.init[b * a.init_s[0] + c * a.init_s[1] + (tau + K - 1) * a.init_s[2]];
    }
    xs[r * kW + lane] = v;
  }
  __syncthreads();

  const float bias = active && a.bias != nullptr ? a.bias[c * a.bias_s] : 0.f;
  for (int r = row; r < dp_rows; r += kConvBwdRows) {
    const int s = t0 + r;
    float g = 0.f;
    if (active && s < a.L) {
      g = dout[s * a.dout_s[1]];
      if (a.silu) {
        float pre = bias;
        for (int k = 0; k < K; ++k)
          pre = fmaf(ws[k * kW + lane], xs[(r + k) * kW + lane], pre);
        const float sg = 1.f / (1.f + expf(-pre));
        g *= sg * (1.f + pre * (1.f - sg));
      }
    }
    dp[r * kW + lane] = g;
  }
  __syncthreads();

  if (active) {
    // dx̃ at time τ gathers dp[τ+(K-1)-k]; this tile's times, and the initial state's in tile 0.
    T* dx = a.dx + b * a.dx_s[0] + c * a.dx_s[2];
    const int first = tt == 0 && a.dinit != nullptr ? -(K - 1) : 0;
    for (int tau = t0 + first + row; tau < t1; tau += kConvBwdRows) {
      float sum = 0.f;
      for (int k = 0; k < K; ++k) {
        const int r = tau + (K - 1) - k - t0;
        if (r >= 0)
          sum = fmaf(ws[k * kW + lane], dp[r * kW + lane], sum);
      }
      if (tau >= 0)
        dx[tau * a.dx_s[1]] = sum;
      else
        a.dinit[b * a.dinit_s[0] + c * a.dinit_s[1] + (tau + K - 1) * a.dinit_s[2]] = sum;
    }
  }

  // Partial dw[k] (k < K) and dbias (k = K) over this tile's steps: each warp sums its steps,
  // then the first K+1 warps' lanes add the warps' sums in order.
  for (int k = 0; k <= K; ++k) {
    float sum = 0.f;
    for (int r = row; r < t1 - t0; r += kConvBwdRows)
      sum = fmaf(dp[r * kW + lane], k < K ? xs[(r + k) * kW + lane] : 1.f, sum);
    red[(k * kConvBwdRows + row) * kW + lane] = sum;
  }
  __syncthreads();
  float* out = a.partial + (b * a.time_tiles + tt) * a.C * (K + 1);
  for (int i = static_cast<int>(threadIdx.x); i < (K + 1) * kW;
       i += kConvBwdChannels * kConvBwdRows) {
    const int k = i % (K + 1), ch = i / (K + 1);  // consecutive threads, consecutive outputs
    if (ct * kW + ch < a.C) {
      float total = red[k * kConvBwdRows * kW + ch];
      for (int w = 1; w < kConvBwdRows; ++w)
        total += red[(k * kConvBwdRows + w) * kW + ch];
      out[static_cast<Index>(ct * kW + ch) * (K + 1) + k] = total;
    }
  }
}

/// Pass 2: 32 outputs (channel, tap or bias) per block; warp j adds the partials of tiles j,
/// j+8, … in order, then the warps' sums are added in warp order.
template <class T>
__global__ void __launch_bounds__(256)
    causal_conv1d_backward_reduce_kernel(const ConvBwdArgs<T> a) {
  constexpr int kWarps = 8;
  __shared__ float sums[kWarps][32];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int K = a.K;
  const Index per_tile = static_cast<Index>(a.C) * (K + 1);
  const Index i = static_cast<Index>(blockIdx.x) * 32 + lane;
  const Index tiles = static_cast<Index>(a.batch) * a.time_tiles;
  float sum = 0.f;
  if (i < per_tile)
    for (Index t = warp; t < tiles; t += kWarps)
      sum += a.partial[t * per_tile + i];
  sums[warp][lane] = sum;
  __syncthreads();
  if (warp != 0 || i >= per_tile)
    return;
  float total = sums[0][lane];
  for (int j = 1; j < kWarps; ++j)
    total += sums[j][lane];
  const Index c = i / (K + 1);
  const int k = static_cast<int>(i % (K + 1));
  if (k < K)
    a.dweight[c * a.dw_s[0] + k * a.dw_s[1]] = total;
  else if (a.dbias != nullptr)
    a.dbias[c * a.dbias_s] = total;
}

inline int conv_bwd_time_tiles(Index L) {
  return static_cast<int>(L == 0 ? 1 : (L + kConvBwdSteps - 1) / kConvBwdSteps);
}

inline std::size_t conv_bwd_shared_bytes(int K) {
  const int rows =
      (kConvBwdSteps + 2 * (K - 1)) + (kConvBwdSteps + K - 1) + K + (K + 1) * kConvBwdRows;
  return static_cast<std::size_t>(rows) * kConvBwdChannels * sizeof(float);
}

}  // namespace detail

/// Bytes of device workspace causal_conv1d_backward needs for `p`: the per-tile partial sums
/// (batch · ⌈L/64⌉ · C · (K+1) floats).
template <class T, class W>
std::size_t causal_conv1d_backward_workspace_size(const CausalConv1dBackwardParams<T, W>& p) {
  return static_cast<std::size_t>(p.batch()) *
         static_cast<std::size_t>(detail::conv_bwd_time_tiles(p.length())) *
         static_cast<std::size_t>(p.channels()) * static_cast<std::size_t>(p.kernel_size() + 1) *
         sizeof(float);
}

/// Writes every gradient of `p` (views on Device::CUDA, float, any strides; dweight and dbias
/// overwritten, summed over batch and time in a fixed order), ordered on `stream`. `workspace`
/// holds at least causal_conv1d_backward_workspace_size(p) bytes of device memory. dx must not
/// overlap the inputs. Throws ssmkit::Error on invalid arguments or a failed launch.
template <class T, class W>
void causal_conv1d_backward(const CausalConv1dBackwardParams<T, W>& p, cudaStream_t stream,
                            void* workspace, std::size_t workspace_bytes) {
  static_assert(std::is_same_v<T, float> && std::is_same_v<W, float>,
                "the CUDA conv backward stores float");
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), C = p.channels(), K = p.kernel_size();
  SSMKIT_CHECK(K <= detail::kConvBwdMaxK, "weight", "kernel size K = size(1)",
               "<= " + std::to_string(detail::kConvBwdMaxK) + " on CUDA", K);
  SSMKIT_CHECK(L <= 2147483647 - 2 * detail::kConvBwdSteps, "x", "length",
               "<= " + std::to_string(2147483647 - 2 * detail::kConvBwdSteps) + " on CUDA", L);
  SSMKIT_CHECK(C <= 2147483647, "x", "channels", "< 2^31 on CUDA", C);
  const std::size_t need = causal_conv1d_backward_workspace_size(p);
  detail::check_workspace(workspace, workspace_bytes, need);
  if (C == 0)
    return;
  detail::ConvBwdArgs<T> a{};
  detail::set_conv_inputs(a, p);
  detail::set_view(p.dout, a.dout, a.dout_s);
  detail::set_view(p.dx, a.dx, a.dx_s);
  detail::set_view(p.dinitial_state, a.dinit, a.dinit_s);
  detail::set_view(p.dweight, a.dweight, a.dw_s);
  detail::set_view(p.dbias, a.dbias, a.dbias_s);
  a.partial = static_cast<float*>(workspace);
  a.batch = static_cast<int>(batch);
  a.L = static_cast<int>(L);
  a.C = static_cast<int>(C);
  a.K = static_cast<int>(K);
  a.time_tiles = detail::conv_bwd_time_tiles(L);
  a.channel_tiles = static_cast<int>((C + detail::kConvBwdChannels - 1) / detail::kConvBwdChannels);
  a.silu = p.silu;
  if (batch > 0) {
    const Index blocks = batch * a.time_tiles * a.channel_tiles;
    SSMKIT_CHECK(blocks <= 2147483647, "x", "batch·time·channel tiles", "< 2^31 on CUDA", blocks);
    const std::size_t shared = detail::conv_bwd_shared_bytes(a.K);  // < 48 KB for K <= 16
    detail::causal_conv1d_backward_kernel<T>
        <<<static_cast<unsigned>(blocks), detail::kConvBwdChannels * detail::kConvBwdRows, shared,
           stream>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("causal_conv1d_backward_kernel");
  }
  const Index outputs = C * (K + 1);
  detail::causal_conv1d_backward_reduce_kernel<T>
      <<<static_cast<unsigned>((outputs + 31) / 32), 256, 0, stream>>>(a);
  SSMKIT_CUDA_CHECK_LAUNCH("causal_conv1d_backward_reduce_kernel");
}

/// As above, with the workspace taken from and returned to the stream-ordered pool.
template <class T, class W>
void causal_conv1d_backward(const CausalConv1dBackwardParams<T, W>& p, cudaStream_t stream) {
  validate(p, Device::CUDA);
  with_pool_workspace(
      causal_conv1d_backward_workspace_size(p), stream,
      [&](void* ws, std::size_t bytes) { causal_conv1d_backward(p, stream, ws, bytes); });
}

}  // namespace ssmkit::cuda
