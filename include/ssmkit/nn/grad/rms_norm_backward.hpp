// Gradients of RMSNorm y = w·x·r, r = (mean(x²) + eps)^(-1/2) (nn/rms_norm.hpp): with n = x·r and
// dn = dy·w, dx = r·(dn − n·mean(dn·n)) and dw = Σ_tokens dy·n.
#pragma once

#include "ssmkit/nn/rms_norm.hpp"

#include <cmath>
#include <vector>

namespace ssmkit::nn {

namespace detail {

/// Throws unless the arguments of rms_norm_backward (CPU or CUDA) lie on `device` with its
/// shapes and eps is finite and >= 0.
template <class T>
void check_rms_norm_backward(TensorView<const T, 2> x, TensorView<const T, 1> weight, double eps,
                             TensorView<const T, 2> dy, TensorView<T, 2> dx,
                             TensorView<T, 1> dweight, Device device) {
  const Index tokens = x.size(0), features = x.size(1);
  check_device(x, "x", device);
  check_device(weight, "weight", device);
  check_device(dy, "dy", device);
  check_device(dx, "dx", device);
  check_device(dweight, "dweight", device);
  check_shape(weight, "weight", {features});
  check_shape(dy, "dy", {tokens, features});
  check_shape(dx, "dx", {tokens, features});
  check_shape(dweight, "dweight", {features});
  SSMKIT_CHECK(std::isfinite(eps) && eps >= 0, "eps", "value", "finite and >= 0", eps);
}

}  // namespace detail

/// Given x, weight and dy = ∂ℓ/∂y (tokens, features): writes dx (tokens, features) and dweight
/// (features; added to with `accumulate`). Statistics run in accum_t<T>. dx may be x's or dy's
/// memory (the same view), and must not overlap them otherwise, nor dweight.
template <class T>
void rms_norm_backward(TensorView<const T, 2> x, TensorView<const T, 1> weight, double eps,
                       TensorView<const T, 2> dy, TensorView<T, 2> dx, TensorView<T, 1> dweight,
                       bool accumulate = false) {
  using Acc = accum_t<T>;
  detail::check_rms_norm_backward(x, weight, eps, dy, dx, dweight, Device::CPU);
  // Each row of x and dy is read whole before dx's row is written: dx may be their very
  // memory, but no other overlap; dweight is written last, over nothing dx holds.
  check_disjoint_or_same(dx, "dx", x, "x");
  check_disjoint_or_same(dx, "dx", dy, "dy");
  check_disjoint(dweight, "dweight", dx, "dx");
  const Index tokens = x.size(0), features = x.size(1);
  // dweight sums over tokens: per-token rows in parallel, then a fixed-order sum.
  std::vector<Acc> dw_rows(static_cast<std::size_t>(tokens * features));
  parallel_for(0, tokens, [&](Index t) {
    Acc ss = 0, dot = 0;
    for (Index f = 0; f < features; ++f) {
      const Acc v = static_cast<Acc>(x(t, f));
      ss += v * v;
    }
    const Acc r = Acc(1) / std::sqrt(ss / static_cast<Acc>(features) + static_cast<Acc>(eps));
    Acc* dw = &dw_rows[static_cast<std::size_t>(t * features)];
    for (Index f = 0; f < features; ++f) {
      const Acc n = static_cast<Acc>(x(t, f)) * r, g = static_cast<Acc>(dy(t, f));
      dw[f] = g * n;
      dot += g * static_cast<Acc>(weight(f)) * n;
    }
    const Acc mean = dot / static_cast<Acc>(features);
    for (Index f = 0; f < features; ++f) {
      const Acc n = static_cast<Acc>(x(t, f)) * r;
      dx(t, f) =
          static_cast<T>(r * (static_cast<Acc>(dy(t, f)) * static_cast<Acc>(weight(f)) - n * mean));
    }
  });
  parallel_for(0, features, [&](Index f) {
    Acc sum = accumulate ? static_cast<Acc>(dweight(f)) : Acc(0);
    for (Index t = 0; t < tokens; ++t)
      sum += dw_rows[static_cast<std::size_t>(t * features + f)];
    dweight(f) = static_cast<T>(sum);
  });
}

}  // namespace ssmkit::nn
