// Depthwise causal conv1d of a MambaBlock on the CPU, over a sequence and as a one-token step
// (the formula is in kernels/causal_conv1d_params.hpp), with optional bias and SiLU.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/causal_conv1d_params.hpp"
#include "ssmkit/kernels/cpu/exp_approx.hpp"
#include "ssmkit/math/activations.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace ssmkit::cpu {

namespace detail {

/// Token-major sequences run one token row at a time, in blocks of this many channels (the
/// accumulators stay in L1 and the inner loop is contiguous) ...
inline constexpr Index kConvChannelBlock = 64;
/// ... and tasks of this many tokens, so that every thread streams through whole rows.
inline constexpr Index kConvTimeTile = 128;

/// The conv's parameters converted once to the accumulate type: taps transposed to (K, C) and
/// the history (batch, K-1, C) that precedes t = 0. Reading the initial state up front lets the
/// final state overwrite it.
template <class T, class W>
struct ConvOperands {
  using Acc = accum_t<T>;
  const CausalConv1dParams<T, W>& p;
  Index K, C;
  std::vector<Acc> taps, bias, history;

  explicit ConvOperands(const CausalConv1dParams<T, W>& params)
      : p(params),
        K(params.kernel_size()),
        C(params.channels()),
        taps(static_cast<std::size_t>(K * C)),
        bias(static_cast<std::size_t>(C), Acc(0)),
        history(static_cast<std::size_t>(params.batch() * (K - 1) * C), Acc(0)) {
    for (Index c = 0; c < C; ++c) {
      for (Index k = 0; k < K; ++k)
        taps[k * C + c] = static_cast<Acc>(p.weight(c, k));
      if (!p.bias.absent())
        bias[c] = static_cast<Acc>(p.bias(c));
    }
    if (!p.initial_state.absent())
      for (Index b = 0; b < p.batch(); ++b)
        for (Index c = 0; c < C; ++c)
          for (Index j = 0; j < K - 1; ++j)
            history[(b * (K - 1) + j) * C + c] = static_cast<Acc>(p.initial_state(b, c, j));
  }

  /// Input of extended time i (i < K-1: history, else token i-(K-1)).
  Acc input(Index b, Index i, Index c) const {
    return i < K - 1 ? history[(b * (K - 1) + i) * C + c]
                     : static_cast<Acc>(p.x(b, i - (K - 1), c));
  }

  /// SiLU over n accumulators: float packs where they fit (a scalar exp would dominate the
  /// conv), the scalar formula for the rest and for double.
  void finish(Acc* acc, Index n) const {
    if (!p.silu)
      return;
    Index c = 0;
    if constexpr (std::is_same_v<Acc, float>) {
      using P = simd::BestF32;
      for (; c + P::width <= n; c += P::width)
        simd::silu(P::load(acc + c)).store(acc + c);
    }
    for (; c < n; ++c)
      acc[c] = silu(acc[c]);
  }

  /// Tokens [t0, t1) of sequence b, channels innermost; kUnit when x and out have channel
  /// stride 1. Float rows with unit stride go a pack of channels at a time, its accumulator in a
  /// register (the blocks below keep theirs in memory: 1.03 against 0.84 ns per element on one
  /// AVX-512 core); the other rows, and the channels past the last whole pack, block by block.
  template <bool kUnit>
  void run_rows(Index b, Index t0, Index t1) const {
    using P = simd::BestF32;
    constexpr bool kPacked = kUnit && std::is_same_v<T, float>;
    const Index packed = kPacked ? C / P::width * P::width : 0;
    std::vector<const float*> rows(kPacked ? static_cast<std::size_t>(K) : 0);
    for (Index t = t0; t < t1; ++t) {
      if constexpr (kPacked) {
        if (packed > 0) {
          for (Index k = 0; k < K; ++k) {  // the K input rows of token t
            const Index s = t - (K - 1) + k;
            rows[k] = s < 0 ? &history[(b * (K - 1) + s + K - 1) * C] : &p.x(b, s, 0);
          }
          float* os = &p.out(b, t, 0);
          for (Index c = 0; c < packed; c += P::width) {
            P acc = P::load(&bias[c]);
            for (Index k = 0; k < K; ++k)
              acc = fma(P::load(&taps[k * C + c]), P::load(rows[k] + c), acc);
            if (p.silu)
              acc = simd::silu(acc);
            acc.store(os + c);
          }
        }
      }
      for (Index c0 = packed; c0 < C; c0 += kConvChannelBlock)
        run_block<kUnit>(b, t, c0, std::min(kConvChannelBlock, C - c0));
    }
  }

  /// Channels [c0, c0 + nc) of token t of sequence b (nc <= kConvChannelBlock).
  template <bool kUnit>
  void run_block(Index b, Index t, Index c0, Index nc) const {
    const Index sx = p.x.stride(2), so = p.out.stride(2);
    Acc acc[kConvChannelBlock];
    std::copy(&bias[c0], &bias[c0] + nc, acc);
    for (Index k = 0; k < K; ++k) {
      const Index s = t - (K - 1) + k;
      const Acc* w = &taps[k * C + c0];
      if (s < 0) {
        const Acc* h = &history[(b * (K - 1) + s + K - 1) * C + c0];
        for (Index c = 0; c < nc; ++c)
          acc[c] += w[c] * h[c];
        continue;
      }
      const T* xs = &p.x(b, s, c0);
      for (Index c = 0; c < nc; ++c)
        acc[c] += w[c] * static_cast<Acc>(xs[kUnit ? c : c * sx]);
    }
    finish(acc, nc);
    T* os = &p.out(b, t, c0);
    for (Index c = 0; c < nc; ++c)
      os[kUnit ? c : c * so] = static_cast<T>(acc[c]);
  }

  /// All tokens of channel c of sequence b, time innermost (channel-major data).
  void run_channel(Index b, Index c) const {
    for (Index t = 0; t < p.length(); ++t) {
      Acc acc = bias[c];
      for (Index k = 0; k < K; ++k)
        acc += taps[k * C + c] * input(b, t + k, c);
      finish(&acc, 1);
      p.out(b, t, c) = static_cast<T>(acc);
    }
  }
};

}  // namespace detail

/// Runs the causal conv over every sequence of p.x into p.out (and p.final_state when present).
/// Any strides: channel-contiguous (token-major) data is processed row by row, vectorised
/// across channels; channel-major data channel by channel.
template <class T, class W>
void causal_conv1d(const CausalConv1dParams<T, W>& p) {
  validate(p, Device::CPU);
  const Index batch = p.batch(), L = p.length(), C = p.channels(), K = p.kernel_size();
  const detail::ConvOperands<T, W> op(p);
  if (p.x.stride(2) <= p.x.stride(1)) {
    const Index tiles = (L + detail::kConvTimeTile - 1) / detail::kConvTimeTile;
    const bool unit = p.x.stride(2) == 1 && p.out.stride(2) == 1;
    parallel_for(0, batch * tiles, [&](Index i) {
      const Index b = i / tiles, t0 = (i % tiles) * detail::kConvTimeTile;
      const Index t1 = std::min(L, t0 + detail::kConvTimeTile);
      if (unit)
        op.template run_rows<true>(b, t0, t1);
      else
        op.template run_rows<false>(b, t0, t1);
    });
  } else {
    parallel_for(0, batch * C, [&](Index i) { op.run_channel(i / C, i % C); });
  }
  if (!p.final_state.absent())
    for (Index b = 0; b < batch; ++b)
      for (Index c = 0; c < C; ++c)
        for (Index j = 0; j < K - 1; ++j)
          p.final_state(b, c, j) = static_cast<T>(op.input(b, L + j, c));
}

/// Advances p.state by the token p.x and writes its output to p.out (which may alias p.x).
template <class T, class W>
void causal_conv1d_update(const CausalConv1dStepParams<T, W>& p) {
  validate(p, Device::CPU);
  using Acc = accum_t<T>;
  const Index C = p.channels(), K = p.kernel_size();
  parallel_for(0, p.batch(), [&](Index b) {
    for (Index c = 0; c < C; ++c) {
      const Acc x = static_cast<Acc>(p.x(b, c));
      Acc acc = p.bias.absent() ? Acc(0) : static_cast<Acc>(p.bias(c));
      for (Index j = 0; j < K - 1; ++j)
        acc += static_cast<Acc>(p.weight(c, j)) * static_cast<Acc>(p.state(b, c, j));
      acc += static_cast<Acc>(p.weight(c, K - 1)) * x;
      for (Index j = 0; j + 1 < K - 1; ++j)
        p.state(b, c, j) = p.state(b, c, j + 1);
      if (K > 1)
        p.state(b, c, K - 2) = static_cast<T>(x);
      p.out(b, c) = static_cast<T>(p.silu ? silu(acc) : acc);
    }
  });
}

}  // namespace ssmkit::cpu
