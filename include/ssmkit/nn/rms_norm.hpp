// RMSNorm (Zhang & Sennrich, arXiv 1910.07467), as HF's MambaRMSNorm computes it:
// y = w · (x / sqrt(mean(x²) + eps)) over the feature dimension, in the accumulate type.
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <cmath>

namespace ssmkit::nn {

/// y (tokens, features) = RMSNorm(x) · weight. `x` may be wider than `T` (the fp32/fp64 residual
/// stream of the Mamba LM); the statistics run in accum_t<T>, the result is rounded to T as HF
/// does before it multiplies by the weight.
template <class X, class T>
void rms_norm(TensorView<const X, 2> x, TensorView<const T, 1> weight, double eps,
              TensorView<T, 2> y) {
  using Acc = accum_t<T>;
  check_device(x, "x", Device::CPU);
  check_device(weight, "weight", Device::CPU);
  check_device(y, "y", Device::CPU);
  const Index tokens = x.size(0), features = x.size(1);
  check_shape(weight, "weight", {features});
  check_shape(y, "y", {tokens, features});
  SSMKIT_CHECK(std::isfinite(eps) && eps >= 0, "eps", "value", "finite and >= 0", eps);
  auto row = [&](Index t) {
    Acc ss = 0;
    for (Index f = 0; f < features; ++f) {
      const Acc v = static_cast<Acc>(x(t, f));
      ss += v * v;
    }
    const Acc r = Acc(1) / std::sqrt(ss / static_cast<Acc>(features) + static_cast<Acc>(eps));
    for (Index f = 0; f < features; ++f)
      y(t, f) = convert<T>(static_cast<Acc>(weight(f)) *
                           static_cast<Acc>(convert<T>(static_cast<Acc>(x(t, f)) * r)));
  };
  // One token (decoding) is too little work to wake the other threads for.
  if (tokens * features < (Index{1} << 15)) {
    for (Index t = 0; t < tokens; ++t)
      row(t);
  } else {
    parallel_for(0, tokens, row);
  }
}

/// An RMSNorm layer: its weight (features) and epsilon.
template <class T>
struct RMSNorm {
  HostTensor<T, 1> weight;
  double eps = 1e-5;

  template <class X>
  void forward(TensorView<const X, 2> x, TensorView<T, 2> y) const {
    rms_norm<X, T>(x, weight.view(), eps, y);
  }
};

}  // namespace ssmkit::nn
