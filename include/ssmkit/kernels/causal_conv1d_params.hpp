// The arguments of the depthwise causal convolution of a MambaBlock, shared by the CPU and CUDA
// versions, and the validation both run first. With K taps, as PyTorch's Conv1d(groups=C,
// padding=K-1) keeps its first L outputs:  out[b,t,c] = bias[c] + Σ_k w[c,k]·x[b, t-(K-1)+k, c],
// where inputs before t = 0 are zero or come from a state of the K-1 previous inputs.
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/tensor_view.hpp"

namespace ssmkit {

/// A whole sequence. Views are logical (batch, length, channel) whatever the memory order.
/// States hold the K-1 most recent inputs per channel, oldest first: state[b,c,j] is the input
/// of time j-(K-1) relative to the first token. `W` is the storage type of weight and bias;
/// arithmetic runs in accum_t<T>.
template <class T, class W = T>
struct CausalConv1dParams {
  TensorView<const T, 3> x;              ///< (batch, L, C) input
  TensorView<const W, 2> weight;         ///< (C, K) taps, weight(c, K-1) multiplies the newest
  TensorView<const W, 1> bias;           ///< (C) optional
  TensorView<const T, 3> initial_state;  ///< (batch, C, K-1) optional; zeros when absent
  TensorView<T, 3> out;                  ///< (batch, L, C); must not overlap any input
  TensorView<T, 3> final_state;          ///< (batch, C, K-1) optional; may be initial_state
  bool silu = false;                     ///< out = silu(conv) when set

  Index batch() const { return x.size(0); }
  Index length() const { return x.size(1); }
  Index channels() const { return x.size(2); }
  Index kernel_size() const { return weight.size(1); }
};

/// One token of decoding: the state slides by one input and the output is the same formula.
template <class T, class W = T>
struct CausalConv1dStepParams {
  TensorView<const T, 2> x;       ///< (batch, C) the new token
  TensorView<const W, 2> weight;  ///< (C, K)
  TensorView<const W, 1> bias;    ///< (C) optional
  TensorView<T, 3> state;         ///< (batch, C, K-1) updated in place
  TensorView<T, 2> out;           ///< (batch, C); may be x (the same view), else disjoint
  bool silu = false;

  Index batch() const { return x.size(0); }
  Index channels() const { return x.size(1); }
  Index kernel_size() const { return weight.size(1); }
};

namespace detail {

template <class V, class Shp>
void check_conv_arg(const V& v, const char* arg, const Shp& shape, Device device, bool optional) {
  if (optional && v.absent())
    return;
  check_shape(v, arg, shape);
  check_device(v, arg, device);
}

template <class W>
void check_conv_weight(const TensorView<const W, 2>& weight, Index C, Device device) {
  SSMKIT_CHECK(!weight.absent(), "weight", "presence", "a (C, K) view", "absent");
  SSMKIT_CHECK(weight.size(1) >= 1, "weight", "kernel size K = size(1)", ">= 1", weight.size(1));
  check_conv_arg(weight, "weight", Shape<2>{C, weight.size(1)}, device, false);
}

}  // namespace detail

/// Throws ssmkit::Error naming the first argument whose shape or device is wrong, or an output
/// (out, final_state) that overlaps an input or the other output.
template <class T, class W>
void validate(const CausalConv1dParams<T, W>& p, Device device) {
  const Index batch = p.batch(), L = p.length(), C = p.channels();
  check_device(p.x, "x", device);
  detail::check_conv_weight(p.weight, C, device);
  const Index K = p.kernel_size();
  detail::check_conv_arg(p.bias, "bias", Shape<1>{C}, device, true);
  detail::check_conv_arg(p.initial_state, "initial_state", Shape<3>{batch, C, K - 1}, device, true);
  detail::check_conv_arg(p.out, "out", Shape<3>{batch, L, C}, device, false);
  check_disjoint(p.out, "out", p.x, "x");
  detail::check_conv_arg(p.final_state, "final_state", Shape<3>{batch, C, K - 1}, device, true);
  // The outputs are written while other threads still read the inputs; final_state may be
  // exactly initial_state (a state carried in place), nothing else may share memory.
  const auto x = named(p.x, "x");
  const auto weight = named(p.weight, "weight");
  const auto bias = named(p.bias, "bias");
  check_disjoint_from(named(p.out, "out"), weight, bias, named(p.initial_state, "initial_state"));
  check_disjoint_from(named(p.final_state, "final_state"), x, weight, bias);
  check_disjoint_or_same(p.final_state, "final_state", p.initial_state, "initial_state");
  check_disjoint(p.final_state, "final_state", p.out, "out");
}

template <class T, class W>
void validate(const CausalConv1dStepParams<T, W>& p, Device device) {
  const Index batch = p.batch(), C = p.channels();
  check_device(p.x, "x", device);
  detail::check_conv_weight(p.weight, C, device);
  const Index K = p.kernel_size();
  detail::check_conv_arg(p.bias, "bias", Shape<1>{C}, device, true);
  detail::check_conv_arg(p.state, "state", Shape<3>{batch, C, K - 1}, device, false);
  detail::check_conv_arg(p.out, "out", Shape<2>{batch, C}, device, false);
  // out may be exactly x (each channel is read before it is written); the state slides in place
  // while x and the weights are read. No other overlap.
  const auto weight = named(p.weight, "weight");
  const auto bias = named(p.bias, "bias");
  check_disjoint_or_same(p.out, "out", p.x, "x");
  check_disjoint_from(named(p.out, "out"), weight, bias, named(p.state, "state"));
  check_disjoint_from(named(p.state, "state"), named(p.x, "x"), weight, bias);
}

}  // namespace ssmkit
