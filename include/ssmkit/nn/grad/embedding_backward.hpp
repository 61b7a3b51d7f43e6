// Gradient of an embedding lookup y[t] = W[id_t]: dW[v] = Σ_{t : id_t = v} dy[t].
#pragma once

#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <string>

namespace ssmkit::nn {

/// Given token ids (tokens) and dy = ∂ℓ/∂y (tokens, dim): writes dweight (vocab, dim), or adds
/// to it with `accumulate` (an embedding tied to the LM head gets both gradients). dweight must
/// not overlap ids or dy.
template <class T, class I>
void embedding_backward(TensorView<const I, 1> ids, TensorView<const T, 2> dy,
                        TensorView<T, 2> dweight, bool accumulate = false) {
  const Index tokens = ids.size(0), vocab = dweight.size(0), dim = dweight.size(1);
  check_device(ids, "ids", Device::CPU);
  check_device(dy, "dy", Device::CPU);
  check_device(dweight, "dweight", Device::CPU);
  check_shape(dy, "dy", {tokens, dim});
  // dweight is zeroed and written while ids and dy are still to be read.
  check_disjoint(dweight, "dweight", dy, "dy");
  check_disjoint(dweight, "dweight", ids, "ids");
  for (Index t = 0; t < tokens; ++t) {
    const Index id = static_cast<Index>(ids(t));
    SSMKIT_CHECK(id >= 0 && id < vocab, "ids", ("element " + std::to_string(t)).c_str(),
                 "in [0, " + std::to_string(vocab) + ")", id);
  }
  // Threads own column blocks, so rows hit by several tokens need no atomics; the tokens are
  // added in order, so the result does not depend on the thread count.
  constexpr Index kBlock = 64;
  parallel_for(0, (dim + kBlock - 1) / kBlock, [&](Index blk) {
    const Index c0 = blk * kBlock, c1 = std::min(dim, c0 + kBlock);
    if (!accumulate)
      for (Index v = 0; v < vocab; ++v)
        for (Index c = c0; c < c1; ++c)
          dweight(v, c) = T(0);
    for (Index t = 0; t < tokens; ++t) {
      const Index id = static_cast<Index>(ids(t));
      for (Index c = c0; c < c1; ++c)
        dweight(id, c) += dy(t, c);
    }
  });
}

}  // namespace ssmkit::nn
