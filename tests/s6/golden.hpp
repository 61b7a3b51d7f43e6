// Reader of the golden cases tools/make_s6_goldens.py writes: a text header naming options and
// tensor shapes, and the tensors' float64 values in a .bin next to it.
#pragma once

#include "testing.hpp"

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace ssmkit::testing {

struct Golden {
  std::map<std::string, int> options;
  std::map<std::string, std::vector<Index>> shapes;
  std::map<std::string, std::vector<double>> values;

  bool has(const std::string& name) const { return values.count(name) != 0; }

  /// The tensor `name` in its stored (row-major) layout, converted to T.
  template <class T, int Rank>
  HostTensor<T, Rank> tensor(const std::string& name) const {
    const auto& shape = shapes.at(name);
    EXPECT_EQ(shape.size(), static_cast<std::size_t>(Rank)) << name;
    Shape<Rank> s{};
    for (int d = 0; d < Rank; ++d)
      s[d] = shape[static_cast<std::size_t>(d)];
    HostTensor<T, Rank> t(s);
    const auto& v = values.at(name);
    for (Index i = 0; i < t.numel(); ++i)
      t.data()[i] = static_cast<T>(v[static_cast<std::size_t>(i)]);
    return t;
  }
};

inline Golden load_golden(const std::string& name) {
  const std::string base = std::string(SSMKIT_TEST_DATA_DIR) + "/s6/" + name;
  std::ifstream header(base + ".txt");
  std::ifstream bin(base + ".bin", std::ios::binary);
  EXPECT_TRUE(header && bin) << "missing golden " << base << ".{txt,bin}";
  Golden g;
  std::string line;
  std::getline(header, line);
  EXPECT_EQ(line, "ssmkit-golden 1");
  while (std::getline(header, line)) {
    std::istringstream is(line);
    std::string kind, key;
    is >> kind >> key;
    if (kind == "option") {
      is >> g.options[key];
      continue;
    }
    int rank = 0;
    is >> rank;
    std::vector<Index> shape(static_cast<std::size_t>(rank));
    Index n = 1;
    for (auto& s : shape) {
      is >> s;
      n *= s;
    }
    std::vector<double> v(static_cast<std::size_t>(n));
    bin.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * 8));
    EXPECT_TRUE(bin) << "short golden " << base << ".bin at " << key;
    g.shapes[key] = shape;
    g.values[key] = std::move(v);
  }
  EXPECT_EQ(bin.peek(), std::char_traits<char>::eof()) << "trailing bytes in " << base << ".bin";
  return g;
}

}  // namespace ssmkit::testing
