// Gradients of the depthwise causal conv1d of a MambaBlock (kernels/causal_conv1d_params.hpp):
// with p = pre-activation and dp = dout·silu'(p) (or dout), over the input extended by its
// history x̃ (K-1 earlier inputs, then x): dx̃[s] = Σ_k w[k]·dp[s-k], dw[k] = Σ_t dp[t]·x̃[t+k],
// dbias = Σ_t dp[t], summed over the batch.
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/kernels/causal_conv1d_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <atomic>
#include <new>
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
  TensorView<T, 3> dx;              ///< (batch, L, C)
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

/// Writes every gradient of `p`, in accum_t<T>, in parallel over channels (each owns its
/// weight and bias gradients, so the sums need no reduction across threads).
template <class T, class W>
void causal_conv1d_backward(const CausalConv1dBackwardParams<T, W>& p) {
  using Acc = accum_t<T>;
  validate(p, Device::CPU);
  const Index batch = p.batch(), L = p.length(), C = p.channels(), K = p.kernel_size();
  std::atomic<bool> out_of_memory{false};
  parallel_for(0, C, [&](Index c) {
    try {
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
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // an exception may not leave a parallel region
    }
  });
  if (out_of_memory)
    throw std::bad_alloc();
}

}  // namespace cpu
}  // namespace ssmkit
