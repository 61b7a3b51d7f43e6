// The depthwise causal convolution of a MambaBlock on the GPU, with optional SiLU, for a whole
// sequence and for one decoding token: out[b,t,c] = bias[c] + Σ_k w[c,k]·x[b, t-(K-1)+k, c].
// Same math and argument structs as cpu::causal_conv1d and cpu::causal_conv1d_update.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/kernels/causal_conv1d_params.hpp"
#include "ssmkit/kernels/cuda/kernel_args.cuh"

#include <cuda_runtime.h>

namespace ssmkit::cuda {

namespace detail {

constexpr int kConvThreads = 128;

/// The operands the convolution and its backward (causal_conv1d_backward.cuh) both read.
template <class T, class W>
struct ConvInputs {
  const T* x;
  Index x_s[3];  // (batch, time, channel)
  const W* weight;
  Index w_s[2];
  const W* bias;
  Index bias_s;
  const T* init;  // (batch, channel, K-1) or null
  Index init_s[3];
};

template <class T, class W>
struct ConvArgs : ConvInputs<T, W> {
  T* out;
  Index out_s[3];
  T* state;  // final state (sequence) or the state updated in place (step)
  Index state_s[3];
  int batch, L, C, K;
  bool silu;
};

__device__ __forceinline__ float conv_silu(float v) {
  return __fdividef(v, 1.f + __expf(-v));
}

/// Input of time `tau` (negative: from the initial state, or zero without one).
template <class T, class W>
__device__ __forceinline__ float conv_input(const ConvArgs<T, W>& a, Index b, Index c, int tau) {
  if (tau >= 0)
    return to_float(a.x[b * a.x_s[0] + tau * a.x_s[1] + c * a.x_s[2]]);
  if (a.init == nullptr)
    return 0.f;
  return to_float(a.init[b * a.init_s[0] + c * a.init_s[1] + (tau + a.K - 1) * a.init_s[2]]);
}

/// A thread per output element; consecutive threads take consecutive channels (coalesced in
/// the token-major layout) and neighbouring time steps share their inputs through the caches.
template <class T, class W>
__global__ void __launch_bounds__(kConvThreads) causal_conv1d_kernel(const ConvArgs<T, W> a) {
  const Index channel_blocks = (a.C + kConvThreads - 1) / kConvThreads;
  const Index block = blockIdx.x;
  const Index c = block % channel_blocks * kConvThreads + threadIdx.x;
  if (c >= a.C)
    return;
  const int t = static_cast<int>(block / channel_blocks % a.L);
  const Index b = block / channel_blocks / a.L;
  float acc = a.bias != nullptr ? to_float(a.bias[c * a.bias_s]) : 0.f;
  for (int k = 0; k < a.K; ++k)
    acc = fmaf(to_float(a.weight[c * a.w_s[0] + k * a.w_s[1]]),
               conv_input(a, b, c, t - (a.K - 1) + k), acc);
  if (a.silu)
    acc = conv_silu(acc);
  a.out[b * a.out_s[0] + t * a.out_s[1] + c * a.out_s[2]] = from_float<T>(acc);
}

/// The K-1 last inputs per (batch, channel), oldest first. Increasing j reads slot L+j before
/// any write reaches it, so the final state may be the initial state's memory.
template <class T, class W>
__global__ void __launch_bounds__(kConvThreads)
    causal_conv1d_final_state_kernel(const ConvArgs<T, W> a) {
  const Index row = static_cast<Index>(blockIdx.x) * kConvThreads + threadIdx.x;
  if (row >= static_cast<Index>(a.batch) * a.C)
    return;
  const Index b = row / a.C, c = row % a.C;
  for (int j = 0; j < a.K - 1; ++j) {
    const float v = conv_input(a, b, c, a.L - (a.K - 1) + j);
    a.state[b * a.state_s[0] + c * a.state_s[1] + j * a.state_s[2]] = from_float<T>(v);
  }
}

/// One token per (batch, channel): output from the state and the token, then the state slides.
template <class T, class W>
__global__ void __launch_bounds__(kConvThreads)
    causal_conv1d_update_kernel(const ConvArgs<T, W> a) {
  const Index row = static_cast<Index>(blockIdx.x) * kConvThreads + threadIdx.x;
  if (row >= static_cast<Index>(a.batch) * a.C)
    return;
  const Index b = row / a.C, c = row % a.C;
  const T x_new = a.x[b * a.x_s[0] + c * a.x_s[2]];  // read before out, which may alias x
  T* state = a.state + b * a.state_s[0] + c * a.state_s[1];
  float acc = a.bias != nullptr ? to_float(a.bias[c * a.bias_s]) : 0.f;
  for (int k = 0; k < a.K - 1; ++k) {
    const T s = state[k * a.state_s[2]];
    acc = fmaf(to_float(a.weight[c * a.w_s[0] + k * a.w_s[1]]), to_float(s), acc);
    if (k > 0)
      state[(k - 1) * a.state_s[2]] = s;
  }
  acc = fmaf(to_float(a.weight[c * a.w_s[0] + (a.K - 1) * a.w_s[1]]), to_float(x_new), acc);
  if (a.K > 1)
    state[(a.K - 2) * a.state_s[2]] = x_new;
  if (a.silu)
    acc = conv_silu(acc);
  a.out[b * a.out_s[0] + c * a.out_s[2]] = from_float<T>(acc);
}

/// Throws unless the batch size and channels fit the kernels' 32-bit fields and a block per
/// kConvThreads (batch, channel) rows fits a grid.
inline void check_conv_extents(Index batch, Index C) {
  SSMKIT_CHECK(batch <= 2147483647, "x", "batch size", "< 2^31 on CUDA", batch);
  SSMKIT_CHECK(C <= 2147483647, "x", "channels", "< 2^31 on CUDA", C);
  const Index row_blocks = (batch * C + kConvThreads - 1) / kConvThreads;
  SSMKIT_CHECK(row_blocks <= 2147483647, "x", "batch·channel blocks", "< 2^31 on CUDA", row_blocks);
}

/// The sequence's inputs of `p` (CausalConv1dParams or CausalConv1dBackwardParams): x, the taps,
/// the bias and initial state (null and zero strides when absent).
template <class T, class W, class P>
void set_conv_inputs(ConvInputs<T, W>& a, const P& p) {
  set_view(p.x, a.x, a.x_s);
  set_view(p.weight, a.weight, a.w_s);
  set_view(p.bias, a.bias, a.bias_s);
  set_view(p.initial_state, a.init, a.init_s);
}

}  // namespace detail

/// The causal convolution of a whole sequence, ordered on `stream` (views on Device::CUDA;
/// T float, __half or __nv_bfloat16, W float or T). final_state may be initial_state.
/// Throws ssmkit::Error on invalid arguments or a failed launch.
template <class T, class W>
void causal_conv1d(const CausalConv1dParams<T, W>& p, cudaStream_t stream) {
  validate(p, Device::CUDA);
  const Index batch = p.batch(), L = p.length(), C = p.channels();
  SSMKIT_CHECK(L <= 2147483647, "x", "length", "< 2^31 on CUDA", L);
  detail::check_conv_extents(batch, C);
  detail::ConvArgs<T, W> a{};
  detail::set_conv_inputs(a, p);
  detail::set_view(p.out, a.out, a.out_s);
  detail::set_view(p.final_state, a.state, a.state_s);
  a.batch = static_cast<int>(batch);
  a.L = static_cast<int>(L);
  a.C = static_cast<int>(C);
  a.K = static_cast<int>(p.kernel_size());
  a.silu = p.silu;
  if (batch == 0 || C == 0)
    return;
  if (L > 0) {
    const Index blocks = (C + detail::kConvThreads - 1) / detail::kConvThreads * L * batch;
    SSMKIT_CHECK(blocks <= 2147483647, "x", "batch·length·channel blocks", "< 2^31 on CUDA",
                 blocks);
    detail::
        causal_conv1d_kernel<<<static_cast<unsigned>(blocks), detail::kConvThreads, 0, stream>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("causal_conv1d_kernel");
  }
  if (a.state != nullptr && a.K > 1) {
    const auto blocks =
        static_cast<unsigned>((batch * C + detail::kConvThreads - 1) / detail::kConvThreads);
    detail::causal_conv1d_final_state_kernel<<<blocks, detail::kConvThreads, 0, stream>>>(a);
    SSMKIT_CUDA_CHECK_LAUNCH("causal_conv1d_final_state_kernel");
  }
}

/// One decoding token: out from the state and x, then the state slides by x, ordered on
/// `stream`. out may be x. Throws ssmkit::Error on invalid arguments or a failed launch.
template <class T, class W>
void causal_conv1d_update(const CausalConv1dStepParams<T, W>& p, cudaStream_t stream) {
  validate(p, Device::CUDA);
  detail::check_conv_extents(p.batch(), p.channels());
  const Index rows = p.batch() * p.channels();
  if (rows == 0)
    return;
  detail::ConvArgs<T, W> a{};
  a.x = p.x.data();
  a.x_s[0] = p.x.stride(0);
  a.x_s[2] = p.x.stride(1);
  detail::set_view(p.weight, a.weight, a.w_s);
  detail::set_view(p.bias, a.bias, a.bias_s);
  a.out = p.out.data();
  a.out_s[0] = p.out.stride(0);
  a.out_s[2] = p.out.stride(1);
  detail::set_view(p.state, a.state, a.state_s);
  a.batch = static_cast<int>(p.batch());
  a.C = static_cast<int>(p.channels());
  a.K = static_cast<int>(p.kernel_size());
  a.silu = p.silu;
  const auto blocks =
      static_cast<unsigned>((rows + detail::kConvThreads - 1) / detail::kConvThreads);
  detail::causal_conv1d_update_kernel<<<blocks, detail::kConvThreads, 0, stream>>>(a);
  SSMKIT_CUDA_CHECK_LAUNCH("causal_conv1d_update_kernel");
}

}  // namespace ssmkit::cuda
