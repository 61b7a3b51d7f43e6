// A bandwidth-bound matrix product for a few tokens (decoding): out[t,n] = Σ_k x̂[t,k]·W[n,k]
// (+ bias[n]) (+ out[t,n]), W streamed once with 16-byte loads, float accumulation; x̂ is x or,
// fused, RMSNorm(x)·norm_weight (Zhang & Sennrich, arXiv 1910.07467) with the row's scale
// factored out of the sum. A warp streams kGemvRows rows at once (each load of x serves them
// all); rows are cut in length among `split` warps of one block, which add up in shared memory;
// blocks stay resident and walk the rows.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dependent_launch.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/core/tensor_view.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace ssmkit::cuda {

/// Most tokens one gemv() call takes: each keeps a float accumulator per thread.
inline constexpr Index kGemvMaxTokens = 8;

/// An RMSNorm of x's rows applied before a product: weight (K) and eps. Absent weight: none.
struct RowNorm {
  TensorView<const float, 1> weight;
  double eps = 0;
};

/// out (tokens, N) = x̂ (tokens, K) · weight (N, K)ᵀ + bias (N), plus out's old values when
/// `accumulate` (a residual add); x̂ = x, or RMSNorm(x)·norm.weight when norm is given. Views on
/// Device::CUDA; weight rows contiguous (stride 1).
template <class W>
struct GemvParams {
  TensorView<const float, 2> x;
  TensorView<const W, 2> weight;
  TensorView<const float, 1> bias;  ///< optional
  TensorView<float, 2> out;         ///< must not overlap x
  bool accumulate = false;
  RowNorm norm;  ///< optional
};

namespace detail {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvRows = 4;  // rows of W a warp streams together, reusing each load of x
constexpr int kGemvOut = kGemvRows * kGemvMaxTokens;  // a warp's outputs: one per lane
static_assert(kGemvOut == 32, "one output per lane");

template <class W>
struct GemvArgs {
  const float* x;
  Index ldx;
  const W* w;
  Index ldw;
  const float* bias;
  float* out;
  Index ldo;
  const float* norm_w;  // null: no RMSNorm
  float eps;
  int tokens, N, K, split;  // split: warps sharing one row
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

/// kTok: the most tokens (1, or kGemvMaxTokens). One token keeps three blocks resident per
/// multiprocessor (at most 85 registers): more warps, each with two 16-byte loads per row in
/// flight, kept the memory system busier than two blocks with four loads each (H200: in_proj 18.1
/// -> 17.3 us, out_proj 11.3 -> 9.2 us at d_model 2560).
template <class W, bool kXVec, bool kNorm, int kTok>
__global__ void __launch_bounds__(kGemvThreads, kTok == 1 ? 3 : 2)
    gemv_kernel(const GemvArgs<W> a) {
  constexpr int V = 16 / sizeof(W);  // weights per 16-byte load
  constexpr int kUnroll = 2;         // 16-byte loads per row a lane keeps in flight
  // With one token and a fused RMSNorm, the first round of weights is requested before waiting
  // for the producer: it streams while the producer ends and the norm's round trips run (H100,
  // d_model 2560: in_proj 21.6 -> 20.0 us). Not without the norm (out_proj after the inner step:
  // layer step 40.9 -> 41.6 us, its loads crowd the latency-bound kernel before it), nor for
  // kGemvMaxTokens (the held round spills registers).
  constexpr bool kEarly = kTok == 1 && kNorm;
  __shared__ float partial[kGemvWarps][kGemvOut];
  __shared__ float scale[kGemvMaxTokens];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int rows_per_block = kGemvWarps / a.split * kGemvRows;
  const int part = warp % a.split;
  const int Kv = a.K / V * V;
  const int stride = 32 * V * a.split;
  const int first = static_cast<int>(blockIdx.x), base0 = (part * 32 + lane) * V;
  const W* w_row[kGemvRows];
  bool row_ok[kGemvRows];
  const auto set_rows = [&](int n0) {
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      row_ok[r] = n0 + r < a.N;
      w_row[r] = a.w + static_cast<Index>(row_ok[r] ? n0 + r : 0) * a.ldw;
    }
  };
  uint4 q[kUnroll][kGemvRows];
  const auto load_round = [&](int base) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = base + u * stride;
#pragma unroll
      for (int r = 0; r < kGemvRows; ++r)
        q[u][r] = k < Kv && row_ok[r] ? __ldcs(reinterpret_cast<const uint4*>(w_row[r] + k))
                                      : make_uint4(0, 0, 0, 0);
    }
  };
  // Launched as a dependent of the kernel before, which may still be running: the weights are
  // not its output, so the first round of this block's rows is requested before waiting for it.
  set_rows(first * rows_per_block + warp / a.split * kGemvRows);
  if (kEarly)
    load_round(base0);
  wait_for_producer();
  if (kNorm) {
    // Token t's 1 / sqrt(mean(x²) + eps), which multiplies its sums at the end: the whole block
    // reads each row once (one round of loads, not a warp walking it).
    for (int t = 0; t < a.tokens; ++t) {
      const float* xr = a.x + t * a.ldx;
      float ss = 0.f;
      const int K4 = kXVec ? a.K / 4 * 4 : 0;
      for (int k = 4 * static_cast<int>(threadIdx.x); k < K4; k += 4 * kGemvThreads) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(xr + k));
        ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
      }
      for (int k = K4 + static_cast<int>(threadIdx.x); k < a.K; k += kGemvThreads)
        ss = fmaf(xr[k], xr[k], ss);
      for (int off = 16; off > 0; off /= 2)
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
      if (lane == 0)
        partial[warp][t] = ss;
    }
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < a.tokens) {
      float ss = 0.f;
      for (int w = 0; w < kGemvWarps; ++w)
        ss += partial[w][threadIdx.x];
      scale[threadIdx.x] = 1.f / sqrtf(ss / static_cast<float>(a.K) + a.eps);
    }
    __syncthreads();
  }
  for (int group = first; group * rows_per_block < a.N; group += static_cast<int>(gridDim.x)) {
    const int n0 = group * rows_per_block + warp / a.split * kGemvRows;
    if (group != first)
      set_rows(n0);
    // Without the norm (whose kernels hold the early round instead), the bias and the old
    // outputs this lane adds to are loaded now, not after the last round (out_proj + residual:
    // 11.1 -> 11.0 us on the H100, the 130M-shaped model ~1 % more tokens/s).
    float bias_v = 0.f, old_v = 0.f;
    if (!kNorm) {
      const int t = lane % kGemvMaxTokens, n = n0 + lane / kGemvMaxTokens;
      if (part == 0 && t < a.tokens && n < a.N) {
        if (a.bias != nullptr)
          bias_v = a.bias[n];
        if (a.accumulate)
          old_v = a.out[static_cast<Index>(t) * a.ldo + n];
      }
    }
    float acc[kGemvRows][kTok] = {};
    for (int base = base0; base < Kv; base += stride * kUnroll) {
      if (!kEarly || base != base0 || group != first)
        load_round(base);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int k = base + u * stride;
        if (k >= Kv)
          break;
        float wf[kGemvRows][V];
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
          widen(q[u][r], wf[r]);
        float g[V];
#pragma unroll
        for (int j = 0; j < V; j += 4) {
          const float4 v = kNorm ? __ldg(reinterpret_cast<const float4*>(a.norm_w + k + j))
                                 : make_float4(1.f, 1.f, 1.f, 1.f);
          g[j] = v.x, g[j + 1] = v.y, g[j + 2] = v.z, g[j + 3] = v.w;
        }
#pragma unroll
        for (int t = 0; t < kTok; ++t) {
          if (t >= a.tokens)
            break;
          const float* xp = a.x + t * a.ldx + k;
          float xv[V];
#pragma unroll
          for (int j = 0; j < V; j += 4) {
            if (kXVec) {
              const float4 v = __ldg(reinterpret_cast<const float4*>(xp + j));
              xv[j] = v.x, xv[j + 1] = v.y, xv[j + 2] = v.z, xv[j + 3] = v.w;
            } else {
#pragma unroll
              for (int i = 0; i < 4; ++i)
                xv[j + i] = __ldg(xp + j + i);
            }
          }
#pragma unroll
          for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
            for (int j = 0; j < V; ++j)
              acc[r][t] = fmaf(wf[r][j], kNorm ? xv[j] * g[j] : xv[j], acc[r][t]);
        }
      }
    }
    // The K % V tail (rows are 16-byte aligned, so only the last few columns).
    for (int k = Kv + part * 32 + lane; k < a.K; k += 32 * a.split) {
      const float g = kNorm ? a.norm_w[k] : 1.f;
#pragma unroll
      for (int t = 0; t < kTok; ++t) {
        if (t >= a.tokens)
          break;
        const float xk = __ldg(a.x + t * a.ldx + k) * g;
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
          if (row_ok[r])
            acc[r][t] = fmaf(to_float(w_row[r][k]), xk, acc[r][t]);
      }
    }
    // Warp sums; lane r·kGemvMaxTokens + t keeps row r's token t.
    float mine = 0.f;
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
      for (int t = 0; t < kTok; ++t) {
        if (t >= a.tokens)
          break;
        float v = acc[r][t];
        for (int off = 16; off > 0; off /= 2)
          v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == r * kGemvMaxTokens + t)
          mine = v;
      }
    if (a.split > 1) {
      partial[warp][lane] = mine;
      __syncthreads();
      if (part == 0)
        for (int p = 1; p < a.split; ++p)
          mine += partial[warp + p][lane];
      __syncthreads();  // partial is reused by the next group
    }
    const int r = lane / kGemvMaxTokens, t = lane % kGemvMaxTokens, n = n0 + r;
    if (part == 0 && t < a.tokens && n < a.N) {
      float v = kNorm ? mine * scale[t] : mine;
      if (a.bias != nullptr)
        v += kNorm ? a.bias[n] : bias_v;
      float* o = a.out + static_cast<Index>(t) * a.ldo + n;
      *o = a.accumulate ? (kNorm ? *o : old_v) + v : v;
    }
  }
}

/// Resident blocks of one instantiation on the whole current GPU (asked once per device).
template <class W, bool kXVec, bool kNorm, int kTok>
int gemv_resident_blocks() {
  struct Tag;
  return per_device<Tag>([](int) {
    int per_sm = 0;
    SSMKIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, gemv_kernel<W, kXVec, kNorm, kTok>, kGemvThreads, 0));
    return std::max(1, per_sm) * multiprocessor_count();
  });
}

template <class W, bool kXVec, bool kNorm, int kTok>
void launch_kernel(GemvArgs<W> a, cudaStream_t stream) {
  // Rows of one block's warps, cut in length among `split` warps each (while a warp still gets
  // two 16-byte loads per lane of a row): the split that spreads the row groups most evenly over
  // the resident blocks, the smallest of equals.
  const int resident = gemv_resident_blocks<W, kXVec, kNorm, kTok>();
  constexpr int V = 16 / sizeof(W);
  double best = -1;
  Index best_groups = 1;
  for (int split = 1; split <= kGemvWarps; split *= 2) {
    if (split > 1 && a.K < 2 * split * 32 * V)
      break;
    const Index rows_per_block = kGemvWarps / split * kGemvRows;
    const Index groups = (a.N + rows_per_block - 1) / rows_per_block;
    const double waves = static_cast<double>(groups) / resident;
    const double balance = waves / std::ceil(waves);
    if (balance > best + 1e-9) {
      best = balance;
      best_groups = groups;
      a.split = split;
    }
  }
  const auto blocks = static_cast<unsigned>(std::min<Index>(best_groups, resident));
  launch_dependent(gemv_kernel<W, kXVec, kNorm, kTok>, blocks, kGemvThreads, 0, stream, a);
}

template <class W, bool kXVec, bool kNorm>
void launch_gemv(const GemvArgs<W>& a, cudaStream_t stream) {
  if (a.tokens == 1)
    launch_kernel<W, kXVec, kNorm, 1>(a, stream);
  else
    launch_kernel<W, kXVec, kNorm, kGemvMaxTokens>(a, stream);
}

/// The checks of an optional bias (N), which gemv and linear's bias rows read contiguously.
inline void check_bias(TensorView<const float, 1> bias, Index N) {
  if (bias.absent())
    return;
  check_device(bias, "bias", Device::CUDA);
  check_shape(bias, "bias", {N});
  SSMKIT_CHECK(bias.stride(0) == 1 || N <= 1, "bias", "stride", "1", bias.stride(0));
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
  detail::check_bias(p.bias, N);
  const auto aligned = [](const void* q) { return reinterpret_cast<std::uintptr_t>(q) % 16 == 0; };
  const bool norm = !p.norm.weight.absent();
  if (norm) {
    check_device(p.norm.weight, "norm.weight", Device::CUDA);
    check_shape(p.norm.weight, "norm.weight", {K});
    SSMKIT_CHECK(p.norm.weight.stride(0) == 1 && aligned(p.norm.weight.data()), "norm.weight",
                 "layout", "contiguous, 16-byte aligned", "other");
    SSMKIT_CHECK(std::isfinite(p.norm.eps) && p.norm.eps >= 0, "norm.eps", "value",
                 "finite and >= 0", p.norm.eps);
  }
  SSMKIT_CHECK(p.x.stride(1) == 1, "x", "feature stride", "1", p.x.stride(1));
  SSMKIT_CHECK(p.out.stride(1) == 1, "out", "feature stride", "1", p.out.stride(1));
  SSMKIT_CHECK(p.weight.stride(1) == 1, "weight", "column stride", "1", p.weight.stride(1));
  SSMKIT_CHECK(aligned(p.weight.data()) && (p.weight.stride(0) * sizeof(W)) % 16 == 0, "weight",
               "row alignment", "16-byte aligned rows", "unaligned");
  SSMKIT_CHECK(N <= 2147483647, "weight", "rows = size(0)", "< 2^31 on CUDA", N);
  SSMKIT_CHECK(K <= 2147483647, "weight", "columns = size(1)", "< 2^31 on CUDA", K);
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
  a.norm_w = norm ? p.norm.weight.data() : nullptr;
  a.eps = static_cast<float>(p.norm.eps);
  a.tokens = static_cast<int>(tokens);
  a.N = static_cast<int>(N);
  a.K = static_cast<int>(K);
  a.accumulate = p.accumulate;
  const bool x_vec = aligned(p.x.data()) && p.x.stride(0) % 4 == 0;
  if (x_vec && norm)
    detail::launch_gemv<W, true, true>(a, stream);
  else if (x_vec)
    detail::launch_gemv<W, true, false>(a, stream);
  else if (norm)
    detail::launch_gemv<W, false, true>(a, stream);
  else
    detail::launch_gemv<W, false, false>(a, stream);
}

}  // namespace ssmkit::cuda
