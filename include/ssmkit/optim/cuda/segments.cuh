// One kernel launch over many parameter tensors: the tensors are cut into fixed-size chunks, a
// block per chunk, and a device table lists each tensor's first block; a block finds its tensor
// by a binary search of that table.
#pragma once

#include "ssmkit/core/tensor_view.hpp"

namespace ssmkit::optim::detail {

/// The entry of `segments` (count >= 1, first_block increasing from 0) that covers `block`, and
/// the element range [begin, end) of that entry's tensor the block takes (`chunk` per block).
template <class Segment>
__device__ __forceinline__ const Segment& find_segment(const Segment* segments, int count,
                                                       Index block, Index chunk, Index& begin,
                                                       Index& end) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (segments[mid].first_block <= block)
      lo = mid;
    else
      hi = mid - 1;
  }
  const Segment& s = segments[lo];
  begin = (block - s.first_block) * chunk;
  end = min(begin + chunk, s.n);
  return s;
}

}  // namespace ssmkit::optim::detail
