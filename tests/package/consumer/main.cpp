// Uses ssmkit's public headers the way an embedding application would, and checks one number.
#include <ssmkit/ssmkit.hpp>

#include <cstdio>

int main() {
  ssmkit::HostTensor<double, 2> m({3, 4}, "m");
  for (ssmkit::Index i = 0; i < 3; ++i)
    for (ssmkit::Index j = 0; j < 4; ++j)
      m(i, j) = static_cast<double>(i * 4 + j);
  const double sum = ssmkit::as_eigen(m.view()).sum();  // 0 + 1 + ... + 11
  try {
    ssmkit::TensorView<float, 1> bad(nullptr, {3}, "bad");
    return 1;
  } catch (const ssmkit::Error&) {
  }
  std::printf("ssmkit %s consumer: sum %.1f\n", SSMKIT_VERSION_STRING, sum);
  return sum == 66.0 ? 0 : 1;
}
