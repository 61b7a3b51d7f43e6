// The S6 selective scan (Mamba, arXiv 2312.00752, Algorithm 2) as a plain sequential loop in
// double: the oracle every other backend is tested against. It favours clarity over speed.
#pragma once

#include "ssmkit/kernels/selective_scan_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <cmath>
#include <vector>

namespace ssmkit::cpu {

/// Computes p.out (and p.h_final and p.checkpoints when present) from the other views of `p`,
/// reading any storage type and rounding only the stored results. Throws ssmkit::Error for invalid
/// arguments. h0 and h_final may be the same memory (a state carried in place from one call to the
/// next).
template <class T, class W>
void selective_scan_reference(const SelectiveScanParams<T, W>& p) {
  validate(p, Device::CPU);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index channels_per_group = D / p.groups();
  std::vector<double> h(static_cast<std::size_t>(N));
  for (Index b = 0; b < batch; ++b) {
    for (Index d = 0; d < D; ++d) {
      const Index g = d / channels_per_group;
      for (Index n = 0; n < N; ++n)
        h[n] = p.h0.absent() ? 0.0 : static_cast<double>(p.h0(b, d, n));
      const double bias = p.delta_bias.absent() ? 0.0 : static_cast<double>(p.delta_bias(d));
      for (Index t = 0; t < L; ++t) {
        if (!p.checkpoints.absent() && t % p.checkpoint_interval == 0)
          for (Index n = 0; n < N; ++n)
            p.checkpoints(t / p.checkpoint_interval, b, d, n) = static_cast<W>(h[n]);
        double dt = static_cast<double>(p.delta(b, t, d)) + bias;
        if (p.delta_softplus)
          dt = softplus(dt);
        const double u = static_cast<double>(p.u(b, t, d));
        double y = 0;
        for (Index n = 0; n < N; ++n) {
          const double a_bar = std::exp(dt * static_cast<double>(p.A(d, n)));
          h[n] = a_bar * h[n] + dt * static_cast<double>(p.B(b, t, g, n)) * u;
          y += static_cast<double>(p.C(b, t, g, n)) * h[n];
        }
        if (!p.D_skip.absent())
          y += static_cast<double>(p.D_skip(d)) * u;
        if (!p.z.absent())
          y *= silu(static_cast<double>(p.z(b, t, d)));
        p.out(b, t, d) = static_cast<T>(y);
      }
      if (!p.h_final.absent())
        for (Index n = 0; n < N; ++n)
          p.h_final(b, d, n) = static_cast<W>(h[n]);
    }
  }
}

}  // namespace ssmkit::cpu
