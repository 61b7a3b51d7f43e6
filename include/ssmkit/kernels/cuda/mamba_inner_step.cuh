// The part of a Mamba block's decoding step between in_proj and out_proj (Gu & Dao, arXiv
// 2312.00752, Fig. 3 at one token): u = SiLU(conv1d step(x)), (δ | B | C) = x_proj·u, Δ =
// softplus(dt_proj·δ + δ_bias), h ← exp(Δ·A)·h + Δu·B, y = (C·h + D·u)·SiLU(z) — in two kernels
// instead of five launches, for a few tokens (batch ≤ kGemvMaxTokens). Kernel 1 steps the conv of
// a tile of channels and multiplies its u by that tile's columns of a slice of x_proj's rows (one
// partial sum per tile); kernel 2 adds the partials in a fixed order, then runs dt_proj, the state
// update and the conv window's shift for its channels. Both launch as programmatic dependents of
// the kernel before them.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/dependent_launch.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/dtype.cuh"
#include "ssmkit/core/dynamic_smem.cuh"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/kernels/cuda/gemv.cuh"
#include "ssmkit/kernels/cuda/scan_math.cuh"
#include "ssmkit/kernels/cuda/selective_state_update.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

namespace ssmkit::cuda {

/// A decoding step's inner part for `tokens` sequences (one token each), d_inner channels, conv
/// width K, d_state N, dt_rank R. Every view on Device::CUDA with its last dimension contiguous;
/// x_proj's and dt_proj's rows start on 16-byte boundaries (nn/cuda's uploads pad them).
template <class W>
struct MambaInnerStepParams {
  TensorView<const float, 2> xz;           ///< (tokens, 2·d_inner): in_proj's output, x | z
  TensorView<const float, 2> conv_weight;  ///< (d_inner, K)
  TensorView<const float, 1> conv_bias;    ///< (d_inner) optional
  TensorView<const W, 2> x_proj_weight;    ///< (R + 2N, d_inner)
  TensorView<const W, 2> dt_proj_weight;   ///< (d_inner, R)
  TensorView<const float, 1> dt_bias;      ///< (d_inner) optional
  TensorView<const float, 2> A;            ///< (d_inner, N): −exp(A_log)
  TensorView<const float, 1> D;            ///< (d_inner) optional
  TensorView<float, 3> conv_state;  ///< (tokens, d_inner, K − 1): the K − 1 last inputs, advanced
  TensorView<float, 3> ssm_state;  ///< (tokens, d_inner, N), advanced
  TensorView<float, 2> y;          ///< (tokens, d_inner): out_proj's input; must not overlap xz
};

namespace detail {

constexpr int kInnerTile = 256;      // kernel 1: channels per block, 8 per lane
constexpr int kInnerThreads1 = 256;  // kernel 1: 8 warps share the slice's x_proj rows
constexpr int kInnerRows = 4;        // kernel 1: x_proj rows a warp has in flight
constexpr int kSliceRows = 8;        // kernel 1: x_proj rows per slice are a multiple of this
constexpr int kInnerChannels = 64;   // kernel 2: channels per block, 4 lanes each
constexpr int kInnerThreads2 = 4 * kInnerChannels;
constexpr int kSumLoads = 8;  // kernel 2: partials a thread loads at once

template <class W>
struct InnerStepArgs {
  const float* xz;
  Index ld_xz;
  const float *conv_w, *conv_b;
  Index ld_conv_w;
  const W* x_proj;
  Index ld_x_proj;
  const W* dt_proj;
  Index ld_dt_proj;
  const float *dt_bias, *A, *D;
  Index ld_A;
  float* conv_state;
  Index conv_s[3];
  float* ssm_state;
  Index ssm_s[3];
  float* y;
  Index ld_y;
  float* u;        // workspace: (tokens, d_inner)
  float* partial;  // workspace: (tokens, tiles, wp)
  int tokens, d_inner, K, N, R, width, wp;
  int tiles, slices, slice_rows;  // kernel 1's grid: tiles × slices blocks
  bool ssm_vec;
};

/// Asks for the 128-byte lines of [p, p + bytes) that thread `i` of `n` covers to be brought into
/// this multiprocessor's L1: issued early, they overlap the kernel's other round trips.
__device__ __forceinline__ void prefetch_l1(const void* p, std::size_t bytes, int i, int n) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  for (std::uintptr_t line = a / 128 + static_cast<std::uintptr_t>(i); line * 128 < a + bytes;
       line += static_cast<std::uintptr_t>(n))
    asm volatile("prefetch.global.L1 [%0];" ::"l"(line * 128));
}

/// Eight consecutive weights (of a row, from a column that is a multiple of 8) widened to float.
__device__ __forceinline__ void load8(const float* p, float (&w)[8]) {
  const float4 q0 = *reinterpret_cast<const float4*>(p);
  const float4 q1 = *reinterpret_cast<const float4*>(p + 4);
  w[0] = q0.x, w[1] = q0.y, w[2] = q0.z, w[3] = q0.w;
  w[4] = q1.x, w[5] = q1.y, w[6] = q1.z, w[7] = q1.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&w)[8]) {
  widen(*reinterpret_cast<const uint4*>(p), w);
}

/// Kernel 1: block (tile, slice) steps the conv of kInnerTile channels for every token (u to the
/// workspace from slice 0; the conv state is only read here, kernel 2 advances it) and multiplies
/// u by that tile's columns of the slice's rows j of x_proj: partial[t][tile][j]. The slices put
/// a block on every multiprocessor, each with ~16 kB of x_proj, and the wide tiles keep the
/// partials that every block of kernel 2 adds few (at d_inner 5120: 20 tiles of 256 channels, 6
/// slices of 32 rows; measured on an H100 against 40 tiles of 128 channels in 40 blocks, the
/// inner step took 7.1 against 9.5 µs; 128-channel tiles in slices 8.2 µs, 512-channel 7.5).
/// Launch bounds of 3 blocks: ≤ 85 registers, so a block fits beside two of in_proj's GEMV
/// blocks and asks for its x_proj rows while in_proj streams.
template <class W>
__global__ void __launch_bounds__(kInnerThreads1, 3)
    inner_conv_x_proj_kernel(const InnerStepArgs<W> a) {
  constexpr int kC = kInnerTile / 32;  // channels per lane
  __shared__ __align__(16) float u_s[kGemvMaxTokens][kInnerTile];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int tile = static_cast<int>(blockIdx.x) / a.slices, c0 = tile * kInnerTile;
  const int slice = static_cast<int>(blockIdx.x) % a.slices;
  const int j_begin = slice * a.slice_rows, j_end = min(a.wp, j_begin + a.slice_rows);
  const int tile_c = min(kInnerTile, a.d_inner - c0);
  // Everything but the producer's output is requested before waiting for it: the slice's rows of
  // this tile's columns of x_proj (a warp per row), the conv taps, biases and states.
  for (int j = j_begin + warp; j < min(j_end, a.width); j += kInnerThreads1 / 32)
    prefetch_l1(a.x_proj + j * a.ld_x_proj + c0, sizeof(W) * tile_c, lane, 32);
  prefetch_l1(a.conv_w + c0 * a.ld_conv_w, sizeof(float) * tile_c * a.ld_conv_w, tid,
              kInnerThreads1);
  if (a.conv_b != nullptr)
    prefetch_l1(a.conv_b + c0, sizeof(float) * tile_c, tid, kInnerThreads1);
  for (int t = 0; t < a.tokens; ++t)
    prefetch_l1(a.conv_state + t * a.conv_s[0] + c0 * a.conv_s[1],
                sizeof(float) * tile_c * a.conv_s[1], tid, kInnerThreads1);
  wait_for_producer();

  for (int i = tid; i < a.tokens * kInnerTile; i += kInnerThreads1) {
    const int t = i / kInnerTile, cl = i % kInnerTile, c = c0 + cl;
    float u = 0.f;
    if (cl < tile_c) {
      const float* st = a.conv_state + t * a.conv_s[0] + c * a.conv_s[1];
      const float* w = a.conv_w + c * a.ld_conv_w;
      float acc = a.conv_b != nullptr ? a.conv_b[c] : 0.f;
      for (int k = 0; k < a.K - 1; ++k)
        acc = fmaf(w[k], st[k * a.conv_s[2]], acc);
      u = silu_f(fmaf(w[a.K - 1], a.xz[t * a.ld_xz + c], acc));
      if (slice == 0)
        a.u[t * a.d_inner + c] = u;
    }
    u_s[t][cl] = u;  // zero past the last channel, so the products below need no mask
  }
  __syncthreads();

  // Lane l holds channels kC·l … kC·l + kC − 1 of each row; vector loads unless the tile ends
  // inside them.
  const int cl = kC * lane;
  const bool full = cl + kC <= tile_c;
  constexpr int kWarps = kInnerThreads1 / 32;
  for (int j0 = j_begin + warp * kInnerRows; j0 < j_end; j0 += kWarps * kInnerRows) {
    float w[kInnerRows][kC];
#pragma unroll
    for (int r = 0; r < kInnerRows; ++r) {
      const int j = j0 + r;
      const W* row = a.x_proj + static_cast<Index>(min(j, a.width - 1)) * a.ld_x_proj + c0 + cl;
      if (j < a.width && full) {
        load8(row, w[r]);
      } else {
#pragma unroll
        for (int q = 0; q < kC; ++q)
          w[r][q] = j < a.width && cl + q < tile_c ? to_float(row[q]) : 0.f;
      }
    }
    for (int t = 0; t < a.tokens; ++t) {
      float u[kC];
#pragma unroll
      for (int q = 0; q < kC; q += 4) {
        const float4 v4 = *reinterpret_cast<const float4*>(&u_s[t][cl + q]);
        u[q] = v4.x, u[q + 1] = v4.y, u[q + 2] = v4.z, u[q + 3] = v4.w;
      }
      float v[kInnerRows];
#pragma unroll
      for (int r = 0; r < kInnerRows; ++r) {
        v[r] = w[r][0] * u[0];
#pragma unroll
        for (int q = 1; q < kC; ++q)
          v[r] = fmaf(w[r][q], u[q], v[r]);
      }
      // The rows' warp sums in kInnerRows − 1 + 5 − log2(kInnerRows) shuffles instead of
      // 5·kInnerRows: at each of the first halvings a lane keeps half its rows (by its lane bit)
      // and adds its partner's copy of them, until lane l holds row l / (32 / kInnerRows) over a
      // part of the warp; the last shuffles finish that sum.
      constexpr int kLanesPerRow = 32 / kInnerRows;
#pragma unroll
      for (int h = kInnerRows / 2, off = 16; h > 0; h /= 2, off /= 2) {
        const bool upper = (lane & off) != 0;
#pragma unroll
        for (int r = 0; r < h; ++r) {
          const float send = upper ? v[r] : v[r + h], keep = upper ? v[r + h] : v[r];
          v[r] = keep + __shfl_xor_sync(0xffffffffu, send, off);
        }
      }
#pragma unroll
      for (int off = kLanesPerRow / 2; off > 0; off /= 2)
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], off);
      const int j = j0 + lane / kLanesPerRow;
      if (lane % kLanesPerRow == 0 && j < j_end)
        a.partial[(static_cast<Index>(t) * a.tiles + tile) * a.wp + j] = v[0];
    }
  }
}

/// Kernel 2: x_proj's output (δ | B | C) of every token from the tiles' partials, summed in tile
/// order; then per channel (4 lanes, each a quarter of dt_proj's row and runs of 4 states)
/// Δ, the state update and the gated output; last, the conv window's shift by this token's x.
template <class W>
__global__ void __launch_bounds__(kInnerThreads2)
    inner_state_update_kernel(const InnerStepArgs<W> a) {
  extern __shared__ __align__(16) float inner_smem[];
  float* xs = inner_smem;                      // (tokens, wp): x_proj's output
  float* part = inner_smem + a.tokens * a.wp;  // (chunks, groups) float4 partial sums
  const int tid = static_cast<int>(threadIdx.x);
  const int c = static_cast<int>(blockIdx.x) * kInnerChannels + tid / 4, q = tid % 4;
  const bool active = c < a.d_inner;
  const int cc = active ? c : a.d_inner - 1;  // idle lanes only join the shuffles
  // The channel's dt_proj row, A row, δ_bias, D and states are requested before waiting for the
  // producer, u, z and x right after: they arrive while the partials are summed. (Without the
  // δ_bias, D and conv bias requests, the 130M-shaped model with float weights decoded ~3 %
  // slower on an H100.)
  prefetch_l1(a.dt_proj + static_cast<Index>(cc) * a.ld_dt_proj, sizeof(W) * a.R, q, 4);
  prefetch_l1(a.A + static_cast<Index>(cc) * a.ld_A, sizeof(float) * a.N, q, 4);
  if (q == 0 && a.dt_bias != nullptr)
    prefetch_l1(a.dt_bias + cc, sizeof(float), 0, 1);
  if (q == 1 && a.D != nullptr)
    prefetch_l1(a.D + cc, sizeof(float), 0, 1);
  for (int t = 0; t < a.tokens; ++t) {
    prefetch_l1(a.ssm_state + t * a.ssm_s[0] + cc * a.ssm_s[1], sizeof(float) * a.N, q, 4);
    prefetch_l1(a.conv_state + t * a.conv_s[0] + cc * a.conv_s[1],
                sizeof(float) * (a.K - 1) * a.conv_s[2], q, 4);
  }
  wait_for_producer();
  for (int i = q; i < 3 * a.tokens; i += 4) {
    const int t = i / 3, which = i % 3;
    prefetch_l1(
        which == 0 ? a.u + t * a.d_inner + cc : a.xz + t * a.ld_xz + (which - 1) * a.d_inner + cc,
        sizeof(float), 0, 1);
  }

  // Sum the partials: thread (chunk s, group g) adds partials 8s … 8s+7 of 4 columns, all loads
  // in flight at once; then the chunks are added in order.
  const int groups = a.tokens * a.wp / 4, chunks = (a.tiles + kSumLoads - 1) / kSumLoads;
  for (int i = tid; i < groups * chunks; i += kInnerThreads2) {
    const int g = i % groups, s = i / groups;
    const int t = g / (a.wp / 4), j = g % (a.wp / 4) * 4;
    float4 v[kSumLoads];
#pragma unroll
    for (int k = 0; k < kSumLoads; ++k) {
      const int p = s * kSumLoads + k;
      v[k] = p < a.tiles ? *reinterpret_cast<const float4*>(
                               a.partial + (static_cast<Index>(t) * a.tiles + p) * a.wp + j)
                         : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float4 acc = v[0];
#pragma unroll
    for (int k = 1; k < kSumLoads; ++k)
      acc.x += v[k].x, acc.y += v[k].y, acc.z += v[k].z, acc.w += v[k].w;
    reinterpret_cast<float4*>(part)[i] = acc;
  }
  __syncthreads();
  for (int g = tid; g < groups; g += kInnerThreads2) {
    float4 acc = reinterpret_cast<const float4*>(part)[g];
    for (int s = 1; s < chunks; ++s) {
      const float4 v = reinterpret_cast<const float4*>(part)[s * groups + g];
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    reinterpret_cast<float4*>(xs)[g] = acc;
  }
  __syncthreads();

  // dt_proj: lane q takes 16-byte chunks q, q + 4, … of the row, for every token at once.
  constexpr int V = 16 / sizeof(W);
  float dt[kGemvMaxTokens] = {};
  const W* dt_row = a.dt_proj + static_cast<Index>(cc) * a.ld_dt_proj;
  const int Rv = a.R / V * V;
  for (int r0 = q * V; r0 < Rv; r0 += 4 * V) {
    float w[V];
    widen(*reinterpret_cast<const uint4*>(dt_row + r0), w);
#pragma unroll
    for (int t = 0; t < kGemvMaxTokens; ++t) {
      if (t >= a.tokens)
        break;
#pragma unroll
      for (int j = 0; j < V; ++j)
        dt[t] = fmaf(w[j], xs[t * a.wp + r0 + j], dt[t]);
    }
  }
  for (int r = Rv + q; r < a.R; r += 4) {
    const float w = to_float(dt_row[r]);
    for (int t = 0; t < a.tokens; ++t)
      dt[t] = fmaf(w, xs[t * a.wp + r], dt[t]);
  }

  const float* A_row = a.A + static_cast<Index>(cc) * a.ld_A;
  for (int t = 0; t < a.tokens; ++t) {
    float d = dt[t];
    d += __shfl_xor_sync(0xffffffffu, d, 1);
    d += __shfl_xor_sync(0xffffffffu, d, 2);
    if (a.dt_bias != nullptr)
      d += a.dt_bias[cc];
    d = softplus_f(d);
    const float u = a.u[t * a.d_inner + cc];
    const float* B = xs + t * a.wp + a.R;
    const float* C = B + a.N;
    float* h = a.ssm_state + t * a.ssm_s[0] + cc * a.ssm_s[1];
    float y = 0.f;
    for (int n0 = 4 * q; active && n0 < a.N; n0 += 16)
      y += advance_states4(
          h, h, a.ssm_s[2], a.ssm_s[2], a.ssm_vec, A_row, 1, n0, a.N, d, d * u,
          [&](int n) { return B[n]; }, [&](int n) { return C[n]; });
    y += __shfl_xor_sync(0xffffffffu, y, 1);
    y += __shfl_xor_sync(0xffffffffu, y, 2);
    if (active && q == 0) {
      if (a.D != nullptr)
        y = fmaf(a.D[c], u, y);
      a.y[t * a.ld_y + c] = y * silu_f(a.xz[t * a.ld_xz + a.d_inner + c]);
    }
  }
  // The conv window moves on by this token's input, now that kernel 1 has read it: lane q moves
  // taps q, q + 4, …, all four lanes loading before any stores.
  for (int t = 0; t < a.tokens; ++t) {
    float* st = a.conv_state + t * a.conv_s[0] + cc * a.conv_s[1];
    for (int k0 = 0; k0 < a.K - 1; k0 += 4) {
      const int k = k0 + q;
      const bool mine = active && k < a.K - 1;
      float v = 0.f;
      if (mine)
        v = k + 1 < a.K - 1 ? st[(k + 1) * a.conv_s[2]] : a.xz[t * a.ld_xz + c];
      __syncwarp();
      if (mine)
        st[k * a.conv_s[2]] = v;
    }
  }
}

/// Workspace layout: u (tokens, d_inner), then the partials (tokens, tiles, wp), 16-byte aligned.
struct InnerStepLayout {
  Index u_floats, partial_floats;
  int tiles, wp;
  std::size_t bytes() const {
    return sizeof(float) * static_cast<std::size_t>(u_floats + partial_floats);
  }
};

inline InnerStepLayout inner_step_layout(Index tokens, Index d_inner, Index width) {
  InnerStepLayout l;
  l.tiles = static_cast<int>((d_inner + kInnerTile - 1) / kInnerTile);
  l.wp = static_cast<int>((width + 3) / 4 * 4);
  l.u_floats = (tokens * d_inner + 3) / 4 * 4;
  l.partial_floats = tokens * l.tiles * l.wp;
  return l;
}

}  // namespace detail

/// Bytes of device workspace mamba_inner_step needs for `tokens` sequences of a block with
/// d_inner channels, d_state N and dt_rank R.
inline std::size_t mamba_inner_step_workspace_size(Index tokens, Index d_inner, Index N, Index R) {
  return detail::inner_step_layout(tokens, d_inner, R + 2 * N).bytes();
}

/// Bytes of device workspace mamba_inner_step needs for `p`.
template <class W>
std::size_t mamba_inner_step_workspace_size(const MambaInnerStepParams<W>& p) {
  return mamba_inner_step_workspace_size(p.xz.size(0), p.conv_weight.size(0), p.A.size(1),
                                         p.dt_proj_weight.size(1));
}

/// Launches the two kernels on `stream`: conv_state and ssm_state advance by one token per
/// sequence and y gets the gated SSM output. `workspace` (device, 16-byte aligned) holds at least
/// mamba_inner_step_workspace_size(p) bytes. Throws ssmkit::Error on invalid arguments.
template <class W>
void mamba_inner_step(const MambaInnerStepParams<W>& p, cudaStream_t stream, void* workspace,
                      std::size_t workspace_bytes) {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, __nv_bfloat16>,
                "x_proj and dt_proj are float or __nv_bfloat16");
  const Index tokens = p.xz.size(0), di = p.conv_weight.size(0), K = p.conv_weight.size(1);
  const Index N = p.A.size(1), R = p.dt_proj_weight.size(1), width = R + 2 * N;
  const auto check_rows = [](const auto& v, const char* arg, auto shape) {
    check_device(v, arg, Device::CUDA);
    check_shape(v, arg, shape);
    SSMKIT_CHECK(v.stride(v.rank - 1) == 1, arg, "last stride", "1", v.stride(v.rank - 1));
  };
  SSMKIT_CHECK(tokens <= kGemvMaxTokens, "xz", "tokens = size(0)",
               "<= " + std::to_string(kGemvMaxTokens), tokens);
  SSMKIT_CHECK(K >= 1, "conv_weight", "width = size(1)", ">= 1", K);
  SSMKIT_CHECK(di <= 2147483647, "conv_weight", "channels = size(0)", "< 2^31 on CUDA", di);
  SSMKIT_CHECK(N >= 1, "A", "state size = size(1)", ">= 1", N);
  SSMKIT_CHECK(R >= 1, "dt_proj_weight", "rank = size(1)", ">= 1", R);
  check_rows(p.xz, "xz", Shape<2>{tokens, 2 * di});
  check_rows(p.conv_weight, "conv_weight", Shape<2>{di, K});
  check_rows(p.x_proj_weight, "x_proj_weight", Shape<2>{width, di});
  check_rows(p.dt_proj_weight, "dt_proj_weight", Shape<2>{di, R});
  check_rows(p.A, "A", Shape<2>{di, N});
  check_rows(p.y, "y", Shape<2>{tokens, di});
  check_device(p.conv_state, "conv_state", Device::CUDA);
  check_shape(p.conv_state, "conv_state", Shape<3>{tokens, di, K - 1});
  check_device(p.ssm_state, "ssm_state", Device::CUDA);
  check_shape(p.ssm_state, "ssm_state", Shape<3>{tokens, di, N});
  for (const auto& [v, arg] : {std::pair{&p.conv_bias, "conv_bias"},
                               std::pair{&p.dt_bias, "dt_bias"}, std::pair{&p.D, "D"}})
    if (!v->absent())
      check_rows(*v, arg, Shape<1>{di});
  const auto rows16 = [](const auto& v) {
    using E = std::remove_const_t<std::remove_pointer_t<decltype(v.data())>>;
    return reinterpret_cast<std::uintptr_t>(v.data()) % 16 == 0 &&
           (v.stride(0) * sizeof(E)) % 16 == 0;
  };
  SSMKIT_CHECK(rows16(p.x_proj_weight), "x_proj_weight", "row alignment", "16-byte aligned rows",
               "unaligned");
  SSMKIT_CHECK(rows16(p.dt_proj_weight), "dt_proj_weight", "row alignment", "16-byte aligned rows",
               "unaligned");
  const auto layout = detail::inner_step_layout(tokens, di, width);
  detail::check_workspace(workspace, workspace_bytes, layout.bytes());
  if (tokens == 0 || di == 0)
    return;
  detail::InnerStepArgs<W> a{};
  a.xz = p.xz.data(), a.ld_xz = p.xz.stride(0);
  a.conv_w = p.conv_weight.data(), a.ld_conv_w = p.conv_weight.stride(0);
  a.conv_b = p.conv_bias.absent() ? nullptr : p.conv_bias.data();
  a.x_proj = p.x_proj_weight.data(), a.ld_x_proj = p.x_proj_weight.stride(0);
  a.dt_proj = p.dt_proj_weight.data(), a.ld_dt_proj = p.dt_proj_weight.stride(0);
  a.dt_bias = p.dt_bias.absent() ? nullptr : p.dt_bias.data();
  a.A = p.A.data(), a.ld_A = p.A.stride(0);
  a.D = p.D.absent() ? nullptr : p.D.data();
  a.conv_state = p.conv_state.data();
  a.ssm_state = p.ssm_state.data();
  for (int i = 0; i < 3; ++i)
    a.conv_s[i] = p.conv_state.stride(i), a.ssm_s[i] = p.ssm_state.stride(i);
  a.y = p.y.data(), a.ld_y = p.y.stride(0);
  a.u = static_cast<float*>(workspace);
  a.partial = a.u + layout.u_floats;
  a.tokens = static_cast<int>(tokens), a.d_inner = static_cast<int>(di);
  a.K = static_cast<int>(K), a.N = static_cast<int>(N), a.R = static_cast<int>(R);
  a.width = static_cast<int>(width), a.wp = layout.wp;
  a.ssm_vec = detail::state_rows_vectorisable(p.ssm_state);
  a.tiles = layout.tiles;
  // Row slices of kSliceRows-row multiples: the fewest that give every multiprocessor a block.
  const int row_groups = (a.wp + detail::kSliceRows - 1) / detail::kSliceRows;
  const int slices = std::min(row_groups, (multiprocessor_count() + a.tiles - 1) / a.tiles);
  a.slice_rows = (row_groups + slices - 1) / slices * detail::kSliceRows;
  a.slices = (a.wp + a.slice_rows - 1) / a.slice_rows;
  launch_dependent(detail::inner_conv_x_proj_kernel<W>, static_cast<unsigned>(a.tiles * a.slices),
                   detail::kInnerThreads1, 0, stream, a);
  const int groups = a.tokens * a.wp / 4;
  const int chunks = (a.tiles + detail::kSumLoads - 1) / detail::kSumLoads;
  const std::size_t smem =
      sizeof(float) * (static_cast<std::size_t>(a.tokens) * a.wp + 4 * groups * chunks);
  const auto blocks =
      static_cast<unsigned>((di + detail::kInnerChannels - 1) / detail::kInnerChannels);
  // Past 48 KB only with N or dt_rank in the hundreds at 8 tokens.
  allow_dynamic_smem(detail::inner_state_update_kernel<W>, smem, "mamba_inner_step (state update)");
  launch_dependent(detail::inner_state_update_kernel<W>, blocks, detail::kInnerThreads2, smem,
                   stream, a);
}

}  // namespace ssmkit::cuda
