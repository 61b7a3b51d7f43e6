// The oracle and the fast scan against PyTorch float64 goldens of mamba_ssm's selective_scan_ref,
// read in mamba_ssm's channel-major layout: (B, D, L) activations and (B, G, N, L) B and C.
#include "golden.hpp"

#include <ssmkit/kernels/cpu/selective_scan.hpp>
#include <ssmkit/kernels/cpu/selective_scan_reference.hpp>

namespace ssmkit {
namespace {

using testing::Golden;
using testing::rel_error;

template <class T>
struct GoldenScan {
  using W = accum_t<T>;
  HostTensor<T, 3> u, delta, z, out;
  HostTensor<T, 4> B, C;
  HostTensor<W, 2> A;
  HostTensor<W, 1> D, delta_bias;
  HostTensor<W, 3> h0, h_final;
  SelectiveScanParams<T> p;

  explicit GoldenScan(const Golden& g) {
    const auto act = [](HostTensor<T, 3>& t) { return t.view().transposed(1, 2); };  // (B, L, D)
    const auto bc = [](HostTensor<T, 4>& t) {  // (B, G, N, L) memory as (B, L, G, N)
      return TensorView<const T, 4>(
          t.data(), {t.size(0), t.size(3), t.size(1), t.size(2)},
          {t.size(1) * t.size(2) * t.size(3), 1, t.size(2) * t.size(3), t.size(3)});
    };
    u = g.tensor<T, 3>("u"), delta = g.tensor<T, 3>("delta"), A = g.tensor<W, 2>("A");
    B = g.tensor<T, 4>("B"), C = g.tensor<T, 4>("C");
    out = HostTensor<T, 3>(u.shape());
    out.fill(static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    h_final = HostTensor<W, 3>({u.size(0), u.size(1), A.size(1)});
    h_final.fill(static_cast<W>(std::numeric_limits<float>::quiet_NaN()));
    p.u = act(u), p.delta = act(delta), p.A = A, p.B = bc(B), p.C = bc(C), p.out = act(out);
    p.h_final = h_final;
    p.delta_softplus = g.options.at("delta_softplus") != 0;
    if (g.has("D"))
      D = g.tensor<W, 1>("D"), p.D_skip = D;
    if (g.has("delta_bias"))
      delta_bias = g.tensor<W, 1>("delta_bias"), p.delta_bias = delta_bias;
    if (g.has("z"))
      z = g.tensor<T, 3>("z"), p.z = act(z);
    if (g.has("h0"))
      h0 = g.tensor<W, 3>("h0"), p.h0 = h0;
  }

  void expect_near(const Golden& g, double tol) const {
    EXPECT_LE(rel_error(out.data(), g.values.at("out").data(), out.numel()), tol);
    EXPECT_LE(rel_error(h_final.data(), g.values.at("h_final").data(), h_final.numel()), tol);
  }
};

class ScanGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ScanGolden, OracleMatchesTorch) {
  const Golden g = testing::load_golden(GetParam());
  GoldenScan<double> s(g);
  cpu::selective_scan_reference(s.p);
  s.expect_near(g, 1e-12);
}

TEST_P(ScanGolden, FastPathMatchesTorch) {
  const Golden g = testing::load_golden(GetParam());
  GoldenScan<double> d(g);
  cpu::selective_scan(d.p);
  d.expect_near(g, 1e-12);
  GoldenScan<float> f(g);  // inputs rounded to float: the float error bound covers that too
  cpu::selective_scan(f.p);
  f.expect_near(g, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(S6, ScanGolden, ::testing::Values("scan_full", "scan_plain", "scan_n64"));

}  // namespace
}  // namespace ssmkit
