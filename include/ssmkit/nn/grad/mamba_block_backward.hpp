// Gradients of a whole Mamba block (nn/mamba_block.hpp, HF's MambaMixer): the forward is
// recomputed, then the chain runs back through out_proj, the selective scan, dt_proj, x_proj, the
// SiLU-conv1d and in_proj, each step one of the backward kernels of this library.
#pragma once

#include "ssmkit/kernels/cpu/causal_conv1d_backward.hpp"
#include "ssmkit/kernels/cpu/selective_scan_backward.hpp"
#include "ssmkit/nn/grad/linear_backward.hpp"
#include "ssmkit/nn/mamba_block.hpp"
#include "ssmkit/nn/workspace.hpp"

#include <cmath>
#include <string>
#include <tuple>
#include <type_traits>

namespace ssmkit::nn {

/// Zero tensors of the shapes of `w` (absent where w's optional biases are): a gradient buffer.
template <class T>
MambaBlockWeights<T> zeros_like(const MambaBlockWeights<T>& w) {
  auto z1 = [](const HostTensor<T, 1>& t) {
    return t.data() ? HostTensor<T, 1>(t.shape()) : HostTensor<T, 1>();
  };
  auto z2 = [](const HostTensor<T, 2>& t) { return HostTensor<T, 2>(t.shape()); };
  MambaBlockWeights<T> g;
  g.in_proj_weight = z2(w.in_proj_weight), g.in_proj_bias = z1(w.in_proj_bias);
  g.conv1d_weight = z2(w.conv1d_weight), g.conv1d_bias = z1(w.conv1d_bias);
  g.x_proj_weight = z2(w.x_proj_weight);
  g.dt_proj_weight = z2(w.dt_proj_weight), g.dt_proj_bias = z1(w.dt_proj_bias);
  g.A_log = z2(w.A_log), g.D = z1(w.D);
  g.out_proj_weight = z2(w.out_proj_weight), g.out_proj_bias = z1(w.out_proj_bias);
  return g;
}

namespace detail {

/// Throws unless the gradient buffer `g` has the shape of its weight `w`; the message names `name`.
template <class G, class W>
void check_grad_shape(const G& g, const W& w, const std::string& name) {
  constexpr int R = static_cast<int>(std::tuple_size_v<std::decay_t<decltype(w.shape())>>);
  SSMKIT_CHECK(g.shape() == w.shape(), name, "shape",
               ssmkit::detail::shape_string<R>(w.shape()) + ", the weight's (see zeros_like)",
               ssmkit::detail::shape_string<R>(g.shape()));
}

/// Throws unless every tensor of grads has the shape of the matching one of w (absent ones
/// included); the message names the first that differs, after `prefix`.
template <class T>
void check_grad_shapes(const MambaBlockWeights<T>& g, const MambaBlockWeights<T>& w,
                       const std::string& prefix) {
  check_grad_shape(g.in_proj_weight, w.in_proj_weight, prefix + "in_proj.weight");
  check_grad_shape(g.in_proj_bias, w.in_proj_bias, prefix + "in_proj.bias");
  check_grad_shape(g.conv1d_weight, w.conv1d_weight, prefix + "conv1d.weight");
  check_grad_shape(g.conv1d_bias, w.conv1d_bias, prefix + "conv1d.bias");
  check_grad_shape(g.x_proj_weight, w.x_proj_weight, prefix + "x_proj.weight");
  check_grad_shape(g.dt_proj_weight, w.dt_proj_weight, prefix + "dt_proj.weight");
  check_grad_shape(g.dt_proj_bias, w.dt_proj_bias, prefix + "dt_proj.bias");
  check_grad_shape(g.A_log, w.A_log, prefix + "A_log");
  check_grad_shape(g.D, w.D, prefix + "D");
  check_grad_shape(g.out_proj_weight, w.out_proj_weight, prefix + "out_proj.weight");
  check_grad_shape(g.out_proj_bias, w.out_proj_bias, prefix + "out_proj.bias");
}

}  // namespace detail

/// The host buffers mamba_block_backward works in. Kept from one call to the next (a training
/// loop's steps), they are allocated once: fresh ones every step cost the page faults of their
/// first touch, a quarter of a small model's training step on two cores.
template <class T>
using MambaBlockBackwardBuffers = Workspace<T, 14>;

/// Given the block's input x and dout = ∂ℓ/∂out (batch, L, d_model, contiguous), for a forward
/// that starts from a zero state: writes dx and overwrites every tensor of `grads` (shaped as by
/// zeros_like(block.weights())) with the gradient of the matching weight (A_log's included).
/// dx may be x's or dout's memory: it is written last, after both are read.
template <class T>
void mamba_block_backward(const MambaBlock<T>& block, TensorView<const T, 3> x,
                          TensorView<const T, 3> dout, TensorView<T, 3> dx,
                          MambaBlockWeights<T>& grads, MambaBlockBackwardBuffers<T>& buffers) {
  const MambaBlockConfig& c = block.config();
  const MambaBlockWeights<T>& w = block.weights();
  const Index batch = x.size(0), L = x.size(1), dm = c.d_model, di = c.d_inner;
  const Index N = c.d_state, R = c.dt_rank, width = R + 2 * N, tokens = batch * L;
  SSMKIT_CHECK(x.is_contiguous(), "x", "layout", "contiguous", "strided");
  SSMKIT_CHECK(dout.is_contiguous(), "dout", "layout", "contiguous", "strided");
  SSMKIT_CHECK(dx.is_contiguous(), "dx", "layout", "contiguous", "strided");
  check_device(x, "x", Device::CPU);
  check_device(dout, "dout", Device::CPU);
  check_device(dx, "dx", Device::CPU);
  check_shape(x, "x", {batch, L, dm});
  check_shape(dout, "dout", {batch, L, dm});
  check_shape(dx, "dx", {batch, L, dm});
  detail::check_grad_shapes(grads, w, "grads.");
  if (tokens == 0) {  // the gradient of an empty batch
    const auto zero = [](auto&... t) { (t.fill(T(0)), ...); };
    zero(grads.in_proj_weight, grads.in_proj_bias, grads.conv1d_weight, grads.conv1d_bias,
         grads.x_proj_weight, grads.dt_proj_weight, grads.dt_proj_bias, grads.A_log, grads.D,
         grads.out_proj_weight, grads.out_proj_bias);
    return;
  }
  int slot = 0;  // each buffer below is written whole before it is read
  auto buf = [&](Index n) { return buffers.get(slot++, n); };
  auto mat = [](T* p, Index rows, Index cols, Index stride) {
    return TensorView<T, 2>::unchecked(p, {rows, cols}, {stride, 1}, Device::CPU);
  };
  auto seq = [&](T* p, Index channels, Index stride) {
    return TensorView<T, 3>::unchecked(p, {batch, L, channels}, {L * stride, stride, 1},
                                       Device::CPU);
  };
  const TensorView<const T, 2> x2(x.data(), {tokens, dm}, "x");

  // The forward again, keeping what the backward reads.
  auto xz = buf(tokens * 2 * di), u = buf(tokens * di), xdbl = buf(tokens * width);
  auto delta = buf(tokens * di), y = buf(tokens * di), A = buf(di * N);
  linear<T>(x2, w.in_proj_weight.view(), w.in_proj_bias.view(), mat(xz, tokens, 2 * di, 2 * di));
  CausalConv1dBackwardParams<T> conv;
  conv.x = seq(xz, di, 2 * di);
  conv.weight = w.conv1d_weight.view();
  conv.bias = w.conv1d_bias.view();
  conv.silu = true;
  cpu::causal_conv1d(conv.forward(seq(u, di, di)));
  linear<T>(mat(u, tokens, di, di), w.x_proj_weight.view(), {}, mat(xdbl, tokens, width, width));
  linear<T>(mat(xdbl, tokens, R, width), w.dt_proj_weight.view(), {}, mat(delta, tokens, di, di));
  for (Index i = 0; i < di * N; ++i)
    A[i] = -std::exp(w.A_log.data()[i]);
  auto rows_of = [&](T* v, Index col) {  // B or C inside x_proj's output rows
    return TensorView<T, 4>::unchecked(v + col, {batch, L, 1, N}, {L * width, width, N, 1},
                                       Device::CPU);
  };
  SelectiveScanBackwardParams<T> s;
  s.u = seq(u, di, di);
  s.delta = seq(delta, di, di);
  s.A = TensorView<const T, 2>(A, {di, N}, "A");
  s.B = rows_of(xdbl, R);
  s.C = rows_of(xdbl, R + N);
  s.D_skip = w.D.view();
  s.delta_bias = w.dt_proj_bias.view();
  s.z = seq(xz + di, di, 2 * di);
  s.delta_softplus = true;
  // The scan's states every `every` steps, which the backward starts its chunks from.
  const Index every = selective_scan_checkpoint_interval(N), count = (L + every - 1) / every;
  auto checkpoints = buf(count * batch * di * N);
  const TensorView<T, 4> ck(checkpoints, {count, batch, di, N}, "checkpoints");
  SelectiveScanParams<T> f = s.forward(seq(y, di, di));
  f.checkpoints = ck;
  f.checkpoint_interval = every;
  cpu::selective_scan(f);
  s.checkpoints = ck;
  s.checkpoint_interval = every;

  // Backward.
  auto dy = buf(tokens * di), dxz = buf(tokens * 2 * di), dxdbl = buf(tokens * width);
  auto du_scan = buf(tokens * di), du_proj = buf(tokens * di), ddelta = buf(tokens * di);
  auto dA = buf(di * N);
  linear_backward<T>(mat(y, tokens, di, di), w.out_proj_weight.view(),
                     TensorView<const T, 2>(dout.data(), {tokens, dm}, "dout"),
                     mat(dy, tokens, di, di), grads.out_proj_weight.view(),
                     grads.out_proj_bias.view());
  s.dout = seq(dy, di, di);
  s.du = seq(du_scan, di, di);
  s.ddelta = seq(ddelta, di, di);
  s.dA = TensorView<T, 2>(dA, {di, N}, "dA");
  s.dB = rows_of(dxdbl, R);
  s.dC = rows_of(dxdbl, R + N);
  s.dD_skip = grads.D.view();
  s.ddelta_bias = grads.dt_proj_bias.view();
  s.dz = seq(dxz + di, di, 2 * di);
  cpu::selective_scan_backward(s);
  for (Index i = 0; i < di * N; ++i)
    grads.A_log.data()[i] = dA[i] * A[i];  // dA/dA_log = −exp(A_log) = A
  linear_backward<T>(mat(xdbl, tokens, R, width), w.dt_proj_weight.view(),
                     mat(ddelta, tokens, di, di), mat(dxdbl, tokens, R, width),
                     grads.dt_proj_weight.view(), {});
  linear_backward<T>(mat(u, tokens, di, di), w.x_proj_weight.view(),
                     mat(dxdbl, tokens, width, width), mat(du_proj, tokens, di, di),
                     grads.x_proj_weight.view(), {});
  for (Index i = 0; i < tokens * di; ++i)
    du_proj[i] += du_scan[i];
  conv.dout = seq(du_proj, di, di);
  conv.dx = seq(dxz, di, 2 * di);
  conv.dweight = grads.conv1d_weight.view();
  conv.dbias = grads.conv1d_bias.view();
  cpu::causal_conv1d_backward(conv);
  linear_backward<T>(x2, w.in_proj_weight.view(), mat(dxz, tokens, 2 * di, 2 * di),
                     TensorView<T, 2>(dx.data(), {tokens, dm}, "dx"), grads.in_proj_weight.view(),
                     grads.in_proj_bias.view());
}

/// The same with buffers of its own, allocated for this call.
template <class T>
void mamba_block_backward(const MambaBlock<T>& block, TensorView<const T, 3> x,
                          TensorView<const T, 3> dout, TensorView<T, 3> dx,
                          MambaBlockWeights<T>& grads) {
  MambaBlockBackwardBuffers<T> buffers;
  mamba_block_backward(block, x, dout, dx, grads, buffers);
}

}  // namespace ssmkit::nn
