// Cross-entropy of logits against integer targets, with its gradient, as
// torch.nn.functional.cross_entropy computes it (reduction "mean", ignore_index):
// ℓ = −(1/count)·Σ_t log softmax(z_t)[y_t], ∂ℓ/∂z_t = (softmax(z_t) − onehot(y_t)) / count.
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/parallel.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace ssmkit::nn {

/// The mean loss over tokens whose target is not `ignore_index` (0 when there are none). Writes
/// dlogits (tokens, vocab) unless absent; ignored tokens get zero rows. Targets must lie in
/// [0, vocab) or equal ignore_index. dlogits may be logits' memory (the same view), and must not
/// overlap logits otherwise, nor targets.
template <class T, class I>
double cross_entropy(TensorView<const T, 2> logits, TensorView<const I, 1> targets,
                     TensorView<T, 2> dlogits, Index ignore_index = -100) {
  using Acc = accum_t<T>;
  const Index tokens = logits.size(0), vocab = logits.size(1);
  check_device(logits, "logits", Device::CPU);
  check_device(targets, "targets", Device::CPU);
  check_shape(targets, "targets", {tokens});
  if (!dlogits.absent()) {
    check_device(dlogits, "dlogits", Device::CPU);
    check_shape(dlogits, "dlogits", {tokens, vocab});
    // Each row of logits is read whole before dlogits' row is written: dlogits may be logits'
    // very memory, but no other overlap; targets are read again row by row.
    check_disjoint_or_same(dlogits, "dlogits", logits, "logits");
    check_disjoint(dlogits, "dlogits", targets, "targets");
  }
  Index count = 0;
  for (Index t = 0; t < tokens; ++t) {
    const Index y = static_cast<Index>(targets(t));
    if (y == ignore_index)
      continue;
    SSMKIT_CHECK(y >= 0 && y < vocab, "targets", ("element " + std::to_string(t)).c_str(),
                 "in [0, " + std::to_string(vocab) + ") or the ignore_index", y);
    ++count;
  }
  std::vector<double> row_loss(static_cast<std::size_t>(tokens), 0.0);
  const Acc scale = count ? Acc(1) / static_cast<Acc>(count) : Acc(0);
  parallel_for(0, tokens, [&](Index t) {
    const Index y = static_cast<Index>(targets(t));
    if (y == ignore_index) {
      if (!dlogits.absent())
        for (Index v = 0; v < vocab; ++v)
          dlogits(t, v) = T(0);
      return;
    }
    Acc mx = static_cast<Acc>(logits(t, 0));
    for (Index v = 1; v < vocab; ++v)
      mx = std::max(mx, static_cast<Acc>(logits(t, v)));
    Acc sum = 0;
    for (Index v = 0; v < vocab; ++v)
      sum += std::exp(static_cast<Acc>(logits(t, v)) - mx);
    const Acc log_sum = std::log(sum);
    row_loss[static_cast<std::size_t>(t)] =
        static_cast<double>(log_sum - (static_cast<Acc>(logits(t, y)) - mx));
    if (!dlogits.absent())
      for (Index v = 0; v < vocab; ++v) {
        const Acc p = std::exp(static_cast<Acc>(logits(t, v)) - mx - log_sum);
        dlogits(t, v) = static_cast<T>((p - (v == y ? Acc(1) : Acc(0))) * scale);
      }
  });
  double total = 0;
  for (double l : row_loss)
    total += l;
  return count ? total / static_cast<double>(count) : 0.0;
}

}  // namespace ssmkit::nn
