#include "testing.hpp"

#include <type_traits>

namespace ssmkit {
namespace {

TEST(DType, TagsSizesAndAccumulateTypes) {
  EXPECT_EQ(dtype_of<float>, DType::F32);
  EXPECT_EQ(dtype_of<const double>, DType::F64);
  EXPECT_EQ(dtype_of<Eigen::half>, DType::F16);
  EXPECT_EQ(dtype_of<Eigen::bfloat16>, DType::BF16);
  static_assert(std::is_same_v<accum_t<Eigen::half>, float>);
  static_assert(std::is_same_v<accum_t<Eigen::bfloat16>, float>);
  static_assert(std::is_same_v<accum_t<double>, double>);
  static_assert(std::is_same_v<accum_t<const float>, float>);
  EXPECT_EQ(size_of(DType::BF16), sizeof(Eigen::bfloat16));
  EXPECT_EQ(size_of(DType::F16), sizeof(Eigen::half));
  EXPECT_EQ(size_of(DType::F64), 8u);
  EXPECT_EQ(size_of(DType::Bool), 1u);
  EXPECT_EQ(name_of(DType::BF16), "BF16");
}

TEST(DType, HalfAndBfloatRoundTripWithinTheirPrecision) {
  // bfloat16 keeps 8 significant bits, half 11: relative rounding error ≤ 2^-8 and 2^-11.
  for (double x : {1.0, -3.14159, 1e-3, 65000.0, 123.456}) {
    const float bf = convert<float>(convert<Eigen::bfloat16>(static_cast<float>(x)));
    const float hf = convert<float>(convert<Eigen::half>(static_cast<float>(x)));
    EXPECT_LE(std::abs(bf - x), std::abs(x) * std::ldexp(1.0, -8)) << x;
    EXPECT_LE(std::abs(hf - x), std::abs(x) * std::ldexp(1.0, -11)) << x;
  }
}

TEST(Error, MessageNamesArgumentExpectedAndActual) {
  try {
    SSMKIT_CHECK_EQ("delta", "size(2)", 16, 8);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "ssmkit: delta: size(2) expected 16, got 8");
  }
  EXPECT_NO_THROW(SSMKIT_CHECK_EQ("delta", "size(2)", 16, 16));
}

}  // namespace
}  // namespace ssmkit
