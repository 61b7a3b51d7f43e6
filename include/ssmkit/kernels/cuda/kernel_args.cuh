// Host helpers that turn validated views into kernel arguments: strides copied, 32-bit time
// strides checked, 16-byte alignment tested.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace ssmkit::cuda::detail {

template <class V, std::size_t R>
void copy_strides(const V& v, Index (&s)[R]) {
  for (std::size_t i = 0; i < R; ++i)
    s[i] = v.absent() ? 0 : v.stride(static_cast<int>(i));
}

/// Throws unless |stride(1)| of `v` (absent or a (batch, time, …) view) is at most `limit`: the
/// kernels step through time with 32-bit offsets.
template <class View>
void check_time_stride(const View& v, const char* name, Index limit) {
  const Index s = v.absent() ? 0 : v.stride(1);
  SSMKIT_CHECK(s <= limit && s >= -limit, name, "time stride (stride(1))",
               "|stride| <= " + std::to_string(limit) + " on CUDA", s);
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace ssmkit::cuda::detail
