// Elementwise activations of Mamba: softplus (PyTorch's F.softplus with beta 1 and threshold 20:
// the identity above 20) and SiLU x·σ(x), written to stay finite for every finite input.
#pragma once

#include <cmath>
#include <type_traits>

namespace ssmkit {

/// log(1 + e^x), or x itself when x > 20 (PyTorch's convention, which mamba_ssm's kernels follow).
template <class F>
inline F softplus(F x) {
  static_assert(std::is_floating_point_v<F>, "softplus takes float or double");
  return x > F(20) ? x : std::log1p(std::exp(x));
}

/// 1 / (1 + e^-x), evaluated through e^-|x| so that no exponential overflows.
template <class F>
inline F sigmoid(F x) {
  static_assert(std::is_floating_point_v<F>, "sigmoid takes float or double");
  const F e = std::exp(-std::abs(x));
  return x >= F(0) ? F(1) / (F(1) + e) : e / (F(1) + e);
}

/// x·σ(x) (also called swish).
template <class F>
inline F silu(F x) {
  return x * sigmoid(x);
}

}  // namespace ssmkit
