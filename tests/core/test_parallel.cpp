#include "testing.hpp"

#include <atomic>
#include <new>
#include <vector>

namespace ssmkit {
namespace {

TEST(Parallel, VisitsEveryIndexExactlyOnce) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<std::atomic<int>> hits(1003);
    parallel_for(0, 1003, [&](Index i) { hits[static_cast<std::size_t>(i)]++; });
    for (auto& h : hits)
      ASSERT_EQ(h.load(), 1);
  }
}

TEST(Parallel, EmptyAndOffsetRanges) {
  int calls = 0;
  parallel_for(5, 5, [&](Index) { ++calls; });
  EXPECT_EQ(calls, 0);
  std::vector<int> seen(10, 0);
  parallel_for(3, 7, [&](Index i) { seen[static_cast<std::size_t>(i)] = 1; });
  EXPECT_EQ(seen, (std::vector<int>{0, 0, 0, 1, 1, 1, 1, 0, 0, 0}));
}

// An exception leaves no OpenMP region: parallel_for rethrows the one fn threw after the loop,
// with one thread or two.
TEST(Parallel, RethrowsWhatTheBodyThrows) {
  const int before = max_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::atomic<int> calls{0};
    try {
      parallel_for(0, 64, [&](Index i) {
        ++calls;
        if (i == 40)
          throw std::bad_alloc();
      });
      ADD_FAILURE() << "no exception, threads " << threads;
    } catch (const std::bad_alloc&) {
    }
    EXPECT_GE(calls.load(), 1) << "threads " << threads;
    SSMKIT_EXPECT_ERROR(
        parallel_for(0, 8, [](Index i) { SSMKIT_CHECK(i != 3, "i", "value", "not 3", i); }),
        "ssmkit: i: value expected not 3, got 3");
  }
  set_num_threads(before);
}

TEST(Parallel, RejectsZeroThreads) {
#ifdef _OPENMP
  SSMKIT_EXPECT_ERROR(set_num_threads(0), "set_num_threads", ">= 1", "got 0");
#else
  GTEST_SKIP() << "built without OpenMP: set_num_threads is a no-op";
#endif
}

}  // namespace
}  // namespace ssmkit
