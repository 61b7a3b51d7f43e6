// y = x·Wᵀ + b over token-major (tokens, features) views: the projections of the nn modules
// (torch.nn.Linear's convention, W is (out_features, in_features)).
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>

namespace ssmkit::nn {

namespace detail {

/// Row-major Eigen map of a view whose last dimension is contiguous; a compile-time unit inner
/// stride is what lets Eigen use its GEMM/GEMV kernels without copying.
template <class T>
auto rows_map(const TensorView<T, 2>& v) {
  using Scalar = std::remove_cv_t<T>;
  using M = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapType = std::conditional_t<std::is_const_v<T>, const M, M>;
  return Eigen::Map<MapType, Eigen::Unaligned, Eigen::OuterStride<>>(
      v.data(), v.size(0), v.size(1), Eigen::OuterStride<>(std::max<Index>(v.stride(0), 1)));
}

template <class T>
void check_rows(const TensorView<T, 2>& v, const char* arg) {
  check_device(v, arg, Device::CPU);
  SSMKIT_CHECK(v.size(1) <= 1 || v.stride(1) == 1, arg, "stride[1]", "1 (features contiguous)",
               v.stride(1));
}

}  // namespace detail

/// y (tokens, out) = x (tokens, in) · weightᵀ (+ bias (out), optional: pass an absent view).
/// y must not overlap x (it is written while x is read).
/// Threads split the output features, so that each reads only its share of the weight: at one
/// token (decoding) the product is a matrix-vector one bound by reading the weight.
template <class T>
void linear(TensorView<const T, 2> x, TensorView<const T, 2> weight, TensorView<const T, 1> bias,
            TensorView<T, 2> y) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "nn::linear runs on float or double");
  detail::check_rows(x, "x");
  detail::check_rows(weight, "weight");
  detail::check_rows(y, "y");
  const Index tokens = x.size(0), in = x.size(1), out = weight.size(0);
  check_shape(weight, "weight", {out, in});
  check_shape(y, "y", {tokens, out});
  check_disjoint(y, "y", x, "x");
  if (!bias.absent()) {
    check_shape(bias, "bias", {out});
    check_device(bias, "bias", Device::CPU);
  }
  if (tokens == 0 || out == 0)
    return;
  // Column blocks of at least 64 features, a multiple of 16 (whole SIMD registers), and of at
  // least 2^16 multiply-adds: below that, waking threads costs more than it saves.
  const Index work = tokens * in * out;
  const Index chunks = std::max<Index>(1, std::min({Index{max_threads()}, out / 64, work >> 16}));
  const Index per = (out + chunks - 1) / chunks;
  const Index width = (per + 15) / 16 * 16;
  const auto X = detail::rows_map(x);
  const auto Wt = detail::rows_map(weight);
  auto Y = detail::rows_map(y);
  const auto b = as_eigen(bias);
  parallel_for(0, chunks, [&](Index c) {
    const Index j0 = std::min(out, c * width), n = std::min(out, j0 + width) - j0;
    if (n <= 0)
      return;
    auto Yc = Y.middleCols(j0, n);
    Yc.noalias() = X * Wt.middleRows(j0, n).transpose();
    if (!bias.absent())
      Yc.rowwise() += b.segment(j0, n).transpose();
  });
}

}  // namespace ssmkit::nn
