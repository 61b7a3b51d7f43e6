// The token ids and targets of a language-model batch (batch, L) on the host, checked against the
// vocabulary and flattened sequence after sequence: what the CPU and CUDA mamba_lm_backward read.
#pragma once

#include "ssmkit/core/tensor_view.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace ssmkit::nn::detail {

/// Throws unless every id lies in [0, vocab); returns the ids.
inline std::vector<std::int64_t> checked_token_ids(TensorView<const std::int64_t, 2> ids,
                                                   Index vocab) {
  check_device(ids, "ids", Device::CPU);
  std::vector<std::int64_t> flat;
  for (Index b = 0; b < ids.size(0); ++b)
    for (Index t = 0; t < ids.size(1); ++t) {
      SSMKIT_CHECK(ids(b, t) >= 0 && ids(b, t) < vocab, "ids",
                   ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                   "in [0, vocab_size = " + std::to_string(vocab) + ")", ids(b, t));
      flat.push_back(ids(b, t));
    }
  return flat;
}

/// Throws unless targets is (batch, L) and every target lies in [0, vocab) or is ignore_index;
/// returns the targets and sets `counted` to how many are not ignored.
inline std::vector<std::int64_t> checked_targets(TensorView<const std::int64_t, 2> targets,
                                                 Index batch, Index L, Index vocab,
                                                 Index ignore_index, Index& counted) {
  check_device(targets, "targets", Device::CPU);
  check_shape(targets, "targets", {batch, L});
  std::vector<std::int64_t> flat;
  counted = 0;
  for (Index b = 0; b < batch; ++b)
    for (Index t = 0; t < L; ++t) {
      const std::int64_t y = targets(b, t);
      SSMKIT_CHECK(y == ignore_index || (y >= 0 && y < vocab), "targets",
                   ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                   "in [0, " + std::to_string(vocab) + ") or the ignore_index", y);
      flat.push_back(y);
      counted += y != ignore_index;
    }
  return flat;
}

}  // namespace ssmkit::nn::detail
