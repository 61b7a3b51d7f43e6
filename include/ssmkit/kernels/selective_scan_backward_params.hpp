// The arguments of the S6 selective scan's backward pass (Mamba, arXiv 2312.00752): the forward's
// inputs, the gradient of the loss w.r.t. out (and optionally h_final), and the gradients it
// returns.
#pragma once

#include "ssmkit/kernels/selective_scan_params.hpp"

#include <string>

namespace ssmkit {

/// Gradients of a loss ℓ w.r.t. every input of the selective scan, given ∂ℓ/∂out. Views are
/// logical (batch, length, channel, ...) in any memory order, as in SelectiveScanParams. A
/// gradient of an optional forward argument is present exactly when that argument is. Every
/// gradient is overwritten (not accumulated into).
template <class T, class W = accum_t<T>>
struct SelectiveScanBackwardParams {
  // The forward's inputs, as given to the forward.
  TensorView<const T, 3> u;           ///< (batch, L, D)
  TensorView<const T, 3> delta;       ///< (batch, L, D)
  TensorView<const W, 2> A;           ///< (D, N)
  TensorView<const T, 4> B;           ///< (batch, L, G, N)
  TensorView<const T, 4> C;           ///< (batch, L, G, N)
  TensorView<const W, 1> D_skip;      ///< (D) optional
  TensorView<const W, 1> delta_bias;  ///< (D) optional
  TensorView<const T, 3> z;           ///< (batch, L, D) optional
  TensorView<const W, 3> h0;          ///< (batch, D, N) optional
  bool delta_softplus = false;
  /// Optional: the forward's checkpoints on these inputs (SelectiveScanParams::checkpoints) and
  /// their interval. The backward then starts each chunk from them instead of recomputing them
  /// (trusting them: other states give the gradients of another forward). The CUDA backward needs
  /// checkpoint_interval = selective_scan_checkpoint_interval(N) or
  /// kSelectiveScanFineCheckpointInterval; the CPU one takes any interval as its chunk length.
  TensorView<const W, 4> checkpoints;
  Index checkpoint_interval = 0;

  // Incoming gradients.
  TensorView<const T, 3> dout;      ///< (batch, L, D) ∂ℓ/∂out
  TensorView<const W, 3> dh_final;  ///< (batch, D, N) optional ∂ℓ/∂h_L (absent: h_L unused)

  // Outgoing gradients.
  TensorView<T, 3> du;           ///< (batch, L, D)
  TensorView<T, 3> ddelta;       ///< (batch, L, D) w.r.t. δ before bias and softplus
  TensorView<W, 2> dA;           ///< (D, N)
  TensorView<T, 4> dB;           ///< (batch, L, G, N)
  TensorView<T, 4> dC;           ///< (batch, L, G, N)
  TensorView<W, 1> dD_skip;      ///< (D) iff D_skip
  TensorView<W, 1> ddelta_bias;  ///< (D) iff delta_bias
  TensorView<T, 3> dz;           ///< (batch, L, D) iff z
  TensorView<W, 3> dh0;          ///< (batch, D, N) iff h0

  Index batch() const { return u.size(0); }
  Index length() const { return u.size(1); }
  Index channels() const { return u.size(2); }
  Index state_size() const { return A.size(1); }
  Index groups() const { return B.size(2); }

  /// The forward call on the same inputs, writing `out` (and `h_final` when given): what a caller
  /// runs before the backward, or a test re-runs to differentiate numerically.
  SelectiveScanParams<T, W> forward(TensorView<T, 3> out, TensorView<W, 3> h_final = {}) const {
    SelectiveScanParams<T, W> f;
    f.u = u;
    f.delta = delta;
    f.A = A;
    f.B = B;
    f.C = C;
    f.D_skip = D_skip;
    f.delta_bias = delta_bias;
    f.z = z;
    f.h0 = h0;
    f.out = out;
    f.h_final = h_final;
    f.delta_softplus = delta_softplus;
    return f;
  }
};

namespace detail {

/// A gradient must be present exactly when its forward argument is, and then have its shape.
template <class G, class X, class Shp>
void check_gradient(const G& grad, const char* grad_arg, const X& arg, const char* arg_name,
                    const Shp& shape, Device device) {
  const std::string expected = arg.absent() ? std::string("absent, as ") + arg_name + " is"
                                            : std::string("present, as ") + arg_name + " is";
  SSMKIT_CHECK(grad.absent() == arg.absent(), grad_arg, "presence", expected,
               grad.absent() ? "absent" : "present");
  check_optional(grad, grad_arg, shape, device);
}

/// Every gradient is written while the inputs (the forward's, the checkpoints, dout and
/// dh_final) are still read, by other lanes or chunks: none may overlap an input or another
/// gradient. dB and dC are exempt from each other: they may interleave, as the columns of one
/// x_proj gradient do in a MambaBlock, and are written together after every read. Names both.
template <class T, class W>
void check_scan_backward_overlaps(const SelectiveScanBackwardParams<T, W>& p) {
  const auto du = named(p.du, "du");
  const auto ddelta = named(p.ddelta, "ddelta");
  const auto dA = named(p.dA, "dA");
  const auto dB = named(p.dB, "dB");
  const auto dC = named(p.dC, "dC");
  const auto dD = named(p.dD_skip, "dD_skip");
  const auto dbias = named(p.ddelta_bias, "ddelta_bias");
  const auto dz = named(p.dz, "dz");
  const auto dh0 = named(p.dh0, "dh0");
  // Each output against every input, in order.
  const auto from_inputs = [&](const auto&... outs) {
    (check_disjoint_from(outs, named(p.u, "u"), named(p.delta, "delta"), named(p.A, "A"),
                         named(p.B, "B"), named(p.C, "C"), named(p.D_skip, "D_skip"),
                         named(p.delta_bias, "delta_bias"), named(p.z, "z"), named(p.h0, "h0"),
                         named(p.checkpoints, "checkpoints"), named(p.dout, "dout"),
                         named(p.dh_final, "dh_final")),
     ...);
  };
  from_inputs(du, ddelta, dA, dB, dC, dD, dbias, dz, dh0);
  check_pairwise_disjoint(du, ddelta, dA, dD, dbias, dz, dh0, dB);
  check_disjoint_from(dC, du, ddelta, dA, dD, dbias, dz, dh0);
}

}  // namespace detail

/// Throws ssmkit::Error naming the first argument whose shape, device, presence or value is wrong,
/// or whose memory overlaps another's (detail::check_scan_backward_overlaps): the forward's checks
/// on its inputs, then dout, dh_final and every gradient.
template <class T, class W>
void validate(const SelectiveScanBackwardParams<T, W>& p, Device device) {
  const Index batch = p.u.size(0), L = p.u.size(1), D = p.u.size(2);
  check_shape(p.du, "du", {batch, L, D});
  check_device(p.du, "du", device);
  detail::check_scan_backward_overlaps(p);  // here, or the forward's check names du out
  validate(p.forward(p.du), device);        // the inputs, as the forward sees them
  const Index N = p.A.size(1), G = p.B.size(2);
  check_shape(p.dout, "dout", {batch, L, D});
  check_device(p.dout, "dout", device);
  detail::check_optional(p.dh_final, "dh_final", Shape<3>{batch, D, N}, device);
  check_shape(p.ddelta, "ddelta", {batch, L, D});
  check_device(p.ddelta, "ddelta", device);
  check_shape(p.dA, "dA", {D, N});
  check_device(p.dA, "dA", device);
  check_shape(p.dB, "dB", {batch, L, G, N});
  check_device(p.dB, "dB", device);
  check_shape(p.dC, "dC", {batch, L, G, N});
  check_device(p.dC, "dC", device);
  detail::check_gradient(p.dD_skip, "dD_skip", p.D_skip, "D_skip", Shape<1>{D}, device);
  detail::check_gradient(p.ddelta_bias, "ddelta_bias", p.delta_bias, "delta_bias", Shape<1>{D},
                         device);
  detail::check_gradient(p.dz, "dz", p.z, "z", Shape<3>{batch, L, D}, device);
  detail::check_gradient(p.dh0, "dh0", p.h0, "h0", Shape<3>{batch, D, N}, device);
  detail::check_checkpoints(p.checkpoints, p.checkpoint_interval, batch, L, D, N, device);
}

}  // namespace ssmkit
