// Helpers shared by ssmkit's tests: seeded random fills and the relative error the suite judges by.
#pragma once

#include <ssmkit/core/dtype.hpp>
#include <ssmkit/core/error.hpp>
#include <ssmkit/core/host_tensor.hpp>
#include <ssmkit/core/parallel.hpp>
#include <ssmkit/core/tensor_view.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace ssmkit::testing {

/// ||a - b|| / ||b|| over n elements, in double; NaN or Inf anywhere gives +inf so it never passes.
template <class A, class B>
double rel_error(const A* a, const B* b, Index n) {
  double num = 0, den = 0;
  for (Index i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (!std::isfinite(x) || !std::isfinite(y))
      return std::numeric_limits<double>::infinity();
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

template <class A, class B>
double rel_error(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  return rel_error(a.data(), b.data(), static_cast<Index>(std::min(a.size(), b.size())));
}

/// Uniform values in [lo, hi), converted to T.
template <class T>
std::vector<T> random_vector(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v)
    x = static_cast<T>(dist(rng));
  return v;
}

template <class T, int Rank>
void fill_random(HostTensor<T, Rank>& t, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (Index i = 0; i < t.numel(); ++i)
    t.data()[i] = static_cast<T>(dist(rng));
}

/// Asserts that `stmt` throws ssmkit::Error whose message contains every one of `needles`.
#define SSMKIT_EXPECT_ERROR(stmt, ...)                                        \
  do {                                                                        \
    try {                                                                     \
      stmt;                                                                   \
      ADD_FAILURE() << "expected ssmkit::Error from: " #stmt;                 \
    } catch (const ::ssmkit::Error& e) {                                      \
      for (const std::string& needle : std::vector<std::string>{__VA_ARGS__}) \
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)      \
            << "message '" << e.what() << "' lacks '" << needle << "'";       \
    }                                                                         \
  } while (0)

}  // namespace ssmkit::testing
