#include "testing.hpp"

#include <cstdint>
#include <utility>

namespace ssmkit {
namespace {

TEST(HostTensor, AlignedZeroInitialisedContiguous) {
  HostTensor<float, 3> t({3, 5, 7}, "t");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % 64, 0u);
  EXPECT_EQ(t.numel(), 105);
  for (Index i = 0; i < t.numel(); ++i)
    ASSERT_EQ(t.data()[i], 0.0f);
  t(2, 4, 6) = 3.5f;
  EXPECT_EQ(t.data()[104], 3.5f);
  EXPECT_EQ(t.view()(2, 4, 6), 3.5f);
  EXPECT_TRUE(t.view().is_contiguous());
}

TEST(HostTensor, CloneIsDeep) {
  HostTensor<double, 2> a({2, 2});
  a(0, 1) = 2.0;
  HostTensor<double, 2> b = a.clone();
  b(0, 1) = 5.0;
  EXPECT_EQ(a(0, 1), 2.0);
  EXPECT_EQ(b(0, 1), 5.0);
}

TEST(HostTensor, EmptyHasNoStorage) {
  HostTensor<float, 2> t({0, 4});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.data(), nullptr);
}

// A moved-from tensor is empty, not a shape over null data: its view is the absent one.
TEST(HostTensor, MoveLeavesTheSourceEmpty) {
  HostTensor<float, 2> a({3, 4});
  a(2, 3) = 7.0f;
  float* const storage = a.data();
  HostTensor<float, 2> b = std::move(a);
  EXPECT_EQ(b.data(), storage);
  EXPECT_EQ(b.shape(), (Shape<2>{3, 4}));
  EXPECT_EQ(b(2, 3), 7.0f);
  EXPECT_EQ(a.shape(), (Shape<2>{0, 0}));
  EXPECT_EQ(a.numel(), 0);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_TRUE(a.view().absent());
  HostTensor<float, 2> c({1, 2});
  c = std::move(b);
  EXPECT_EQ(c.data(), storage);
  EXPECT_EQ(c.shape(), (Shape<2>{3, 4}));
  EXPECT_EQ(b.shape(), (Shape<2>{0, 0}));
  EXPECT_TRUE(b.view().absent());
}

TEST(HostTensor, RejectsBadShapes) {
  SSMKIT_EXPECT_ERROR((HostTensor<float, 2>({4, -1}, "weights")), "weights", "shape[1]", "-1");
  const Index big = Index{1} << 62;
  SSMKIT_EXPECT_ERROR((HostTensor<float, 2>({big, 4}, "huge")), "huge", "element count");
  SSMKIT_EXPECT_ERROR((HostTensor<double, 1>({big}, "bytes")), "bytes", "byte size");
}

}  // namespace
}  // namespace ssmkit
