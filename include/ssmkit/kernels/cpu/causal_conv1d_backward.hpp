// Gradients of the depthwise causal conv1d of a MambaBlock (kernels/causal_conv1d_params.hpp):
// with p = pre-activation and dp = dout·silu'(p) (or dout), over the input extended by its
// history x̃ (K-1 earlier inputs, then x): dx̃[s] = Σ_k w[k]·dp[s-k], dw[k] = Σ_t dp[t]·x̃[t+k],
// dbias = Σ_t dp[t], summed over the batch.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/causal_conv1d_params.hpp"
#include "ssmkit/kernels/cpu/exp_approx.hpp"
#include "ssmkit/math/activations.hpp"

#include <type_traits>
#include <vector>

namespace ssmkit {

/// The conv's inputs as given to the forward, ∂ℓ/∂out, and the gradients (overwritten). A
/// gradient of an optional input is present exactly when the input is.
template <class T, class W = T>
struct CausalConv1dBackwardParams {
  TensorView<const T, 3> x;              ///< (batch, L, C)
  TensorView<const W, 2> weight;         ///< (C, K)
  TensorView<const W, 1> bias;           ///< (C) optional
  TensorView<const T, 3> initial_state;  ///< (batch, C, K-1) optional
  bool silu = false;
  TensorView<const T, 3> dout;      ///< (batch, L, C)
  TensorView<T, 3> dx;              ///< (batch, L, C); no gradient may overlap an input
  TensorView<W, 2> dweight;         ///< (C, K)
  TensorView<W, 1> dbias;           ///< (C) iff bias
  TensorView<T, 3> dinitial_state;  ///< (batch, C, K-1) iff initial_state

  Index batch() const { return x.size(0); }
  Index length() const { return x.size(1); }
  Index channels() const { return x.size(2); }
  Index kernel_size() const { return weight.size(1); }

  /// The forward call on the same inputs, writing `out`.
  CausalConv1dParams<T, W> forward(TensorView<T, 3> out) const {
    CausalConv1dParams<T, W> f;
    f.x = x, f.weight = weight, f.bias = bias, f.initial_state = initial_state;
    f.out = out, f.silu = silu;
    return f;
  }
};

template <class T, class W>
void validate(const CausalConv1dBackwardParams<T, W>& p, Device device) {
  const Index batch = p.batch(), L = p.length(), C = p.channels();
  detail::check_conv_arg(p.dx, "dx", Shape<3>{batch, L, C}, device, false);
  // Gradients are written while other channels still read the inputs: none may overlap an input
  // or another gradient. Checked here, or the forward's check names dx out.
  const auto dx = named(p.dx, "dx");
  const auto dweight = named(p.dweight, "dweight");
  const auto dbias = named(p.dbias, "dbias");
  const auto dinit = named(p.dinitial_state, "dinitial_state");
  // Each output against every input, in order.
  const auto from_inputs = [&](const auto&... outs) {
    (check_disjoint_from(outs, named(p.x, "x"), named(p.weight, "weight"), named(p.bias, "bias"),
                         named(p.initial_state, "initial_state"), named(p.dout, "dout")),
     ...);
  };
  from_inputs(dx, dweight, dbias, dinit);
  check_pairwise_disjoint(dinit, dbias, dweight, dx);
  validate(p.forward(p.dx), device);
  const Index K = p.kernel_size();
  detail::check_conv_arg(p.dout, "dout", Shape<3>{batch, L, C}, device, false);
  detail::check_conv_arg(p.dweight, "dweight", Shape<2>{C, K}, device, false);
  SSMKIT_CHECK(p.dbias.absent() == p.bias.absent(), "dbias", "presence",
               p.bias.absent() ? "absent, as bias is" : "present, as bias is",
               p.dbias.absent() ? "absent" : "present");
  detail::check_conv_arg(p.dbias, "dbias", Shape<1>{C}, device, true);
  SSMKIT_CHECK(
      p.dinitial_state.absent() == p.initial_state.absent(), "dinitial_state", "presence",
      p.initial_state.absent() ? "absent, as initial_state is" : "present, as initial_state is",
      p.dinitial_state.absent() ? "absent" : "present");
  detail::check_conv_arg(p.dinitial_state, "dinitial_state", Shape<3>{batch, C, K - 1}, device,
                         true);
}

namespace cpu {
namespace detail {

/// The gradients of channel c alone, any type and strides.
template <class T, class W>
void conv_backward_channel(const CausalConv1dBackwardParams<T, W>& p, Index c) {
  using Acc = accum_t<T>;
  const Index batch = p.batch(), L = p.length(), K = p.kernel_size();
  std::vector<Acc> w(static_cast<std::size_t>(K)), dw(w.size(), Acc(0));
  std::vector<Acc> xe(static_cast<std::size_t>(L + K - 1)), dxe(xe.size()), dp(L);
  for (Index k = 0; k < K; ++k)
    w[k] = static_cast<Acc>(p.weight(c, k));
  const Acc bias = p.bias.absent() ? Acc(0) : static_cast<Acc>(p.bias(c));
  Acc dbias = 0;
  for (Index b = 0; b < batch; ++b) {
    for (Index j = 0; j < K - 1; ++j)
      xe[j] = p.initial_state.absent() ? Acc(0) : static_cast<Acc>(p.initial_state(b, c, j));
    for (Index t = 0; t < L; ++t)
      xe[t + K - 1] = static_cast<Acc>(p.x(b, t, c));
    for (Index t = 0; t < L; ++t) {
      Acc g = static_cast<Acc>(p.dout(b, t, c));
      if (p.silu) {
        Acc pre = bias;
        for (Index k = 0; k < K; ++k)
          pre += w[k] * xe[t + k];
        const Acc s = sigmoid(pre);
        g *= s * (Acc(1) + pre * (Acc(1) - s));
      }
      dp[t] = g;
      dbias += g;
      for (Index k = 0; k < K; ++k)
        dw[k] += g * xe[t + k];
    }
    for (Index s = 0; s < L + K - 1; ++s) {
      Acc sum = 0;
      for (Index k = 0; k < K; ++k)
        if (s - k >= 0 && s - k < L)
          sum += w[k] * dp[s - k];
      dxe[s] = sum;
    }
    for (Index t = 0; t < L; ++t)
      p.dx(b, t, c) = static_cast<T>(dxe[t + K - 1]);
    if (!p.dinitial_state.absent())
      for (Index j = 0; j < K - 1; ++j)
        p.dinitial_state(b, c, j) = static_cast<T>(dxe[j]);
  }
  for (Index k = 0; k < K; ++k)
    p.dweight(c, k) = static_cast<W>(dw[k]);
  if (!p.dbias.absent())
    p.dbias(c) = static_cast<W>(dbias);
}

/// The gradients of channels [c0, c0 + P::width), float rows of unit channel stride: a pack of
/// channels at a time along each sequence (channel by channel, the loop above reads x at a
/// stride of C and takes a scalar exp per step). Same sums in the same order, per lane.
template <class P, class W>
void conv_backward_lanes(const CausalConv1dBackwardParams<float, W>& p, Index c0) {
  constexpr int V = P::width;
  const Index batch = p.batch(), L = p.length(), K = p.kernel_size();
  const auto sz = [](Index n) { return static_cast<std::size_t>(n); };
  // Per lane: the taps, their gradients, the history before t = 0, dp along the sequence.
  std::vector<float> w(sz(K * V)), dw(sz(K * V), 0.f), hist(sz((K - 1) * V)), dp(sz(L * V));
  float lanes[V];
  for (Index k = 0; k < K; ++k)
    for (int l = 0; l < V; ++l)
      w[sz(k * V + l)] = static_cast<float>(p.weight(c0 + l, k));
  for (int l = 0; l < V; ++l)
    lanes[l] = p.bias.absent() ? 0.f : static_cast<float>(p.bias(c0 + l));
  const P bias = P::load(lanes), one = P::broadcast(1.f);
  P dbias = P::broadcast(0.f);
  for (Index b = 0; b < batch; ++b) {
    for (Index j = 0; j < K - 1; ++j)
      for (int l = 0; l < V; ++l)
        hist[sz(j * V + l)] = p.initial_state.absent() ? 0.f : p.initial_state(b, c0 + l, j);
    const auto input = [&](Index s) {  // extended time s: history, then x
      return P::load(s < K - 1 ? &hist[sz(s * V)] : &p.x(b, s - (K - 1), c0));
    };
    for (Index t = 0; t < L; ++t) {
      P g = P::load(&p.dout(b, t, c0));
      if (p.silu) {
        P pre = bias;
        for (Index k = 0; k < K; ++k)
          pre = fma(P::load(&w[sz(k * V)]), input(t + k), pre);
        const P s = simd::sigmoid(pre);
        g = g * (s * fma(pre, one - s, one));
      }
      g.store(&dp[sz(t * V)]);
      dbias = dbias + g;
      for (Index k = 0; k < K; ++k)
        fma(g, input(t + k), P::load(&dw[sz(k * V)])).store(&dw[sz(k * V)]);
    }
    // dx̃[s] = Σ_k w[k]·dp[s-k]: tokens s ≥ K-1 go to dx, the first K-1 to dinitial_state.
    const auto dx_ext = [&](Index s) {
      P sum = P::broadcast(0.f);
      for (Index k = 0; k < K; ++k)
        if (s - k >= 0 && s - k < L)
          sum = fma(P::load(&w[sz(k * V)]), P::load(&dp[sz((s - k) * V)]), sum);
      return sum;
    };
    for (Index t = 0; t < L; ++t)
      dx_ext(t + K - 1).store(&p.dx(b, t, c0));
    if (!p.dinitial_state.absent())
      for (Index j = 0; j < K - 1; ++j) {
        dx_ext(j).store(lanes);
        for (int l = 0; l < V; ++l)
          p.dinitial_state(b, c0 + l, j) = lanes[l];
      }
  }
  for (Index k = 0; k < K; ++k)
    for (int l = 0; l < V; ++l)
      p.dweight(c0 + l, k) = static_cast<W>(dw[sz(k * V + l)]);
  dbias.store(lanes);
  if (!p.dbias.absent())
    for (int l = 0; l < V; ++l)
      p.dbias(c0 + l) = static_cast<W>(lanes[l]);
}

}  // namespace detail

/// Writes every gradient of `p`, in accum_t<T>, in parallel over channels (each owns its
/// weight and bias gradients, so the sums need no reduction across threads): float rows of unit
/// channel stride a pack of channels per task, the rest one channel per task.
template <class T, class W>
void causal_conv1d_backward(const CausalConv1dBackwardParams<T, W>& p) {
  validate(p, Device::CPU);
  const Index C = p.channels();
  using P = simd::BestF32;
  Index packed = 0;  // channels [0, packed) go a pack at a time
  if constexpr (std::is_same_v<T, float>)
    if (p.x.stride(2) == 1 && p.dout.stride(2) == 1 && p.dx.stride(2) == 1)
      packed = C / P::width * P::width;
  const Index packs = packed / P::width;
  parallel_for(0, packs + (C - packed), [&](Index i) {
    if constexpr (std::is_same_v<T, float>) {
      if (i < packs) {
        detail::conv_backward_lanes<P>(p, i * P::width);
        return;
      }
    }
    detail::conv_backward_channel(p, packed + (i - packs));
  });
}

}  // namespace cpu
}  // namespace ssmkit
