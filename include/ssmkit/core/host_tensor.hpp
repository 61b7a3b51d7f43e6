// An owning, 64-byte-aligned host buffer with a shape: the CPU storage of weights, activations
// and states. It hands out validated views of itself.
#pragma once

#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace ssmkit {

namespace detail {
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
}  // namespace detail

/// Owning contiguous row-major host tensor of rank 1 to 4. Elements are value-initialised.
template <class T, int Rank>
class HostTensor {
 public:
  static constexpr std::size_t kAlignment = 64;

  HostTensor() = default;

  explicit HostTensor(const Shape<Rank>& shape, const char* name = "tensor") : shape_(shape) {
    const Index n = checked_numel<Rank>(shape, name);
    SSMKIT_CHECK(static_cast<std::size_t>(n) <= (SIZE_MAX - kAlignment) / sizeof(T), name,
                 "byte size", "to fit in size_t", n);
    if (n > 0) {
      const std::size_t bytes =
          (static_cast<std::size_t>(n) * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
      void* p = std::aligned_alloc(kAlignment, bytes);
      if (p == nullptr)
        throw std::bad_alloc();
      data_.reset(static_cast<T*>(p));
      std::uninitialized_value_construct_n(data_.get(), n);
    }
  }

  /// Moves leave the source empty (every extent 0), so that its view is absent, not a shape
  /// over null data.
  HostTensor(HostTensor&& other) noexcept
      : data_(std::move(other.data_)), shape_(std::exchange(other.shape_, Shape<Rank>{})) {}
  HostTensor& operator=(HostTensor&& other) noexcept {
    data_ = std::move(other.data_);
    shape_ = std::exchange(other.shape_, Shape<Rank>{});
    return *this;
  }

  /// Deep copy (explicit, so that accidental copies of large weights do not happen).
  HostTensor clone() const {
    HostTensor c(shape_);
    if (numel() > 0)
      std::memcpy(c.data(), data(), sizeof(T) * static_cast<std::size_t>(numel()));
    return c;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  const Shape<Rank>& shape() const { return shape_; }
  Index size(int d) const { return shape_[d]; }
  Index numel() const {
    Index n = 1;
    for (Index s : shape_)
      n *= s;
    return n;
  }

  TensorView<T, Rank> view() {
    return TensorView<T, Rank>::unchecked(data(), shape_, contiguous_strides<Rank>(shape_),
                                          Device::CPU);
  }
  TensorView<const T, Rank> view() const {
    return TensorView<const T, Rank>::unchecked(data(), shape_, contiguous_strides<Rank>(shape_),
                                                Device::CPU);
  }
  operator TensorView<T, Rank>() { return view(); }              // NOLINT
  operator TensorView<const T, Rank>() const { return view(); }  // NOLINT

  template <class... I>
  T& operator()(I... idx) {
    return data_.get()[view().offset(idx...)];
  }
  template <class... I>
  const T& operator()(I... idx) const {
    return data_.get()[view().offset(idx...)];
  }

  void fill(const T& v) { std::fill_n(data(), numel(), v); }

 private:
  std::unique_ptr<T, detail::AlignedFree> data_;
  Shape<Rank> shape_{};
};

}  // namespace ssmkit
