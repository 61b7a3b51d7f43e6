// A bandwidth-bound matrix product for a few tokens (decoding): out[t,n] = Σ_k x[t,k]·W[n,k]
// (+ bias[n]) (+ out[t,n]), W streamed once with 16-byte loads, float accumulation. Each row of
// W belongs to `split` warps of one block, which cut its length and sum in shared memory.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace ssmkit::cuda {

/// Most tokens one gemv() call takes: each keeps a float accumulator per thread.
inline constexpr Index kGemvMaxTokens = 8;

/// out (tokens, N) = x (tokens, K) · weight (N, K)ᵀ + bias (N), plus out's old values when
/// `accumulate` (a residual add). Views on Device::CUDA; weight rows contiguous (stride 1).
template <class W>
struct GemvParams {
  TensorView<const float, 2> x;
  TensorView<const W, 2> weight;
  TensorView<const float, 1> bias;  ///< optional
  TensorView<float, 2> out;         ///< must not overlap x
  bool accumulate = false;
};

namespace detail {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 4;  // 16-byte loads a lane keeps in flight

template <class W>
struct GemvArgs {
  const float* x;
  Index ldx;
  const W* w;
  Index ldw;
  const float* bias;
  float* out;
  Index ldo;
  int tokens, N, K, split;
  bool accumulate;
};

/// Eight bf16 or four floats of a 16-byte word, widened.
__device__ __forceinline__ void widen(const uint4& q, float (&f)[4]) {
  f[0] = __uint_as_float(q.x), f[1] = __uint_as_float(q.y);
  f[2] = __uint_as_float(q.z), f[3] = __uint_as_float(q.w);
}
__device__ __forceinline__ void widen(const uint4& q, float (&f)[8]) {
  const std::uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(words[i] << 16);
    f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

template <class W, bool kXVec>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvArgs<W> a) {
  constexpr int V = 16 / sizeof(W);  // weights per 16-byte load
  __shared__ float partial[kGemvWarps][kGemvMaxTokens];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int rows_per_block = kGemvWarps / a.split;
  const int n = static_cast<int>(blockIdx.x) * rows_per_block + warp / a.split;
  const int part = warp % a.split;
  float acc[kGemvMaxTokens] = {};
  if (n < a.N) {
    const W* w_row = a.w + static_cast<Index>(n) * a.ldw;
    const int Kv = a.K / V * V;
    const int stride = 32 * V * a.split;
    for (int base = (part * 32 + lane) * V; base < Kv; base += stride * kGemvUnroll) {
      uint4 q[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int k = base + u * stride;
        q[u] = k < Kv ? __ldcs(reinterpret_cast<const uint4*>(w_row + k)) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int k = base + u * stride;
        if (k >= Kv)
          break;
        float wf[V];
        widen(q[u], wf);
#pragma unroll
        for (int t = 0; t < kGemvMaxTokens; ++t) {
          if (t >= a.tokens)
            break;
          const float* xp = a.x + t * a.ldx + k;
#pragma unroll
          for (int j = 0; j < V; j += 4) {
            float xv[4];
            if (kXVec) {
              const float4 v = __ldg(reinterpret_cast<const float4*>(xp + j));
              xv[0] = v.x, xv[1] = v.y, xv[2] = v.z, xv[3] = v.w;
            } else {
#pragma unroll
              for (int i = 0; i < 4; ++i)
                xv[i] = __ldg(xp + j + i);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
              acc[t] = fmaf(wf[j + i], xv[i], acc[t]);
          }
        }
      }
    }
    // The K % V tail (rows are 16-byte aligned, so only the last few columns).
    for (int k = Kv + part * 32 + lane; k < a.K; k += 32 * a.split)
      for (int t = 0; t < a.tokens; ++t)
        acc[t] = fmaf(to_float(w_row[k]), __ldg(a.x + t * a.ldx + k), acc[t]);
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t) {
    if (t >= a.tokens)
      break;
    for (int off = 16; off > 0; off /= 2)
      acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], off);
  }
  if (a.split > 1) {
    if (lane == 0)
      for (int t = 0; t < a.tokens; ++t)
        partial[warp][t] = acc[t];
    __syncthreads();
    if (part != 0)
      return;
    for (int t = 0; t < a.tokens; ++t) {
      float s = 0.f;
      for (int p = 0; p < a.split; ++p)
        s += partial[warp + p][t];
      acc[t] = s;
    }
  }
  // Lane t writes token t's output.
  if (n >= a.N || lane >= a.tokens)
    return;
  float v = 0.f;
#pragma unroll
  for (int t = 0; t < kGemvMaxTokens; ++t)
    if (t == lane)
      v = acc[t];
  if (a.bias != nullptr)
    v += a.bias[n];
  float* o = a.out + static_cast<Index>(lane) * a.ldo + n;
  *o = a.accumulate ? *o + v : v;
}

}  // namespace detail

/// Launches the product on `stream`. W is float or __nv_bfloat16; the weight's rows must start on
/// 16-byte boundaries (nn/cuda's uploads pad them). Throws ssmkit::Error on invalid arguments.
template <class W>
void gemv(const GemvParams<W>& p, cudaStream_t stream) {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, __nv_bfloat16>,
                "gemv weights are float or __nv_bfloat16");
  check_device(p.x, "x", Device::CUDA);
  check_device(p.weight, "weight", Device::CUDA);
  check_device(p.out, "out", Device::CUDA);
  const Index tokens = p.x.size(0), K = p.x.size(1), N = p.weight.size(0);
  SSMKIT_CHECK(tokens <= kGemvMaxTokens, "x", "tokens = size(0)",
               "<= " + std::to_string(kGemvMaxTokens), tokens);
  check_shape(p.weight, "weight", {N, K});
  check_shape(p.out, "out", {tokens, N});
  if (!p.bias.absent()) {
    check_device(p.bias, "bias", Device::CUDA);
    check_shape(p.bias, "bias", {N});
    SSMKIT_CHECK(p.bias.stride(0) == 1, "bias", "stride", "1", p.bias.stride(0));
  }
  SSMKIT_CHECK(p.x.stride(1) == 1, "x", "feature stride", "1", p.x.stride(1));
  SSMKIT_CHECK(p.out.stride(1) == 1, "out", "feature stride", "1", p.out.stride(1));
  SSMKIT_CHECK(p.weight.stride(1) == 1, "weight", "column stride", "1", p.weight.stride(1));
  const auto aligned = [](const void* q) { return reinterpret_cast<std::uintptr_t>(q) % 16 == 0; };
  SSMKIT_CHECK(aligned(p.weight.data()) && (p.weight.stride(0) * sizeof(W)) % 16 == 0, "weight",
               "row alignment", "16-byte aligned rows", "unaligned");
  SSMKIT_CHECK(K <= 2147483647 && N <= 2147483647, "weight", "shape", "< 2^31 rows and columns",
               "larger");
  if (tokens == 0 || N == 0)
    return;
  detail::GemvArgs<W> a{};
  a.x = p.x.data();
  a.ldx = p.x.stride(0);
  a.w = p.weight.data();
  a.ldw = p.weight.stride(0);
  a.bias = p.bias.absent() ? nullptr : p.bias.data();
  a.out = p.out.data();
  a.ldo = p.out.stride(0);
  a.tokens = static_cast<int>(tokens);
  a.N = static_cast<int>(N);
  a.K = static_cast<int>(K);
  a.accumulate = p.accumulate;
  // Split rows across warps until about 32 warps per SM stream W (few rows, long ones).
  const Index want_warps = Index{32} * multiprocessor_count();
  a.split = 1;
  while (a.split < detail::kGemvWarps && N * a.split < want_warps &&
         K >= Index{2} * a.split * 32 * (16 / static_cast<Index>(sizeof(W))))
    a.split *= 2;
  const Index rows_per_block = detail::kGemvWarps / a.split;
  const auto blocks = static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block);
  const bool x_vec = aligned(p.x.data()) && p.x.stride(0) % 4 == 0;
  if (x_vec)
    detail::gemv_kernel<W, true><<<blocks, detail::kGemvThreads, 0, stream>>>(a);
  else
    detail::gemv_kernel<W, false><<<blocks, detail::kGemvThreads, 0, stream>>>(a);
  SSMKIT_CUDA_CHECK_LAUNCH("gemv_kernel");
}

}  // namespace ssmkit::cuda
