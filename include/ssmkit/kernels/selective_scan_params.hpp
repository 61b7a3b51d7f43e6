// The arguments of the S6 selective scan (Mamba, arXiv 2312.00752, Algorithm 2), shared by the CPU
// and CUDA versions, and the validation both run before touching data.
//   Δ = softplus(δ + δ_bias), Ā = exp(Δ·A[d,n]), h = Ā·h + Δ·B[b,t,g,n]·u,
//   y = Σ_n C[b,t,g,n]·h + D[d]·u, out = y·silu(z),   g = d / (D_inner / G).
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <cmath>
#include <string>

namespace ssmkit {

/// Every view is logical (batch, length, channel, ...) whatever its memory order: channel-major
/// (B, D, L) memory is a (B, L, D) view with strides (D·L, 1, L). `T` is the storage type of the
/// activations (u, δ, z, B, C, out); `W` = accum_t<T> holds A, D, δ_bias and the states, as in
/// mamba_ssm, where those stay in float.
template <class T, class W = accum_t<T>>
struct SelectiveScanParams {
  TensorView<const T, 3> u;           ///< (batch, L, D) input
  TensorView<const T, 3> delta;       ///< (batch, L, D) time step before bias and softplus
  TensorView<const W, 2> A;           ///< (D, N) continuous state matrix (diagonal per channel)
  TensorView<const T, 4> B;           ///< (batch, L, G, N) input projection
  TensorView<const T, 4> C;           ///< (batch, L, G, N) output projection
  TensorView<const W, 1> D_skip;      ///< (D) optional skip
  TensorView<const W, 1> delta_bias;  ///< (D) optional
  TensorView<const T, 3> z;           ///< (batch, L, D) optional gate: out = y·silu(z)
  TensorView<const W, 3> h0;          ///< (batch, D, N) optional initial state
  TensorView<T, 3> out;               ///< (batch, L, D) output
  TensorView<W, 3> h_final;           ///< (batch, D, N) optional final state
  /// (ceil(L / checkpoint_interval), batch, D, N) optional: the state entering steps 0, k, 2k, …
  /// (k = checkpoint_interval; h0 or zero first), which a later backward on the same inputs
  /// starts its chunks from instead of recomputing them (see SelectiveScanBackwardParams).
  TensorView<W, 4> checkpoints;
  Index checkpoint_interval = 0;  ///< k, >= 1; read only when checkpoints is present
  bool delta_softplus = false;

  Index batch() const { return u.size(0); }
  Index length() const { return u.size(1); }
  Index channels() const { return u.size(2); }
  Index state_size() const { return A.size(1); }
  Index groups() const { return B.size(2); }
};

/// Largest state size N any backend accepts.
inline constexpr Index kMaxStateSize = 256;

/// The checkpoint interval the CUDA backward starts its chunks at for state size N (its chunk
/// length: 64 steps for N <= 16, halved per doubling of N). Checkpoints taken at this interval by
/// the forward spare the CUDA backward its first two passes. The CUDA forward takes checkpoints
/// at multiples of its tile, 8 steps for N <= 64 and 16 above: for N > 64 only the CPU forward
/// provides them at this interval.
inline constexpr Index selective_scan_checkpoint_interval(Index N) {
  return N <= 16 ? 64 : N <= 32 ? 32 : N <= 64 ? 16 : 8;
}

/// The CUDA backward's sub-chunk length: checkpoints this close (8× as many as at
/// selective_scan_checkpoint_interval for N <= 16) also spare its last pass the walk to each
/// sub-chunk.
inline constexpr Index kSelectiveScanFineCheckpointInterval = 8;

namespace detail {

template <class V, class Shp>
void check_optional(const V& v, const char* arg, const Shp& shape, Device device) {
  if (v.absent())
    return;
  check_shape(v, arg, shape);
  check_device(v, arg, device);
}

template <class W>
void check_finite(const TensorView<const W, 1>& v, const char* arg) {
  if (v.device() != Device::CPU)
    return;  // device data is checked by the kernel's caller
  for (Index i = 0; i < v.size(0); ++i) {
    const double x = static_cast<double>(v(i));
    SSMKIT_CHECK(std::isfinite(x), arg, ("element " + std::to_string(i)).c_str(), "finite", x);
  }
}

/// Optional checkpoints every `interval` steps of (batch, L) sequences of D channels, N states.
template <class V>
void check_checkpoints(const V& checkpoints, Index interval, Index batch, Index L, Index D, Index N,
                       Device device) {
  if (checkpoints.absent())
    return;
  SSMKIT_CHECK(interval >= 1, "checkpoint_interval", "value", ">= 1", interval);
  check_shape(checkpoints, "checkpoints", {(L + interval - 1) / interval, batch, D, N});
  check_device(checkpoints, "checkpoints", device);
}

/// The outputs of a scan (out, h_final, checkpoints) are written while its inputs are still
/// read, by other lanes, blocks or time chunks: none may overlap an input or another output,
/// except h_final over exactly h0 (a state carried in place). Names both arguments.
template <class T, class W>
void check_scan_overlaps(const SelectiveScanParams<T, W>& p) {
  const auto out = named(p.out, "out");
  const auto h_final = named(p.h_final, "h_final");
  const auto checkpoints = named(p.checkpoints, "checkpoints");
  const auto h0 = named(p.h0, "h0");
  // Each output against every input, in order.
  const auto from_inputs = [&](const auto&... outs) {
    (check_disjoint_from(outs, named(p.u, "u"), named(p.delta, "delta"), named(p.A, "A"),
                         named(p.B, "B"), named(p.C, "C"), named(p.D_skip, "D_skip"),
                         named(p.delta_bias, "delta_bias"), named(p.z, "z")),
     ...);
  };
  from_inputs(out, h_final, checkpoints);
  check_disjoint_from(out, h0);
  check_disjoint_from(checkpoints, h0);
  check_disjoint_or_same(p.h_final, "h_final", p.h0, "h0");
  check_pairwise_disjoint(checkpoints, h_final, out);
}

}  // namespace detail

/// Throws ssmkit::Error naming the first argument whose shape, device or value is wrong, or
/// whose memory overlaps another's (detail::check_scan_overlaps).
/// Host-resident A, D and δ_bias are also checked to be finite (and A to be non-positive, as a
/// stable S6 needs); on the device the caller vouches for their values.
template <class T, class W>
void validate(const SelectiveScanParams<T, W>& p, Device device) {
  const Index batch = p.u.size(0), L = p.u.size(1), D = p.u.size(2);
  check_device(p.u, "u", device);
  SSMKIT_CHECK(!p.A.absent(), "A", "presence", "a (D, N) view", "absent");
  const Index N = p.A.size(1);
  SSMKIT_CHECK(N >= 1 && N <= kMaxStateSize, "A", "state size N = size(1)",
               "in [1, " + std::to_string(kMaxStateSize) + "]", N);
  check_shape(p.A, "A", {D, N});
  check_device(p.A, "A", device);
  check_shape(p.delta, "delta", {batch, L, D});
  check_device(p.delta, "delta", device);
  const Index G = p.B.size(2);
  SSMKIT_CHECK(G >= 1 && D % G == 0, "B", "groups G = size(2)",
               "a divisor of D = " + std::to_string(D), G);
  check_shape(p.B, "B", {batch, L, G, N});
  check_device(p.B, "B", device);
  check_shape(p.C, "C", {batch, L, G, N});
  check_device(p.C, "C", device);
  check_shape(p.out, "out", {batch, L, D});
  check_device(p.out, "out", device);
  detail::check_optional(p.D_skip, "D_skip", Shape<1>{D}, device);
  detail::check_optional(p.delta_bias, "delta_bias", Shape<1>{D}, device);
  detail::check_optional(p.z, "z", Shape<3>{batch, L, D}, device);
  detail::check_optional(p.h0, "h0", Shape<3>{batch, D, N}, device);
  detail::check_optional(p.h_final, "h_final", Shape<3>{batch, D, N}, device);
  detail::check_checkpoints(p.checkpoints, p.checkpoint_interval, batch, L, D, N, device);
  detail::check_scan_overlaps(p);
  if (device == Device::CPU) {
    for (Index d = 0; d < D; ++d)
      for (Index n = 0; n < N; ++n) {
        const double a = static_cast<double>(p.A(d, n));
        SSMKIT_CHECK(std::isfinite(a) && a <= 0, "A",
                     ("element (" + std::to_string(d) + ", " + std::to_string(n) + ")").c_str(),
                     "finite and <= 0", a);
      }
    if (!p.D_skip.absent())
      detail::check_finite(p.D_skip, "D_skip");
    if (!p.delta_bias.absent())
      detail::check_finite(p.delta_bias, "delta_bias");
  }
}

}  // namespace ssmkit
