// The host side of the S4 CUDA tests (see s4_reference.hpp).
#include "s4_reference.hpp"

#include <ssmkit/math/nplr.hpp>
#include <ssmkit/math/s4d_init.hpp>

#include "testing.hpp"

#include <cmath>

namespace ssmkit::testing {

using cd = std::complex<double>;

cpu::DiagonalSsm<double> S4System::diagonal() const {
  return {TensorView<const cd, 2>(Lambda.data(), {H, M}), TensorView<const cd, 2>(B.data(), {H, M}),
          TensorView<const cd, 2>(C.data(), {H, M}), TensorView<const double, 1>(dt.data(), {H})};
}

cpu::DplrSsm<double> S4System::dplr() const {
  return {TensorView<const cd, 2>(Lambda.data(), {H, M}),
          TensorView<const cd, 3>(P.data(), {H, M, R}), TensorView<const cd, 2>(B.data(), {H, M}),
          TensorView<const cd, 2>(C.data(), {H, M}), TensorView<const double, 1>(dt.data(), {H})};
}

namespace {

double round_float(double x) {
  volatile float r = static_cast<float>(x);  // volatile: the round trip must not fold away
  return r;
}

}  // namespace

S4System make_s4_system(Index H, Index M, Index R, bool structured, double dt_lo, double dt_hi,
                        std::uint64_t seed, bool to_float) {
  S4System s;
  s.H = H;
  s.M = M;
  s.R = R;
  const auto v = random_vector<double>(std::size_t(8 * H * M * (R + 1) + H), seed);
  math::CVector<double> lam, b;
  math::CMatrix<double> p;
  if (structured && R > 0) {
    SSMKIT_CHECK(R == 1, "R", "rank of LegS", 1, R);
    const auto d = math::dplr<double>(math::Measure::LegS, 2 * M);
    lam = d.Lambda;
    b = d.B;
    p = d.P;
  } else if (structured) {
    const auto d = math::s4d_init<double>(math::S4DInit::Lin, 2 * M);
    lam = d.Lambda;
    b = d.B;
  }
  auto r = [&](cd x) { return to_float ? cd(round_float(x.real()), round_float(x.imag())) : x; };
  std::size_t k = 0;
  for (Index h = 0; h < H; ++h) {
    for (Index n = 0; n < M; ++n, k += 6) {
      s.Lambda.push_back(r(structured ? lam(n) : cd(-0.05 - 0.95 * std::abs(v[k]), 20 * v[k + 1])));
      s.B.push_back(r(structured ? b(n) : cd(v[k + 2], v[k + 3])));
      s.C.push_back(r(cd(v[k + 4], v[k + 5])));
      for (Index j = 0; j < R; ++j, k += 2)
        s.P.push_back(r(structured ? p(n, j) : cd(0.7 * v[k], 0.7 * v[k + 1])));
    }
    const double w = std::abs(v[k++]);
    const double dt = std::exp(std::log(dt_lo) + w * (std::log(dt_hi) - std::log(dt_lo)));
    s.dt.push_back(to_float ? round_float(dt) : dt);
  }
  return s;
}

void reference_vandermonde(const S4System& s, math::Discretization method,
                           const TensorView<double, 2>& K) {
  cpu::ssm_kernel_vandermonde(s.diagonal(), method, K);
}

void reference_c_tilde(S4System& s, Index L) {
  std::vector<cd> ct(s.C.size());
  cpu::dplr_c_tilde(s.dplr(), L, TensorView<cd, 2>(ct.data(), {s.H, s.M}));
  s.C = ct;
}

void reference_dplr(const S4System& s, const TensorView<double, 2>& K) {
  cpu::ssm_kernel_dplr(s.dplr(), K);
}

void reference_fft_conv(const cpu::FftConvParams<double>& p) {
  cpu::fft_conv(p);
}

}  // namespace ssmkit::testing
