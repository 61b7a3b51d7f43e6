// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_: with
// total = ‖(g_1, …, g_k)‖₂, every g_i is scaled by min(1, max_norm / (total + 1e-6)).
#pragma once

#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace ssmkit::optim {

/// Scales the gradients in place when their global norm exceeds max_norm; returns that norm
/// (before clipping), summed in double. A NaN norm makes every gradient NaN, as in PyTorch.
template <class T>
double clip_grad_norm(const std::vector<TensorView<T, 1>>& grads, double max_norm) {
  SSMKIT_CHECK(std::isfinite(max_norm) && max_norm > 0, "max_norm", "value", "finite and > 0",
               max_norm);
  double ss = 0;
  for (const auto& g : grads) {
    check_device(g, "grads", Device::CPU);
    for (Index i = 0; i < g.size(0); ++i) {
      const double x = static_cast<double>(g(i));
      ss += x * x;
    }
  }
  const double total = std::sqrt(ss);
  // torch.clamp(coef, max=1) keeps a NaN (a NaN gradient): every gradient becomes NaN, as there.
  const double raw = max_norm / (total + 1e-6);
  const double coef = std::isnan(raw) ? raw : std::min(1.0, raw);
  if (!(coef >= 1.0))
    for (const auto& g : grads)
      for (Index i = 0; i < g.size(0); ++i)
        g(i) = static_cast<T>(static_cast<double>(g(i)) * coef);
  return total;
}

}  // namespace ssmkit::optim
