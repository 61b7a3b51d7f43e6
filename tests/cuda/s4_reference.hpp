// The host side of the S4 CUDA tests, compiled by the C++ compiler (Eigen's matrix functions
// and eigensolvers do not go through nvcc): test systems and the CPU double references.
#pragma once

#include <ssmkit/kernels/cpu/fft_conv.hpp>
#include <ssmkit/kernels/cpu/ssm_kernel_dplr.hpp>
#include <ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp>

#include <complex>
#include <cstdint>
#include <vector>

namespace ssmkit::testing {

/// H channels of M modes and rank R (row-major (H, M), (H, M, R), (H)), in double.
struct S4System {
  Index H = 0, M = 0, R = 0;
  std::vector<std::complex<double>> Lambda, B, C, P;
  std::vector<double> dt;

  cpu::DiagonalSsm<double> diagonal() const;
  cpu::DplrSsm<double> dplr() const;
};

/// S4D-Lin modes (R = 0) or LegS's DPLR form (R = 1) when `structured`, else random stable
/// modes (Re in [-1, -0.05], Im in [-20, 20]) and random P; random C; dt log-uniform in
/// [dt_lo, dt_hi]. With `to_float` every value is rounded to float (what a float kernel sees).
S4System make_s4_system(Index H, Index M, Index R, bool structured, double dt_lo, double dt_hi,
                        std::uint64_t seed, bool to_float);

void reference_vandermonde(const S4System& s, math::Discretization method,
                           const TensorView<double, 2>& K);
/// C~ for L taps, in place of s.C.
void reference_c_tilde(S4System& s, Index L);
void reference_dplr(const S4System& s, const TensorView<double, 2>& K);
void reference_fft_conv(const cpu::FftConvParams<double>& p);

}  // namespace ssmkit::testing
