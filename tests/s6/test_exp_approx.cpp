// The vector exp2, log1p, softplus and SiLU of the scan against the C library, on the widest
// pack this build targets and on the portable one; the scalar activations against their formulas.
#include "testing.hpp"

#include <ssmkit/kernels/cpu/exp_approx.hpp>
#include <ssmkit/math/activations.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>

namespace ssmkit {
namespace {

/// Largest relative error of f_pack against f_ref over xs (|ref| floored at `floor`).
template <class P, class FP>
double max_rel_error(const std::vector<float>& xs, FP f_pack,
                     const std::function<double(double)>& f_ref, double floor = 0) {
  double worst = 0;
  for (std::size_t i = 0; i + P::width <= xs.size(); i += P::width) {
    float out[P::width];
    f_pack(P::load(&xs[i])).store(out);
    for (int l = 0; l < P::width; ++l) {
      const double ref = f_ref(xs[i + l]);
      const double err = std::abs(out[l] - ref) / std::max(std::abs(ref), floor);
      if (!std::isfinite(out[l]) || !(err <= worst))
        worst = std::isfinite(out[l]) ? err : INFINITY;
    }
  }
  return worst;
}

std::vector<float> grid(double lo, double hi, std::size_t n) {
  std::vector<float> xs(n);
  for (std::size_t i = 0; i < n; ++i)
    xs[i] =
        static_cast<float>(lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n - 1));
  return xs;
}

template <class P>
class VectorMath : public ::testing::Test {};
using Packs = ::testing::Types<cpu::simd::BestF32, cpu::simd::Portable<float, 8>>;
TYPED_TEST_SUITE(VectorMath, Packs);

TYPED_TEST(VectorMath, Exp2MatchesLibm) {
  using P = TypeParam;
  auto xs = grid(-125, 127, 1 << 20);
  const auto more = testing::random_vector<float>(1 << 16, 3, -30, 5);
  xs.insert(xs.end(), more.begin(), more.end());
  xs.resize(xs.size() / 16 * 16);
  const double err = max_rel_error<P>(
      xs, [](P x) { return cpu::simd::exp2(x); }, [](double x) { return std::exp2(x); });
  EXPECT_LE(err, 2.5e-7);
}

TYPED_TEST(VectorMath, SumRowsPutsEachRowsSumInItsLane) {
  using P = TypeParam;
  constexpr int W = P::width;
  // Small integers: every partial sum is exact, so any lane holding another row's sum, or a
  // row missing a term, shows as an exact mismatch.
  std::vector<float> m(W * W);
  for (int i = 0; i < W; ++i)
    for (int j = 0; j < W; ++j)
      m[static_cast<std::size_t>(i * W + j)] = static_cast<float>((i * 37 + j * j * 11) % 29 - 9);
  float out[W];
  P::sum_rows(m.data()).store(out);
  for (int i = 0; i < W; ++i) {
    double sum = 0;
    for (int j = 0; j < W; ++j)
      sum += m[static_cast<std::size_t>(i * W + j)];
    EXPECT_EQ(out[i], sum) << "row " << i;
  }
  // Random values: within the rounding of W additions of the row's magnitudes.
  const auto r = testing::random_vector<float>(W * W, 11, -1, 1);
  P::sum_rows(r.data()).store(out);
  for (int i = 0; i < W; ++i) {
    double sum = 0, mag = 0;
    for (int j = 0; j < W; ++j) {
      sum += r[static_cast<std::size_t>(i * W + j)];
      mag += std::abs(r[static_cast<std::size_t>(i * W + j)]);
    }
    EXPECT_NEAR(out[i], sum, W * 6e-8 * mag) << "row " << i;
  }
}

TYPED_TEST(VectorMath, Exp2ClampsInsteadOfOverflowing) {
  using P = TypeParam;
  std::vector<float> xs(P::width, -1000.0f);
  xs[0] = 1000.0f;
  float out[P::width];
  cpu::simd::exp2(P::load(xs.data())).store(out);
  EXPECT_FLOAT_EQ(out[0], std::ldexp(1.0f, 127));
  for (int l = 1; l < P::width; ++l)
    EXPECT_FLOAT_EQ(out[l], std::ldexp(1.0f, -125));  // normal: no subnormal arithmetic
}

TYPED_TEST(VectorMath, Log1pMatchesLibmOnUnitInterval) {
  using P = TypeParam;
  auto xs = grid(0, 1, 1 << 16);
  for (int e = -40; e < 0; ++e)
    xs.push_back(std::ldexp(1.3f, e));
  xs.resize(xs.size() / 16 * 16);
  const double err = max_rel_error<P>(
      xs, [](P x) { return cpu::simd::log1p_unit(x); }, [](double x) { return std::log1p(x); },
      1e-300);
  EXPECT_LE(err, 2.5e-7);
}

TYPED_TEST(VectorMath, SoftplusMatchesTorchConvention) {
  using P = TypeParam;
  auto xs = grid(-40, 40, 1 << 16);
  xs.resize(xs.size() / 16 * 16);
  const double err = max_rel_error<P>(
      xs, [](P x) { return cpu::simd::softplus(x); },
      [](double x) { return x > 20 ? x : std::log1p(std::exp(x)); }, 1e-300);
  EXPECT_LE(err, 2e-6);  // exp2's argument x·log2(e) is rounded: ~|x|·6e-8 relative
  std::vector<float> big(P::width);
  for (int l = 0; l < P::width; ++l)
    big[static_cast<std::size_t>(l)] = 20.0f + 3.7f * static_cast<float>(l);
  float out[P::width];
  cpu::simd::softplus(P::load(big.data())).store(out);
  for (int l = 0; l < P::width; ++l)
    EXPECT_EQ(out[l], big[static_cast<std::size_t>(l)]);  // the identity above the threshold
}

// A NaN lane stays NaN (the clamps and softplus's max must not swallow it) and leaves the
// other lanes alone.
TYPED_TEST(VectorMath, NanPropagatesThroughItsLaneOnly) {
  using P = TypeParam;
  std::vector<float> xs(P::width, 0.5f);
  xs[1] = std::numeric_limits<float>::quiet_NaN();
  const P x = P::load(xs.data());
  float out[P::width];
  const auto check = [&](const char* name, double at_half) {
    for (int l = 0; l < P::width; ++l) {
      if (l == 1)
        EXPECT_TRUE(std::isnan(out[l])) << name << "(NaN) = " << out[l];
      else
        EXPECT_NEAR(out[l], at_half, 2e-6 * at_half) << name << " lane " << l;
    }
  };
  cpu::simd::exp2(x).store(out);
  check("exp2", std::exp2(0.5));
  cpu::simd::exp2<P, false>(x).store(out);
  check("exp2 without upper clamp", std::exp2(0.5));
  cpu::simd::softplus(x).store(out);
  check("softplus", std::log1p(std::exp(0.5)));
  cpu::simd::silu(x).store(out);
  check("silu", 0.5 / (1 + std::exp(-0.5)));
}

// A NaN's payload must not leak into the result: exp2 once added the low bits of n, which hold
// the payload for a NaN x, to the exponent field, turning 0x7fc00001 into -5.9e-39 and
// 0x7fc001ff into 2.6e38. NaNs read from user data may carry any payload.
TYPED_TEST(VectorMath, NanWithAnyPayloadStaysNan) {
  using P = TypeParam;
  const std::uint32_t payloads[] = {0x7fc00001u, 0x7fc000ffu, 0x7fc001ffu, 0xffc00001u,
                                    0x7f800001u, 0x7fe00155u, 0xff80ab01u, 0x7fc00000u};
  std::vector<float> xs(P::width, 0.5f);
  for (std::size_t i = 0; i < xs.size(); ++i)
    std::memcpy(&xs[i], &payloads[i % std::size(payloads)], sizeof(float));
  const P x = P::load(xs.data());
  float out[P::width];
  const auto check = [&](const char* name) {
    for (int l = 0; l < P::width; ++l)
      EXPECT_TRUE(std::isnan(out[l])) << name << " of NaN bits " << std::hex
                                      << payloads[l % std::size(payloads)] << " = " << out[l];
  };
  cpu::simd::exp2(x).store(out);
  check("exp2");
  cpu::simd::exp2<P, false>(x).store(out);
  check("exp2 without upper clamp");
  cpu::simd::sigmoid(x).store(out);
  check("sigmoid");
}

TYPED_TEST(VectorMath, SiluMatchesLibm) {
  using P = TypeParam;
  auto xs = grid(-100, 100, 1 << 16);
  xs.resize(xs.size() / 16 * 16);
  const double err = max_rel_error<P>(
      xs, [](P x) { return cpu::simd::silu(x); }, [](double x) { return x / (1 + std::exp(-x)); },
      1e-30);
  EXPECT_LE(err, 1e-5);  // e^-x is ~1e-7·|x| relative, bounded by the range
}

TEST(Activations, ScalarSoftplusAndSilu) {
  for (double x : {-50.0, -3.0, -1e-3, 0.0, 0.7, 19.9, 20.0, 20.1, 300.0}) {
    const double sp = x > 20 ? x : std::log(1 + std::exp(x));
    EXPECT_NEAR(softplus(x), sp, 1e-15 * std::max(1.0, sp)) << x;
    EXPECT_NEAR(softplus(static_cast<float>(x)), sp, 1e-6 * std::max(1.0, sp)) << x;
    const double si = x / (1 + std::exp(-x));
    EXPECT_NEAR(silu(x), si, 1e-15 * std::max(1.0, std::abs(si))) << x;
  }
  EXPECT_EQ(softplus(20.5f), 20.5f);
  EXPECT_TRUE(std::isfinite(silu(-1e4f)) && std::isfinite(silu(1e4f)));
  EXPECT_EQ(silu(1e4f), 1e4f);
  EXPECT_NEAR(sigmoid(-800.0), 0.0, 1e-300);
  EXPECT_EQ(sigmoid(800.0), 1.0);
}

}  // namespace
}  // namespace ssmkit
