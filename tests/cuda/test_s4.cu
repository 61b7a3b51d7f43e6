// S4 on the GPU against the CPU in double: Vandermonde and DPLR kernels (parameters rounded to
// the GPU's T first, so both sides see the same system), the cuFFT convolution against
// cpu::fft_conv and the direct O(L^2) sum in both layouts, long lengths, plan reuse, bad inputs.
#include "cuda_testing.hpp"

#include "s4_reference.hpp"

#include <ssmkit/kernels/cuda/fft_conv.cuh>
#include <ssmkit/kernels/cuda/ssm_kernel_dplr.cuh>
#include <ssmkit/kernels/cuda/ssm_kernel_vandermonde.cuh>

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <vector>

namespace {

using namespace ssmkit;
using math::Discretization;
using ssmkit::testing::rel_error;
using ssmkit::testing::S4System;
using ssmkit::testing::TestStream;
using cd = std::complex<double>;

/// A host vector and its device copy (element type X, any of T or std::complex<T>).
template <class X>
struct Dev {
  std::vector<X> host;
  cuda::DeviceBuffer<X> dev;
  Dev(std::vector<X> h, cudaStream_t s) : host(std::move(h)), dev(Index(host.size())) {
    if (!host.empty())
      dev.copy_from_host_async(host.data(), Index(host.size()), s);
  }
  template <int Rank>
  TensorView<const X, Rank> view(const Shape<Rank>& shape) {
    return dev.template view<Rank>(shape);
  }
};

template <class T>
std::complex<T> round_to(cd x) {
  volatile T re = T(x.real()), im = T(x.imag());  // volatile: no folding of the round trip
  return {re, im};
}

template <class T>
std::vector<std::complex<T>> to(const std::vector<cd>& x) {
  return std::vector<std::complex<T>>(x.begin(), x.end());
}
template <class T>
std::vector<T> to(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

template <class T>
S4System make_system(Index H, Index M, Index R, bool structured, double dt_lo, double dt_hi,
                     std::uint64_t seed) {
  return ssmkit::testing::make_s4_system(H, M, R, structured, dt_lo, dt_hi, seed,
                                         std::is_same_v<T, float>);
}

/// The system's parameters on the device in T.
template <class T>
struct DeviceSystem {
  Dev<std::complex<T>> Lambda, B, C, P;
  Dev<T> dt;
  Index H, M, R;
  DeviceSystem(const S4System& s, cudaStream_t st)
      : Lambda(to<T>(s.Lambda), st),
        B(to<T>(s.B), st),
        C(to<T>(s.C), st),
        P(to<T>(s.P), st),
        dt(to<T>(s.dt), st),
        H(s.H),
        M(s.M),
        R(s.R) {}
  cpu::DiagonalSsm<T> diagonal() {
    return {Lambda.template view<2>({H, M}), B.template view<2>({H, M}), C.template view<2>({H, M}),
            dt.template view<1>({H})};
  }
  cpu::DplrSsm<T> dplr() {
    return {Lambda.template view<2>({H, M}), P.template view<3>({H, M, R}),
            B.template view<2>({H, M}), C.template view<2>({H, M}), dt.template view<1>({H})};
  }
};

/// A device K of (H, L), row-major or transposed in memory, poisoned with NaN; download()
/// returns it row-major in double.
template <class T>
struct DeviceKernel {
  Index H, L;
  bool transposed;
  cuda::DeviceBuffer<T> buf;
  DeviceKernel(Index h, Index l, bool tr, cudaStream_t s) : H(h), L(l), transposed(tr), buf(h * l) {
    buf.fill_bytes_async(0xFF, s);
  }
  TensorView<T, 2> view() {
    return transposed ? buf.template view<2>({H, L}, {1, H}) : buf.template view<2>({H, L});
  }
  std::vector<double> download(cudaStream_t s) {
    std::vector<T> h(std::size_t(H * L));
    buf.copy_to_host_async(h.data(), H * L, s);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<double> out(h.size());
    for (Index i = 0; i < H; ++i)
      for (Index l = 0; l < L; ++l)
        out[std::size_t(i * L + l)] = double(h[std::size_t(transposed ? l * H + i : i * L + l)]);
    return out;
  }
};

template <class T>
double vandermonde_error(const S4System& sys, Discretization method, Index L, bool transposed) {
  TestStream st;
  DeviceSystem<T> d(sys, st.s);
  DeviceKernel<T> K(sys.H, L, transposed, st.s);
  cuda::ssm_kernel_vandermonde(d.diagonal(), method, K.view(), st.s);
  const auto got = K.download(st.s);
  std::vector<double> ref(std::size_t(sys.H * L));
  ssmkit::testing::reference_vandermonde(sys, method,
                                         TensorView<double, 2>(ref.data(), {sys.H, L}));
  return rel_error(got, ref);
}

template <class T>
constexpr double kernel_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T>
void check_vandermonde() {
  for (const Discretization method : {Discretization::ZOH, Discretization::Bilinear})
    for (const bool structured : {true, false})
      for (const Index L : {Index{1}, Index{1000}, Index{2049}})
        for (const Index M : {Index{32}, Index{5}, Index{40}}) {
          const S4System sys = make_system<T>(3, M, 0, structured, 1e-3, 1e-1, 17 + M + L);
          EXPECT_LE(vandermonde_error<T>(sys, method, L, L == 1000), kernel_tol<T>())
              << method << " structured " << structured << " L " << L << " M " << M;
        }
}

TEST(S4Cuda, VandermondeMatchesCpuDouble) {
  SSMKIT_REQUIRE_GPU();
  check_vandermonde<float>();
  check_vandermonde<double>();
}

TEST(S4Cuda, VandermondeLongLength) {
  SSMKIT_REQUIRE_GPU();
  // Small steps: the modes of S4D-Lin barely decay over 16384 taps and turn by ~1600 radians.
  for (const Discretization method : {Discretization::ZOH, Discretization::Bilinear}) {
    const S4System sf = make_system<float>(4, 32, 0, true, 1e-4, 1e-3, 5);
    EXPECT_LE(vandermonde_error<float>(sf, method, 16384, false), 1e-5) << method;
    const S4System sd = make_system<double>(4, 32, 0, true, 1e-4, 1e-3, 5);
    EXPECT_LE(vandermonde_error<double>(sd, method, 16384, true), 1e-12) << method;
  }
}

/// The DPLR kernel of a system on the GPU and the CPU, both with C~ for this L computed on the
/// CPU in double from the T-rounded system and rounded to T: the CPU's K in double, the GPU's K
/// and the plan that holds its half spectrum.
template <class T, class Acc = double>
struct DplrRun {
  std::vector<double> ref;
  TestStream st;
  DeviceKernel<T> K;
  cuda::DplrKernelPlan<T> plan;
  DplrRun(S4System sys, Index L, bool transposed)
      : ref(std::size_t(sys.H * L)), K(sys.H, L, transposed, st.s) {
    ssmkit::testing::reference_c_tilde(sys, L);
    for (auto& c : sys.C)
      c = round_to<T>(c);
    ssmkit::testing::reference_dplr(sys, TensorView<double, 2>(ref.data(), {sys.H, L}));
    DeviceSystem<T> d(sys, st.s);
    cuda::ssm_kernel_dplr<T, Acc>(d.dplr(), K.view(), plan, st.s);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(st.s));
  }
};

/// GPU DPLR kernel vs the CPU one.
template <class T, class Acc = double>
double dplr_error(const S4System& sys, Index L, bool transposed) {
  DplrRun<T, Acc> run(sys, L, transposed);
  return rel_error(run.K.download(run.st.s), run.ref);
}

template <class T>
void check_dplr(Index L_max) {
  for (const Index L : {Index{1}, Index{2}, Index{1000}, Index{1024}, L_max})
    for (const bool structured : {true, false})
      for (const Index R : {Index{1}, Index{2}}) {
        if (structured && R > 1)
          continue;  // LegS has rank 1
        const S4System sys = make_system<T>(3, 32, R, structured, 1e-3, 1e-1, 23 + L + R);
        EXPECT_LE(dplr_error<T>(sys, L, L == 1000), kernel_tol<T>())
            << "L " << L << " structured " << structured << " R " << R;
      }
}

TEST(S4Cuda, DplrMatchesCpuDouble) {
  SSMKIT_REQUIRE_GPU();
  check_dplr<float>(4097);
  check_dplr<double>(4097);
}

TEST(S4Cuda, DplrLongLength) {
  SSMKIT_REQUIRE_GPU();
  const S4System sf = make_system<float>(2, 32, 1, true, 1e-4, 1e-3, 9);
  EXPECT_LE(dplr_error<float>(sf, 16384, false), 1e-5);
  const S4System sd = make_system<double>(2, 32, 1, true, 1e-4, 1e-3, 9);
  EXPECT_LE(dplr_error<double>(sd, 16384, false), 1e-12);
}

/// Channel h of `s` as a one-channel system.
S4System channel_of(const S4System& s, Index h) {
  S4System c;
  c.H = 1;
  c.M = s.M;
  c.R = s.R;
  const auto rows = [&](const std::vector<cd>& v, Index width) {
    return std::vector<cd>(v.begin() + h * width, v.begin() + (h + 1) * width);
  };
  c.Lambda = rows(s.Lambda, s.M);
  c.B = rows(s.B, s.M);
  c.C = rows(s.C, s.M);
  c.P = rows(s.P, s.M * s.R);
  c.dt = {s.dt[std::size_t(h)]};
  return c;
}

/// Row h of a row-major (H, L) device K, as double.
std::vector<double> download_row(const cuda::DeviceBuffer<float>& K, Index h, Index L,
                                 cudaStream_t s) {
  std::vector<float> row(static_cast<std::size_t>(L));
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(row.data(), K.data() + h * L, std::size_t(L) * sizeof(float),
                                    cudaMemcpyDeviceToHost, s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  return std::vector<double>(row.begin(), row.end());
}

TEST(S4Cuda, LongKernelsPast2To31Elements) {
  // K (H, L) of H·L = 2,214,592,512 > 2^31 floats: rows 1940 and up lie wholly past 2^31. The
  // DPLR kernel's spectrum (H, L/2 + 1) passes 2^30 complex values, and its inverse transform
  // 2^31 reals. L = 33·2^15 keeps cuFFT on small radices.
  constexpr Index H = 2048, L = 33 * (Index{1} << 15), M = 32;
  SSMKIT_REQUIRE_GPU_MEMORY(3 * H * L * sizeof(float));
  S4System sys = make_system<float>(H, M, 1, true, 1e-4, 1e-3, 51);
  TestStream st;
  cuda::DeviceBuffer<float> K(H * L, "K");
  const auto check = [&](const S4System& s, const auto& reference, const char* what) {
    for (const Index h : {Index{0}, Index{1001}, H - 1}) {
      const S4System one = channel_of(s, h);
      std::vector<double> ref(static_cast<std::size_t>(L));
      reference(one, TensorView<double, 2>(ref.data(), {1, L}));
      EXPECT_LE(rel_error(download_row(K, h, L, st.s), ref), 1e-5) << what << ", channel " << h;
    }
  };
  {
    DeviceSystem<float> d(sys, st.s);
    for (const Discretization method : {Discretization::ZOH, Discretization::Bilinear}) {
      K.fill_bytes_async(0xFF, st.s);
      cuda::ssm_kernel_vandermonde(d.diagonal(), method, K.view<2>({H, L}), st.s);
      check(
          sys,
          [&](const S4System& one, const TensorView<double, 2>& ref) {
            ssmkit::testing::reference_vandermonde(one, method, ref);
          },
          "Vandermonde");
    }
  }
  ssmkit::testing::reference_c_tilde(sys, L);
  for (auto& c : sys.C)
    c = round_to<float>(c);
  DeviceSystem<float> d(sys, st.s);
  cuda::DplrKernelPlan<float> plan;
  K.fill_bytes_async(0xFF, st.s);
  cuda::ssm_kernel_dplr<float>(d.dplr(), K.view<2>({H, L}), plan, st.s);
  check(sys, ssmkit::testing::reference_dplr, "DPLR");
}

TEST(S4Cuda, DplrFloatSums) {
  SSMKIT_REQUIRE_GPU();
  // Sums in float: 1e-5 to 2.5e-5 at worst in tools/model_dplr_float_sums.py, by seed.
  for (const Index L : {Index{1000}, Index{16384}}) {
    const S4System sys = make_system<float>(3, 32, 1, true, 1e-4, 1e-1, 31 + L);
    EXPECT_LE((dplr_error<float, float>(sys, L, false)), 1e-4) << "L " << L;
  }
}

/// The GPU's half spectrum K^ (left in the plan) against the DFT of the CPU's double kernel,
/// K^_k = (1/L) sum_l K_l e^(-2 pi i k l / L), frequency by frequency: the largest
/// |got - ref| / |ref| over the bins. The time-domain error weighs the bins by size, so it does
/// not see the small high-frequency ones go wrong.
template <class T, class Acc>
double dplr_spectrum_error(const S4System& sys, Index L) {
  DplrRun<T, Acc> run(sys, L, false);
  const std::vector<double>& K = run.ref;
  const Index F = L / 2 + 1;
  std::vector<std::complex<T>> got(std::size_t(sys.H * F));
  SSMKIT_CUDA_CHECK(cudaMemcpy(got.data(), run.plan.spectrum(), got.size() * sizeof(got[0]),
                               cudaMemcpyDeviceToHost));
  double worst = 0;
  for (Index h = 0; h < sys.H; ++h)
    for (Index k = 0; k < F; ++k) {
      cd ref = 0;
      for (Index l = 0; l < L; ++l)
        ref += K[std::size_t(h * L + l)] * std::polar(1.0, -2.0 * M_PI * double(k * l % L) / L);
      ref /= double(L);
      const cd g(got[std::size_t(h * F + k)]);
      worst = std::max(worst, std::isfinite(std::abs(g)) ? std::abs(g - ref) / std::abs(ref)
                                                         : std::numeric_limits<double>::infinity());
    }
  return worst;
}

TEST(S4Cuda, DplrSpectrumEveryFrequency) {
  SSMKIT_REQUIRE_GPU();
  // dt down to 1e-10: there (2/dt)^4 at the highest frequencies is past float's range, which
  // zeroed those bins (error 1) when the sums ran in float. Bounds, from the H100 (worst bin):
  // double sums 1.2e-7, about the rounding of K^ to float; float sums 2.1e-4, at dt = 1e-2 in
  // a bin whose mode terms cancel, 7e-6 elsewhere.
  for (const double dt : {1e-2, 1e-6, 1e-10})
    for (const bool structured : {true, false}) {
      const S4System sys =
          make_system<float>(3, 32, structured ? 1 : 2, structured, dt, 2 * dt, 41);
      EXPECT_LE((dplr_spectrum_error<float, double>(sys, 1000)), 5e-7)
          << "dt " << dt << " structured " << structured;
      EXPECT_LE((dplr_spectrum_error<float, float>(sys, 1000)), 1e-3)
          << "dt " << dt << " structured " << structured;
    }
}

/// One convolution problem: u (B, L, H) in either layout, K (H, L + 7) row-major or transposed,
/// D optional; the GPU result against cpu::fft_conv in double and the direct sum.
template <class T>
struct ConvCase {
  Index Bt, L, H;
  bool channel_major, k_transposed, skip;
};

template <class T>
void check_conv(const ConvCase<T>& c, cuda::FftConvPlan<T>& plan, double tol_fft, double tol_direct,
                bool direct = true) {
  TestStream st;
  const Index Lk = c.L + 7;
  const auto u_h = ssmkit::testing::random_vector<T>(std::size_t(c.Bt * c.L * c.H), 100 + c.L);
  const auto K_h = ssmkit::testing::random_vector<T>(std::size_t(c.H * Lk), 200 + c.L);
  const auto D_h = ssmkit::testing::random_vector<T>(std::size_t(c.H), 300 + c.L);
  Dev<T> u(u_h, st.s), K(K_h, st.s), D(D_h, st.s);
  const Shape<3> u_str =
      c.channel_major ? Shape<3>{c.H * c.L, 1, c.L} : Shape<3>{c.L * c.H, c.H, 1};
  const Shape<2> K_str = c.k_transposed ? Shape<2>{1, c.H} : Shape<2>{Lk, 1};
  cuda::DeviceBuffer<T> y(c.Bt * c.L * c.H);
  y.fill_bytes_async(0xFF, st.s);
  cpu::FftConvParams<T> p{u.dev.template view<3>({c.Bt, c.L, c.H}, u_str),
                          K.dev.template view<2>({c.H, Lk}, K_str),
                          c.skip ? D.template view<1>({c.H}) : TensorView<const T, 1>{},
                          y.template view<3>({c.Bt, c.L, c.H}, u_str)};
  cuda::fft_conv(p, plan, st.s);
  std::vector<T> y_h(u_h.size());
  y.copy_to_host_async(y_h.data(), y.size(), st.s);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(st.s));

  // The same problem on the host in double, logical (B, L, H) row-major.
  auto u_at = [&](Index b, Index t, Index h) {
    return double(u_h[std::size_t(b * u_str[0] + t * u_str[1] + h * u_str[2])]);
  };
  auto K_at = [&](Index h, Index s) {
    return double(K_h[std::size_t(h * K_str[0] + s * K_str[1])]);
  };
  std::vector<double> u_d(u_h.size()), K_d(std::size_t(c.H * c.L)), D_d(D_h.begin(), D_h.end()),
      got(u_h.size()), ref(u_h.size());
  for (Index b = 0; b < c.Bt; ++b)
    for (Index t = 0; t < c.L; ++t)
      for (Index h = 0; h < c.H; ++h) {
        const std::size_t i = std::size_t((b * c.L + t) * c.H + h);
        u_d[i] = u_at(b, t, h);
        got[i] = double(y_h[std::size_t(b * u_str[0] + t * u_str[1] + h * u_str[2])]);
      }
  for (Index h = 0; h < c.H; ++h)
    for (Index s = 0; s < c.L; ++s)
      K_d[std::size_t(h * c.L + s)] = K_at(h, s);
  ssmkit::testing::reference_fft_conv(cpu::FftConvParams<double>{
      TensorView<const double, 3>(u_d.data(), {c.Bt, c.L, c.H}),
      TensorView<const double, 2>(K_d.data(), {c.H, c.L}),
      c.skip ? TensorView<const double, 1>(D_d.data(), {c.H}) : TensorView<const double, 1>{},
      TensorView<double, 3>(ref.data(), {c.Bt, c.L, c.H})});
  EXPECT_LE(rel_error(got, ref), tol_fft) << "vs cpu::fft_conv: B " << c.Bt << " L " << c.L << " H "
                                          << c.H << " channel-major " << c.channel_major;
  if (!direct)
    return;
  for (Index b = 0; b < c.Bt; ++b)
    for (Index t = 0; t < c.L; ++t)
      for (Index h = 0; h < c.H; ++h) {
        double acc = c.skip ? D_d[std::size_t(h)] * u_d[std::size_t((b * c.L + t) * c.H + h)] : 0.0;
        for (Index s = 0; s <= t; ++s)
          acc += K_d[std::size_t(h * c.L + s)] * u_d[std::size_t((b * c.L + t - s) * c.H + h)];
        ref[std::size_t((b * c.L + t) * c.H + h)] = acc;
      }
  EXPECT_LE(rel_error(got, ref), tol_direct) << "vs direct: B " << c.Bt << " L " << c.L << " H "
                                             << c.H << " channel-major " << c.channel_major;
}

TEST(S4Cuda, FftConvMatchesCpuAndDirect) {
  SSMKIT_REQUIRE_GPU();
  for (const bool cm : {false, true})
    for (const bool kt : {false, true})
      for (const bool skip : {true, false}) {
        cuda::FftConvPlan<double> pd;
        check_conv<double>({2, 1000, 11, cm, kt, skip}, pd, 1e-12, 1e-12);
        check_conv<double>({1, 1, 3, cm, kt, skip}, pd, 1e-14, 1e-14);
        check_conv<double>({3, 64, 40, cm, kt, skip}, pd, 1e-13, 1e-13);
        cuda::FftConvPlan<float> pf;
        check_conv<float>({2, 1000, 11, cm, kt, skip}, pf, 2e-6, 2e-6);
        check_conv<float>({3, 77, 40, cm, kt, skip}, pf, 2e-6, 2e-6);
      }
}

TEST(S4Cuda, FftConvPlanReuse) {
  SSMKIT_REQUIRE_GPU();
  // The same plan over shapes that keep the transform length (2048) and ones that change it:
  // stale padding or stale plans would show.
  cuda::FftConvPlan<float> plan;
  check_conv<float>({2, 1000, 11, false, false, true}, plan, 2e-6, 2e-6);
  check_conv<float>({2, 600, 11, false, false, true}, plan, 2e-6, 2e-6);
  check_conv<float>({3, 700, 5, true, false, true}, plan, 2e-6, 2e-6);
  check_conv<float>({1, 100, 33, false, true, false}, plan, 2e-6, 2e-6);
  check_conv<float>({2, 1000, 11, false, false, true}, plan, 2e-6, 2e-6);
}

TEST(S4Cuda, FftConvLongLength) {
  SSMKIT_REQUIRE_GPU();
  cuda::FftConvPlan<float> pf;
  check_conv<float>({1, 16384, 4, false, false, true}, pf, 2e-6, 0, false);
  cuda::FftConvPlan<double> pd;
  check_conv<double>({1, 16384, 4, true, false, true}, pd, 1e-12, 0, false);
}

TEST(S4Cuda, BadInputsThrow) {
  SSMKIT_REQUIRE_GPU();
  TestStream st;
  const S4System sys = make_system<float>(2, 4, 1, false, 1e-3, 1e-1, 1);
  DeviceSystem<float> d(sys, st.s);
  cuda::DeviceBuffer<float> Kd(2 * 8);
  std::vector<float> Kh(2 * 8);
  const TensorView<float, 2> K_host(Kh.data(), {2, 8});
  SSMKIT_EXPECT_ERROR(cuda::ssm_kernel_vandermonde(d.diagonal(), Discretization::ZOH, K_host, st.s),
                      "K", "device", "cuda", "cpu");
  SSMKIT_EXPECT_ERROR(
      cuda::ssm_kernel_vandermonde(d.diagonal(), Discretization::ZOH, Kd.view<2>({1, 16}), st.s),
      "K", "shape", "(2, 16)", "(1, 16)");
  const std::vector<std::complex<float>> lam_f = to<float>(sys.Lambda);
  auto diag = d.diagonal();
  diag.Lambda = TensorView<const std::complex<float>, 2>(lam_f.data(), {2, 4});
  SSMKIT_EXPECT_ERROR(
      cuda::ssm_kernel_vandermonde(diag, Discretization::ZOH, Kd.view<2>({2, 8}), st.s), "Lambda",
      "device");
  auto dp = d.dplr();
  dp.B = d.B.view<2>({2, 4}).transposed(0, 1);
  SSMKIT_EXPECT_ERROR(cuda::ssm_kernel_dplr(dp, Kd.view<2>({2, 8}), st.s), "B", "shape", "(2, 4)",
                      "(4, 2)");

  // Rank 3 is beyond the unrolled Woodbury solves.
  const S4System big = make_system<float>(1, 2, 3, false, 1e-3, 1e-1, 2);
  DeviceSystem<float> db(big, st.s);
  SSMKIT_EXPECT_ERROR(cuda::ssm_kernel_dplr(db.dplr(), Kd.view<2>({1, 8}), st.s), "P", "rank");

  cuda::DeviceBuffer<float> u(2 * 8 * 3), y(2 * 8 * 3), Kc(3 * 8), D(3);
  cpu::FftConvParams<float> p{u.view<3>({2, 8, 3}), Kc.view<2>({3, 8}), D.view<1>({3}),
                              y.view<3>({2, 8, 3})};
  cuda::FftConvPlan<float> plan;
  auto short_K = p;
  short_K.K = Kc.view<2>({3, 7});
  SSMKIT_EXPECT_ERROR(cuda::fft_conv(short_K, plan, st.s), "K", "shape", "(3, >= 8)", "(3, 7)");
  auto bad_D = p;
  bad_D.D_skip = D.view<1>({2});
  SSMKIT_EXPECT_ERROR(cuda::fft_conv(bad_D, plan, st.s), "D", "shape", "(3)", "(2)");
  std::vector<float> yh(2 * 8 * 3);
  auto host_y = p;
  host_y.y = TensorView<float, 3>(yh.data(), {2, 8, 3});
  SSMKIT_EXPECT_ERROR(cuda::fft_conv(host_y, plan, st.s), "y", "device", "cuda", "cpu");
  auto bad_y = p;
  bad_y.y = y.view<3>({2, 4, 3});
  SSMKIT_EXPECT_ERROR(cuda::fft_conv(bad_y, plan, st.s), "y", "shape", "(2, 8, 3)", "(2, 4, 3)");
}

}  // namespace
