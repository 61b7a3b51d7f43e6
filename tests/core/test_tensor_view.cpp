#include "testing.hpp"

#include <limits>

namespace ssmkit {
namespace {

TEST(TensorView, ContiguousIndexingAndStrides) {
  std::vector<float> buf(2 * 3 * 4);
  for (std::size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<float>(i);
  TensorView<float, 3> v(buf.data(), {2, 3, 4}, "x");
  EXPECT_EQ(v.strides(), (Shape<3>{12, 4, 1}));
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v(1, 2, 3), 23.0f);
  EXPECT_EQ(v(1, 0, 2), 14.0f);
  EXPECT_EQ(v[1](2, 1), 21.0f);
  EXPECT_EQ(v.span(), 24);
}

TEST(TensorView, TransposedViewAddressesSameMemory) {
  std::vector<double> buf(6);
  for (std::size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<double>(i);
  TensorView<double, 2> v(buf.data(), {2, 3}, "m");
  auto t = v.transposed(0, 1);
  EXPECT_EQ(t.shape(), (Shape<2>{3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  for (Index i = 0; i < 2; ++i)
    for (Index j = 0; j < 3; ++j)
      EXPECT_EQ(t(j, i), v(i, j));
}

TEST(TensorView, ChannelMajorViewOfTokenMajorLogicalShape) {
  // (B, D, L) memory seen as logical (B, L, D): what kernels do with mamba_ssm's layout.
  const Index B = 2, L = 5, D = 3;
  std::vector<float> buf(B * D * L);
  for (std::size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<float>(i);
  TensorView<float, 3> v(buf.data(), {B, L, D}, {D * L, 1, L}, "u");
  EXPECT_EQ(v(1, 4, 2), buf[1 * D * L + 2 * L + 4]);
}

TEST(TensorView, ConstConversionKeepsEverything) {
  std::vector<float> buf(8);
  TensorView<float, 2> v(buf.data(), {2, 4}, {4, 1}, "x");
  TensorView<const float, 2> c = v;
  EXPECT_EQ(c.data(), buf.data());
  EXPECT_EQ(c.strides(), v.strides());
  EXPECT_EQ(c.device(), Device::CPU);
}

TEST(TensorView, DefaultIsAbsent) {
  TensorView<const float, 1> v;
  EXPECT_TRUE(v.absent());
  EXPECT_EQ(v.numel(), 0);
}

TEST(TensorView, EmptyViewMayHaveNullData) {
  TensorView<float, 2> v(nullptr, {0, 7}, "x");
  EXPECT_EQ(v.numel(), 0);
  EXPECT_EQ(v.span(), 0);
}

TEST(TensorView, RejectsNegativeShape) {
  std::vector<float> buf(4);
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(buf.data(), {2, -3}, "weights")), "weights", "shape[1]",
                      ">= 0", "-3");
}

TEST(TensorView, RejectsOverflowingShape) {
  std::vector<float> buf(4);
  const Index big = Index{1} << 40;
  SSMKIT_EXPECT_ERROR((TensorView<float, 3>(buf.data(), {big, big, 2}, "huge")), "huge",
                      "element count", "int64");
}

TEST(TensorView, RejectsOverflowingOffset) {
  std::vector<float> buf(4);
  const Index big = std::numeric_limits<Index>::max() / 2 + 1;
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(buf.data(), {3, 4}, {big, 1}, "x")), "x",
                      "largest offset", "int64");
}

TEST(TensorView, RejectsNegativeStride) {
  std::vector<float> buf(4);
  SSMKIT_EXPECT_ERROR((TensorView<float, 1>(buf.data(), {4}, {-1}, "v")), "v", "stride[0]", ">= 0",
                      "-1");
}

TEST(TensorView, RejectsAliasingStrides) {
  std::vector<float> buf(64);
  // Rows of 4 elements, but rows only 2 apart: row 1 overlaps row 0.
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(buf.data(), {3, 4}, {2, 1}, "x")), "x", "stride[0]",
                      "alias", "got 2");
  // Broadcast (stride 0) over an extent > 1 aliases too.
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(buf.data(), {3, 4}, {0, 1}, "y")), "y", "stride[0]",
                      "alias", "got 0");
  // Two dimensions with the same stride.
  SSMKIT_EXPECT_ERROR((TensorView<float, 3>(buf.data(), {2, 2, 2}, {4, 4, 1}, "z")), "z", "alias");
}

TEST(TensorView, AcceptsPaddedAndPermutedStrides) {
  std::vector<float> buf(64);
  EXPECT_NO_THROW((TensorView<float, 2>(buf.data(), {3, 4}, {5, 1}, "padded", Device::CPU, 64)));
  EXPECT_NO_THROW(
      (TensorView<float, 3>(buf.data(), {2, 3, 4}, {1, 8, 2}, "perm", Device::CPU, 64)));
  // A size-1 dimension may have any stride: it never steps.
  EXPECT_NO_THROW((TensorView<float, 2>(buf.data(), {1, 4}, {0, 1}, "row")));
}

TEST(TensorView, RejectsStridesPastCapacity) {
  std::vector<float> buf(12);
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(buf.data(), {3, 4}, {5, 1}, "x", Device::CPU, 12)), "x",
                      "largest offset", "< capacity 12", "got 13");
  EXPECT_NO_THROW((TensorView<float, 2>(buf.data(), {3, 4}, {4, 1}, "x", Device::CPU, 12)));
}

TEST(TensorView, RejectsNullDataWithElements) {
  SSMKIT_EXPECT_ERROR((TensorView<float, 2>(nullptr, {2, 3}, "input")), "input", "data pointer",
                      "non-null", "(2, 3)");
}

TEST(TensorView, CheckShapeAndDeviceName) {
  std::vector<float> buf(6);
  TensorView<float, 2> v(buf.data(), {2, 3}, "x");
  SSMKIT_EXPECT_ERROR(check_shape(v, "B", {2, 4}), "B", "shape", "(2, 4)", "(2, 3)");
  SSMKIT_EXPECT_ERROR(check_device(v, "u", Device::CUDA), "u", "device", "cuda", "cpu");
}

TEST(TensorView, EigenMapMatchesStridedView) {
  std::vector<double> buf(20);
  for (std::size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<double>(i) * 0.5;
  TensorView<double, 2> v(buf.data(), {3, 4}, {6, 1}, "m");  // padded rows
  auto m = as_eigen(v);
  ASSERT_EQ(m.rows(), 3);
  ASSERT_EQ(m.cols(), 4);
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 4; ++j)
      EXPECT_EQ(m(i, j), v(i, j));
  m(2, 3) = -1.0;  // writes through
  EXPECT_EQ(buf[2 * 6 + 3], -1.0);

  Eigen::MatrixXd cm = Eigen::MatrixXd::Random(3, 2);  // column-major
  auto cv = view_of(cm, "cm");
  EXPECT_EQ(cv.strides(), (Shape<2>{1, 3}));
  EXPECT_EQ(cv(2, 1), cm(2, 1));
  auto col = as_eigen(TensorView<double, 1>(buf.data(), {4}, {5}, "col"));
  EXPECT_EQ(col(3), buf[15]);
}

}  // namespace
}  // namespace ssmkit
