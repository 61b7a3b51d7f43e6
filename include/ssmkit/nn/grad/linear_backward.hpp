// Gradients of y = x·Wᵀ + b (nn/linear.hpp, torch.nn.Linear's convention):
// dx = dy·W, dW = dyᵀ·x, db = Σ_tokens dy.
#pragma once

#include "ssmkit/nn/linear.hpp"

#include <type_traits>

namespace ssmkit::nn {

namespace detail {

/// Throws unless the arguments of linear_backward (CPU or CUDA) have its shapes and dbias lies on
/// `device`; `rows(view, name)` checks a matrix's device and row layout.
template <class T, class CheckRows>
void check_linear_backward(TensorView<const T, 2> x, TensorView<const T, 2> weight,
                           TensorView<const T, 2> dy, TensorView<T, 2> dx, TensorView<T, 2> dweight,
                           TensorView<T, 1> dbias, Device device, const CheckRows& rows) {
  rows(x, "x");
  rows(weight, "weight");
  rows(dy, "dy");
  rows(dweight, "dweight");
  const Index tokens = x.size(0), in = x.size(1), out = weight.size(0);
  check_shape(weight, "weight", {out, in});
  check_shape(dy, "dy", {tokens, out});
  check_shape(dweight, "dweight", {out, in});
  // The gradients are written while the inputs are still to be read (dx reads weight after
  // dweight and dbias are written): only dx over x is safe.
  check_disjoint(dweight, "dweight", x, "x");
  check_disjoint(dweight, "dweight", weight, "weight");
  check_disjoint(dweight, "dweight", dy, "dy");
  if (!dx.absent()) {
    rows(dx, "dx");
    check_shape(dx, "dx", {tokens, in});
    check_disjoint(dx, "dx", dy, "dy");
    check_disjoint(dx, "dx", weight, "weight");
    check_disjoint(dx, "dx", dweight, "dweight");
  }
  if (!dbias.absent()) {
    check_device(dbias, "dbias", device);
    check_shape(dbias, "dbias", {out});
    check_disjoint(dbias, "dbias", weight, "weight");
    check_disjoint(dbias, "dbias", dy, "dy");
    check_disjoint(dbias, "dbias", dweight, "dweight");
    if (!dx.absent())
      check_disjoint(dx, "dx", dbias, "dbias");
  }
}

}  // namespace detail

/// Given x (tokens, in), weight (out, in) and dy = ∂ℓ/∂y (tokens, out): writes dx (tokens, in)
/// unless absent, and dweight (out, in) and dbias (out, unless absent). With `accumulate` the
/// parameter gradients are added to (a weight used twice, as a tied embedding is); dx is always
/// overwritten. dx may be x's memory (it is written last); no other output may overlap an input or
/// another output.
template <class T>
void linear_backward(TensorView<const T, 2> x, TensorView<const T, 2> weight,
                     TensorView<const T, 2> dy, TensorView<T, 2> dx, TensorView<T, 2> dweight,
                     TensorView<T, 1> dbias, bool accumulate = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "nn::linear_backward runs on float or double");
  detail::check_linear_backward(x, weight, dy, dx, dweight, dbias, Device::CPU,
                                [](const auto& v, const char* arg) { detail::check_rows(v, arg); });
  const Index in = x.size(1);
  const auto X = detail::rows_map(x);
  const auto Wt = detail::rows_map(weight);
  const auto dY = detail::rows_map(dy);
  auto dW = detail::rows_map(dweight);
  if (accumulate)
    dW.noalias() += dY.transpose() * X;
  else
    dW.noalias() = dY.transpose() * X;
  if (!dbias.absent()) {
    auto db = as_eigen(dbias);
    if (accumulate)
      db += dY.colwise().sum().transpose();
    else
      db = dY.colwise().sum().transpose();
  }
  if (!dx.absent()) {  // last: dx may be x, which dW has read
    auto dX = detail::rows_map(dx);
    if (in > 0)
      dX.noalias() = dY * Wt;
  }
}

}  // namespace ssmkit::nn
