// Depthwise causal conv1d of a MambaBlock on the CPU, over a sequence and as a one-token step
// (the formula is in kernels/causal_conv1d_params.hpp), with optional bias and SiLU.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/causal_conv1d_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <algorithm>
#include <vector>

namespace ssmkit::cpu {

namespace detail {

/// Token-major sequences are done in blocks of this many channels: the inner loop runs over
/// contiguous channels (SIMD-friendly) while the block's taps and history stay in L1.
inline constexpr Index kConvChannelBlock = 64;

template <class T, class W>
struct ConvBlock {
  using Acc = accum_t<T>;
  const CausalConv1dParams<T, W>& p;
  Index b, c0, nc, K;
  std::vector<Acc> taps;     // (K, nc): taps[k*nc + c] = weight(c0+c, k)
  std::vector<Acc> history;  // (K-1, nc): inputs before t = 0, oldest first
  std::vector<Acc> bias;     // (nc)

  ConvBlock(const CausalConv1dParams<T, W>& params, Index b_, Index c0_, Index nc_)
      : p(params), b(b_), c0(c0_), nc(nc_), K(params.kernel_size()) {
    taps.resize(static_cast<std::size_t>(K * nc));
    history.assign(static_cast<std::size_t>((K - 1) * nc), Acc(0));
    bias.assign(static_cast<std::size_t>(nc), Acc(0));
    for (Index c = 0; c < nc; ++c) {
      for (Index k = 0; k < K; ++k)
        taps[k * nc + c] = static_cast<Acc>(p.weight(c0 + c, k));
      if (!p.initial_state.absent())
        for (Index j = 0; j < K - 1; ++j)
          history[j * nc + c] = static_cast<Acc>(p.initial_state(b, c0 + c, j));
      if (!p.bias.absent())
        bias[c] = static_cast<Acc>(p.bias(c0 + c));
    }
  }

  /// Input of extended time i (i < K-1: history, else token i-(K-1)) for channel c of the block.
  Acc input(Index i, Index c) const {
    return i < K - 1 ? history[i * nc + c] : static_cast<Acc>(p.x(b, i - (K - 1), c0 + c));
  }

  Acc finish(Acc v) const { return p.silu ? silu(v) : v; }

  /// Channels innermost, for token-major data; kUnit when x and out have channel stride 1.
  template <bool kUnit>
  void run_channels_inner(Acc* acc) const {
    const Index L = p.length(), sx = p.x.stride(2), so = p.out.stride(2);
    for (Index t = 0; t < L; ++t) {
      std::copy(bias.begin(), bias.end(), acc);
      for (Index k = 0; k < K; ++k) {
        const Index s = t - (K - 1) + k;
        const Acc* w = taps.data() + k * nc;
        if (s < 0) {
          const Acc* hist = history.data() + (s + K - 1) * nc;
          for (Index c = 0; c < nc; ++c)
            acc[c] += w[c] * hist[c];
          continue;
        }
        const T* xs = &p.x(b, s, c0);
        for (Index c = 0; c < nc; ++c)
          acc[c] += w[c] * static_cast<Acc>(xs[kUnit ? c : c * sx]);
      }
      T* os = &p.out(b, t, c0);
      for (Index c = 0; c < nc; ++c)
        os[kUnit ? c : c * so] = static_cast<T>(finish(acc[c]));
    }
  }

  /// Time innermost, one channel at a time, for channel-major data.
  void run_time_inner() const {
    const Index L = p.length();
    for (Index c = 0; c < nc; ++c)
      for (Index t = 0; t < L; ++t) {
        Acc acc = bias[c];
        for (Index k = 0; k < K; ++k)
          acc += taps[k * nc + c] * input(t + k, c);
        p.out(b, t, c0 + c) = static_cast<T>(finish(acc));
      }
  }

  /// The K-1 most recent inputs after the sequence. Reads history (a copy), so the final state
  /// may overwrite the initial one.
  void write_final_state() const {
    if (p.final_state.absent())
      return;
    for (Index c = 0; c < nc; ++c)
      for (Index j = 0; j < K - 1; ++j)
        p.final_state(b, c0 + c, j) = static_cast<T>(input(p.length() + j, c));
  }
};

}  // namespace detail

/// Runs the causal conv over every sequence of p.x into p.out (and p.final_state when present).
/// Any strides; channel-contiguous (token-major) data takes the vectorised path.
template <class T, class W>
void causal_conv1d(const CausalConv1dParams<T, W>& p) {
  validate(p, Device::CPU);
  const Index batch = p.batch(), C = p.channels();
  const bool channels_inner = p.x.stride(2) <= p.x.stride(1);
  const Index block = channels_inner ? detail::kConvChannelBlock : 1;
  const Index blocks = (C + block - 1) / block;
  const bool unit = p.x.stride(2) == 1 && p.out.stride(2) == 1;
  parallel_for(0, batch * blocks, [&](Index i) {
    const Index b = i / blocks, c0 = (i % blocks) * block;
    const detail::ConvBlock<T, W> work(p, b, c0, std::min(block, C - c0));
    if (channels_inner) {
      accum_t<T> acc[detail::kConvChannelBlock];
      if (unit)
        work.template run_channels_inner<true>(acc);
      else
        work.template run_channels_inner<false>(acc);
    } else {
      work.run_time_inner();
    }
    work.write_final_state();
  });
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
