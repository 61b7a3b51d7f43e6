// The S6 selective scan's backward pass (reverse-mode derivative of Mamba's Algorithm 2, arXiv
// 2312.00752) as a plain sequential loop in double that keeps every state: the oracle of the fast
// CPU and CUDA backwards. It favours clarity over speed and memory.
#pragma once

#include "ssmkit/kernels/selective_scan_backward_params.hpp"
#include "ssmkit/math/activations.hpp"

#include <cmath>
#include <vector>

namespace ssmkit::cpu {

/// Computes every gradient view of `p` from the forward inputs, dout and dh_final, in double,
/// rounding only the stored results. Throws ssmkit::Error for invalid arguments.
template <class T, class W>
void selective_scan_backward_reference(const SelectiveScanBackwardParams<T, W>& p) {
  validate(p, Device::CPU);
  const Index batch = p.batch(), L = p.length(), D = p.channels(), N = p.state_size();
  const Index G = p.groups(), channels_per_group = D / G;
  auto at = [](Index i) { return static_cast<std::size_t>(i); };
  // Shared by all channels of a group (dB, dC) or all batches (dA, dD, dδ_bias): summed here.
  std::vector<double> dB(at(batch * L * G * N)), dC(at(batch * L * G * N)), dA(at(D * N));
  std::vector<double> dD(at(D)), dbias(at(D));
  std::vector<double> dt(at(L)), y(at(L)), a_bar(at(L * N)), h(at((L + 1) * N)), gh(at(N));

  for (Index b = 0; b < batch; ++b) {
    for (Index d = 0; d < D; ++d) {
      const Index g = d / channels_per_group;
      const double bias = p.delta_bias.absent() ? 0.0 : static_cast<double>(p.delta_bias(d));
      const double skip = p.D_skip.absent() ? 0.0 : static_cast<double>(p.D_skip(d));
      // Forward, keeping h_t for t = -1..L-1 at rows 0..L.
      for (Index n = 0; n < N; ++n)
        h[at(n)] = p.h0.absent() ? 0.0 : static_cast<double>(p.h0(b, d, n));
      for (Index t = 0; t < L; ++t) {
        const double raw = static_cast<double>(p.delta(b, t, d)) + bias;
        dt[at(t)] = p.delta_softplus ? softplus(raw) : raw;
        const double u = static_cast<double>(p.u(b, t, d));
        double yt = skip * u;
        for (Index n = 0; n < N; ++n) {
          const double a = std::exp(dt[at(t)] * static_cast<double>(p.A(d, n)));
          a_bar[at(t * N + n)] = a;
          h[at((t + 1) * N + n)] =
              a * h[at(t * N + n)] + dt[at(t)] * static_cast<double>(p.B(b, t, g, n)) * u;
          yt += static_cast<double>(p.C(b, t, g, n)) * h[at((t + 1) * N + n)];
        }
        y[at(t)] = yt;
      }
      // Reverse: gh holds ∂ℓ/∂h_t, taking ∂ℓ/∂h_L = dh_final.
      for (Index n = 0; n < N; ++n)
        gh[at(n)] = p.dh_final.absent() ? 0.0 : static_cast<double>(p.dh_final(b, d, n));
      for (Index t = L - 1; t >= 0; --t) {
        const double u = static_cast<double>(p.u(b, t, d));
        const double dout = static_cast<double>(p.dout(b, t, d));
        double dy = dout;
        if (!p.z.absent()) {
          const double z = static_cast<double>(p.z(b, t, d)), s = sigmoid(z);
          dy = dout * z * s;
          p.dz(b, t, d) = static_cast<T>(dout * y[at(t)] * s * (1 + z * (1 - s)));
        }
        double du = dy * skip, ddt = 0;
        dD[at(d)] += dy * u;
        for (Index n = 0; n < N; ++n) {
          const double A = static_cast<double>(p.A(d, n)),
                       Bv = static_cast<double>(p.B(b, t, g, n));
          const double a = a_bar[at(t * N + n)], h_prev = h[at(t * N + n)];
          gh[at(n)] += dy * static_cast<double>(p.C(b, t, g, n));
          const double g_h = gh[at(n)];
          dC[at(((b * L + t) * G + g) * N + n)] += dy * h[at((t + 1) * N + n)];
          dB[at(((b * L + t) * G + g) * N + n)] += g_h * dt[at(t)] * u;
          ddt += g_h * (a * h_prev * A + Bv * u);
          dA[at(d * N + n)] += g_h * a * h_prev * dt[at(t)];
          du += g_h * dt[at(t)] * Bv;
          gh[at(n)] = g_h * a;  // ∂ℓ/∂h_{t-1}
        }
        const double raw = static_cast<double>(p.delta(b, t, d)) + bias;
        const double draw = p.delta_softplus ? (raw > 20 ? ddt : ddt * sigmoid(raw)) : ddt;
        dbias[at(d)] += draw;
        p.du(b, t, d) = static_cast<T>(du);
        p.ddelta(b, t, d) = static_cast<T>(draw);
      }
      if (!p.dh0.absent())
        for (Index n = 0; n < N; ++n)
          p.dh0(b, d, n) = static_cast<W>(gh[at(n)]);
    }
  }
  for (Index b = 0; b < batch; ++b)
    for (Index t = 0; t < L; ++t)
      for (Index g = 0; g < G; ++g)
        for (Index n = 0; n < N; ++n) {
          p.dB(b, t, g, n) = static_cast<T>(dB[at(((b * L + t) * G + g) * N + n)]);
          p.dC(b, t, g, n) = static_cast<T>(dC[at(((b * L + t) * G + g) * N + n)]);
        }
  for (Index d = 0; d < D; ++d) {
    for (Index n = 0; n < N; ++n)
      p.dA(d, n) = static_cast<W>(dA[at(d * N + n)]);
    if (!p.dD_skip.absent())
      p.dD_skip(d) = static_cast<W>(dD[at(d)]);
    if (!p.ddelta_bias.absent())
      p.ddelta_bias(d) = static_cast<W>(dbias[at(d)]);
  }
}

}  // namespace ssmkit::cpu
