// Scratch memory reused across calls of the nn modules, so that decoding one token after another
// does not allocate: a fixed set of buffers that grow to the largest size asked and never shrink.
#pragma once

#include "ssmkit/core/host_tensor.hpp"

#include <array>

namespace ssmkit::nn {

template <class T, int Slots>
class Workspace {
 public:
  /// At least `n` elements for buffer `slot`, contents unspecified. A later get() of the same
  /// slot may move the buffer; other slots stay where they are.
  T* get(int slot, Index n) {
    HostTensor<T, 1>& b = buffers_.at(static_cast<std::size_t>(slot));
    if (b.numel() < n)
      b = HostTensor<T, 1>(Shape<1>{n}, "workspace");
    return b.data();
  }

 private:
  std::array<HostTensor<T, 1>, Slots> buffers_;
};

}  // namespace ssmkit::nn
