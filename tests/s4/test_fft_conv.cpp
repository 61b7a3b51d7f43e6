// The FFT causal convolution against the direct O(L^2) sum, token-major and channel-major.
#include <ssmkit/kernels/cpu/fft_conv.hpp>
#include <ssmkit/kernels/cpu/ssm_recurrence.hpp>

#include "testing.hpp"

#include <limits>

namespace {

using namespace ssmkit;

template <class T>
void check_fft_conv(Index Bt, Index L, Index H, bool channel_major, double tol) {
  const Index Lk = L + 7;  // longer kernels use their first L taps only
  HostTensor<T, 3> u_mem({Bt, channel_major ? H : L, channel_major ? L : H});
  HostTensor<T, 2> K({H, Lk});
  HostTensor<T, 1> D({H});
  HostTensor<T, 3> y({Bt, L, H});
  ssmkit::testing::fill_random(u_mem, 100 + L);
  ssmkit::testing::fill_random(K, 200 + L);
  ssmkit::testing::fill_random(D, 300 + L);
  y.fill(std::numeric_limits<T>::quiet_NaN());
  const TensorView<const T, 3> u =
      channel_major ? TensorView<const T, 3>(u_mem.data(), {Bt, L, H}, {H * L, 1, L}, "u")
                    : TensorView<const T, 3>(u_mem.view());
  cpu::fft_conv(cpu::FftConvParams<T>{u, K.view(), D.view(), y.view()});

  std::vector<double> ref(Bt * L * H);
  for (Index b = 0; b < Bt; ++b)
    for (Index t = 0; t < L; ++t)
      for (Index h = 0; h < H; ++h) {
        double acc = double(D(h)) * double(u(b, t, h));
        for (Index s = 0; s <= t; ++s)
          acc += double(K(h, s)) * double(u(b, t - s, h));
        ref[(b * L + t) * H + h] = acc;
      }
  EXPECT_LE(ssmkit::testing::rel_error(y.data(), ref.data(), y.numel()), tol)
      << "B " << Bt << " L " << L << " H " << H << " channel-major " << channel_major;
}

TEST(FftConv, EqualsDirectConvolution) {
  for (bool cm : {false, true}) {
    check_fft_conv<double>(2, 1000, 11, cm, 1e-13);
    check_fft_conv<double>(1, 1, 3, cm, 1e-15);
    check_fft_conv<double>(3, 64, 8, cm, 1e-14);
    check_fft_conv<float>(2, 1000, 11, cm, 2e-6);
  }
}

TEST(FftConv, WithoutSkip) {
  const Index L = 257, H = 9;
  HostTensor<double, 3> u({1, L, H}), y({1, L, H});
  HostTensor<double, 2> K({H, L});
  ssmkit::testing::fill_random(u, 1);
  ssmkit::testing::fill_random(K, 2);
  y.fill(std::nan(""));
  cpu::fft_conv(cpu::FftConvParams<double>{u.view(), K.view(), {}, y.view()});
  std::vector<double> ref(L * H, 0.0);
  for (Index t = 0; t < L; ++t)
    for (Index h = 0; h < H; ++h)
      for (Index s = 0; s <= t; ++s)
        ref[t * H + h] += K(h, s) * u(0, t - s, h);
  EXPECT_LE(ssmkit::testing::rel_error(y.data(), ref.data(), y.numel()), 1e-13);
}

}  // namespace

namespace {

using namespace ssmkit;

// y may be u itself (in place), but a y that partly overlaps u (here shifted by one step) would
// be written while u is still being read: refused, as on the other kernels, for fft_conv and both
// recurrences.
TEST(FftConv, PartialOverlapOfYAndUIsRefused) {
  const Index L = 16;
  HostTensor<double, 1> buf({L + 1});
  HostTensor<double, 2> K({1, L});
  HostTensor<double, 1> D({1});
  ssmkit::testing::fill_random(buf, 5);
  ssmkit::testing::fill_random(K, 6);
  D(0) = 2;
  const TensorView<const double, 3> u(buf.data(), {1, L, 1});
  const TensorView<double, 3> y_shift(buf.data() + 1, {1, L, 1}), y_same(buf.data(), {1, L, 1});
  SSMKIT_EXPECT_ERROR(cpu::fft_conv(cpu::FftConvParams<double>{u, K.view(), D.view(), y_shift}),
                      "y", "disjoint from u");
  const TensorView<double, 3> y_on_K(K.data(), {1, L, 1});
  HostTensor<double, 3> u2({1, L, 1});
  SSMKIT_EXPECT_ERROR(cpu::fft_conv(cpu::FftConvParams<double>{u2.view(), K.view(), {}, y_on_K}),
                      "y", "disjoint from K");
  // In place stays allowed and equals the out-of-place result.
  HostTensor<double, 3> y_ref({1, L, 1});
  cpu::fft_conv(cpu::FftConvParams<double>{u, K.view(), D.view(), y_ref.view()});
  cpu::fft_conv(cpu::FftConvParams<double>{u, K.view(), D.view(), y_same});
  for (Index t = 0; t < L; ++t)
    EXPECT_EQ(buf(t), y_ref(0, t, 0)) << t;

  using cd = std::complex<double>;
  HostTensor<cd, 2> Ab({1, 1}), Bb({1, 1}), C({1, 1});
  Ab(0, 0) = cd(0.9, 0.1);
  Bb(0, 0) = 1;
  C(0, 0) = cd(0.5, 0.2);
  SSMKIT_EXPECT_ERROR(cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<double>{
                          Ab.view(), Bb.view(), C.view(), D.view(), u, y_shift, {}}),
                      "y", "disjoint from u");
  HostTensor<double, 3> A1({1, 1, 1});
  HostTensor<double, 2> B1({1, 1}), C1({1, 1});
  SSMKIT_EXPECT_ERROR(cpu::ssm_recurrence_dense(cpu::DenseRecurrenceParams<double>{
                          A1.view(), B1.view(), C1.view(), D.view(), u, y_shift, {}}),
                      "y", "disjoint from u");
  cpu::ssm_recurrence_diagonal(cpu::DiagonalRecurrenceParams<double>{
      Ab.view(), Bb.view(), C.view(), D.view(), u, y_same, {}});  // in place: allowed
}

}  // namespace
