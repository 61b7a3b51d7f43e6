// A random selective-scan problem in any storage type and layout, and its fp64 oracle: the
// shared fixture of the S6 tests.
#pragma once

#include "testing.hpp"

#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

#include <optional>

namespace ssmkit::testing {

struct ScanShape {
  Index batch = 2, L = 37, D = 20, N = 16, G = 1;
  bool delta_bias = true, D_skip = true, z = true, h0 = true, h_final = true, softplus = true;
  bool channel_major = false;  // (B, D, L) activations and (B, G, N, L) B/C, as mamba_ssm stores
};

/// Owning storage for a scan in type T; views() gives the params in the chosen layout.
template <class T, class W = accum_t<T>>
struct ScanCase {
  ScanShape s;
  HostTensor<T, 3> u, delta, z, out;  // (B, L, D) or (B, D, L)
  HostTensor<T, 4> Bm, Cm;            // (B, L, G, N) or (B, G, N, L)
  HostTensor<W, 2> A;
  HostTensor<W, 1> D_skip, delta_bias;
  HostTensor<W, 3> h0, h_final;

  ScanCase(const ScanShape& shape, std::uint64_t seed) : s(shape) {
    const Shape<3> act =
        s.channel_major ? Shape<3>{s.batch, s.D, s.L} : Shape<3>{s.batch, s.L, s.D};
    const Shape<4> bc =
        s.channel_major ? Shape<4>{s.batch, s.G, s.N, s.L} : Shape<4>{s.batch, s.L, s.G, s.N};
    u = HostTensor<T, 3>(act), delta = HostTensor<T, 3>(act), z = HostTensor<T, 3>(act);
    out = HostTensor<T, 3>(act);
    Bm = HostTensor<T, 4>(bc), Cm = HostTensor<T, 4>(bc);
    A = HostTensor<W, 2>({s.D, s.N});
    D_skip = HostTensor<W, 1>({s.D}), delta_bias = HostTensor<W, 1>({s.D});
    h0 = HostTensor<W, 3>({s.batch, s.D, s.N}), h_final = HostTensor<W, 3>({s.batch, s.D, s.N});
    fill_random(u, seed + 1);
    // Δ = softplus(δ + bias) around 0.05..1, or δ itself small and positive.
    if (s.softplus)
      fill_random(delta, seed + 2, -2.5, 0.5);
    else
      fill_random(delta, seed + 2, 0.005, 0.3);
    fill_random(z, seed + 3, -3.0, 3.0);
    fill_random(Bm, seed + 4);
    fill_random(Cm, seed + 5);
    fill_random(A, seed + 6, -8.0, -0.1);
    fill_random(D_skip, seed + 7);
    // Without softplus a negative step would make the state grow: keep δ + bias positive.
    fill_random(delta_bias, seed + 8, s.softplus ? -1.0 : 0.0, s.softplus ? 0.0 : 0.2);
    fill_random(h0, seed + 9);
    poison();
  }

  /// Outputs full of NaN, so that an element a kernel does not write fails the comparison.
  void poison() {
    out.fill(static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    h_final.fill(static_cast<W>(std::numeric_limits<float>::quiet_NaN()));
  }

  template <class X>
  TensorView<X, 3> act_view(HostTensor<std::remove_const_t<X>, 3>& t) const {
    auto v = t.view();
    return s.channel_major ? v.transposed(1, 2) : v;
  }
  template <class X>
  TensorView<X, 4> bc_view(HostTensor<std::remove_const_t<X>, 4>& t) const {
    TensorView<X, 4> v = t.view();
    if (!s.channel_major)
      return v;
    // (B, G, N, L) memory as a logical (B, L, G, N) view.
    return TensorView<X, 4>(t.data(), {s.batch, s.L, s.G, s.N},
                            {v.stride(0), v.stride(3), v.stride(1), v.stride(2)}, "bc");
  }

  SelectiveScanParams<T, W> params() {
    SelectiveScanParams<T, W> p;
    p.u = act_view<const T>(u);
    p.delta = act_view<const T>(delta);
    p.A = A.view();
    p.B = bc_view<const T>(Bm);
    p.C = bc_view<const T>(Cm);
    if (s.D_skip)
      p.D_skip = D_skip.view();
    if (s.delta_bias)
      p.delta_bias = delta_bias.view();
    if (s.z)
      p.z = act_view<const T>(z);
    if (s.h0)
      p.h0 = h0.view();
    p.out = act_view<T>(out);
    if (s.h_final)
      p.h_final = h_final.view();
    p.delta_softplus = s.softplus;
    return p;
  }

  /// Every input converted exactly to double, in the same layout.
  ScanCase<double, double> to_double() const {
    ScanCase<double, double> d(s, 0);
    const auto copy = [](const auto& from, auto& to) {
      for (Index i = 0; i < from.numel(); ++i)
        to.data()[i] = static_cast<double>(from.data()[i]);
    };
    copy(u, d.u), copy(delta, d.delta), copy(z, d.z), copy(Bm, d.Bm), copy(Cm, d.Cm);
    copy(A, d.A), copy(D_skip, d.D_skip), copy(delta_bias, d.delta_bias), copy(h0, d.h0);
    return d;
  }
};

/// The fp64 oracle's outputs for a case (its inputs rounded to T first, as the kernel sees them).
struct ScanResult {
  std::vector<double> out, h_final;
};

template <class T, class W>
ScanResult oracle(const ScanCase<T, W>& c) {
  auto d = c.to_double();
  cpu::selective_scan_reference(d.params());
  return {std::vector<double>(d.out.data(), d.out.data() + d.out.numel()),
          std::vector<double>(d.h_final.data(), d.h_final.data() + d.h_final.numel())};
}

}  // namespace ssmkit::testing
