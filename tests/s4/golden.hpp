// Reads tests/data/s4/*.txt (written by tools/make_s4_goldens.py): `key count v0 v1 ...` per line.
#pragma once

#include <ssmkit/math/nplr.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace ssmkit::testing {

class Golden {
 public:
  explicit Golden(const std::string& file) {
    const std::string path = std::string(SSMKIT_TEST_DATA_DIR) + "/s4/" + file;
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << "cannot open " << path;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#')
        continue;
      std::istringstream is(line);
      std::string key;
      std::size_t n = 0;
      is >> key >> n;
      std::vector<double> v(n);
      for (auto& x : v)
        is >> x;
      EXPECT_FALSE(is.fail()) << "malformed record " << key;
      records_[key] = std::move(v);
    }
  }

  const std::vector<double>& operator[](const std::string& key) const {
    static const std::vector<double> none;
    auto it = records_.find(key);
    EXPECT_NE(it, records_.end()) << "no golden record " << key;
    return it == records_.end() ? none : it->second;
  }

  /// A square or rows x cols matrix from a row-major record.
  math::RMatrix<double> matrix(const std::string& key, Index rows, Index cols) const {
    const auto& v = (*this)[key];
    EXPECT_EQ(v.size(), static_cast<std::size_t>(rows * cols)) << key;
    math::RMatrix<double> m = math::RMatrix<double>::Zero(rows, cols);
    for (Index i = 0; i < rows && static_cast<std::size_t>(i * cols) < v.size(); ++i)
      for (Index j = 0; j < cols; ++j)
        m(i, j) = v[i * cols + j];
    return m;
  }

 private:
  std::map<std::string, std::vector<double>> records_;
};

/// ||a - b|| / ||b|| of two Eigen objects (+inf on NaN).
template <class A, class B>
double rel_err(const A& a, const B& b) {
  const double num = (a - b).norm(), den = b.norm();
  if (!std::isfinite(num) || !std::isfinite(den))
    return std::numeric_limits<double>::infinity();
  return den == 0 ? num : num / den;
}

}  // namespace ssmkit::testing
