// Non-owning strided views of rank 1 to 4 over host or device memory.
// Shapes and strides count elements; construction validates them (non-negative, no overflow, no
// aliasing, inside the buffer's capacity when it is known), so kernels can index without checks.
#pragma once

#include "ssmkit/core/device.hpp"
#include "ssmkit/core/error.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>

namespace ssmkit {

using Index = std::int64_t;

template <int Rank>
using Shape = std::array<Index, Rank>;

/// Row-major (last index fastest) strides of a shape.
template <int Rank>
constexpr Shape<Rank> contiguous_strides(const Shape<Rank>& shape) {
  Shape<Rank> s{};
  Index acc = 1;
  for (int d = Rank - 1; d >= 0; --d) {
    s[d] = acc;
    // Saturates instead of overflowing: a shape that large is then rejected by validation.
    if (__builtin_mul_overflow(acc, shape[d] > 0 ? shape[d] : 1, &acc))
      acc = std::numeric_limits<Index>::max();
  }
  return s;
}

namespace detail {

template <int Rank>
std::string shape_string(const Shape<Rank>& s) {
  std::string out = "(";
  for (int d = 0; d < Rank; ++d)
    out += (d ? ", " : "") + std::to_string(s[d]);
  return out + ")";
}

template <class X>
struct identity {
  using type = X;
};

inline bool mul_overflows(Index a, Index b, Index* out) {
  return __builtin_mul_overflow(a, b, out);
}
inline bool add_overflows(Index a, Index b, Index* out) {
  return __builtin_add_overflow(a, b, out);
}

}  // namespace detail

/// Number of elements of `shape`, after checking every extent is >= 0 and the product fits.
template <int Rank>
Index checked_numel(const Shape<Rank>& shape, const char* name) {
  Index n = 1;
  for (int d = 0; d < Rank; ++d) {
    const std::string dim = "shape[" + std::to_string(d) + "]";
    SSMKIT_CHECK(shape[d] >= 0, name, dim.c_str(), ">= 0", shape[d]);
    SSMKIT_CHECK(!detail::mul_overflows(n, shape[d], &n), name, "element count", "to fit in int64",
                 detail::shape_string<Rank>(shape));
  }
  return n;
}

/// A strided view of `Rank` dimensions. `T` may be const. Copying a view copies the pointer only.
template <class T, int Rank>
class TensorView {
  static_assert(Rank >= 1 && Rank <= 4, "ssmkit views have rank 1 to 4");

 public:
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  static constexpr int rank = Rank;

  /// An empty view: null data, every extent 0. Optional kernel arguments use it for "absent".
  TensorView() = default;

  /// Contiguous row-major view.
  TensorView(T* data, const Shape<Rank>& shape, const char* name = "tensor",
             Device device = Device::CPU, Index capacity = -1)
      : TensorView(data, shape, contiguous_strides<Rank>(shape), name, device, capacity) {}

  /// Strided view. `capacity`, when >= 0, is the number of elements the buffer holds from `data`
  /// on; every addressed element must lie inside it.
  TensorView(T* data, const Shape<Rank>& shape, const Shape<Rank>& strides,
             const char* name = "tensor", Device device = Device::CPU, Index capacity = -1)
      : data_(data), shape_(shape), strides_(strides), device_(device) {
    validate(name, capacity);
  }

  /// A view of const elements converts implicitly from a mutable one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  TensorView(const TensorView<U, Rank>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()),
        shape_(other.shape()),
        strides_(other.strides()),
        device_(other.device()) {}

  T* data() const { return data_; }
  const Shape<Rank>& shape() const { return shape_; }
  const Shape<Rank>& strides() const { return strides_; }
  Index size(int d) const { return shape_[d]; }
  Index stride(int d) const { return strides_[d]; }
  Device device() const { return device_; }
  Index numel() const {
    return std::accumulate(shape_.begin(), shape_.end(), Index{1}, std::multiplies<>());
  }
  bool empty() const { return numel() == 0; }
  /// True for the default-constructed "absent" view (optional arguments).
  bool absent() const { return data_ == nullptr && empty(); }

  bool is_contiguous() const { return strides_ == contiguous_strides<Rank>(shape_); }

  template <class... I>
  Index offset(I... idx) const {
    static_assert(sizeof...(I) == Rank, "one index per dimension");
    const Index ix[] = {static_cast<Index>(idx)...};
    Index off = 0;
    for (int d = 0; d < Rank; ++d)
      off += ix[d] * strides_[d];
    return off;
  }

  template <class... I>
  T& operator()(I... idx) const {
    return data_[offset(idx...)];
  }

  /// The sub-view with dimension 0 fixed at `i` (rank decreases by one).
  template <int R = Rank, class = std::enable_if_t<(R > 1)>>
  TensorView<T, Rank - 1> operator[](Index i) const {
    TensorView<T, Rank - 1> v;
    Shape<Rank - 1> sh{}, st{};
    for (int d = 1; d < Rank; ++d) {
      sh[d - 1] = shape_[d];
      st[d - 1] = strides_[d];
    }
    return TensorView<T, Rank - 1>::unchecked(data_ + i * strides_[0], sh, st, device_);
  }

  /// The same memory with dimensions `a` and `b` swapped (no copy).
  TensorView transposed(int a, int b) const {
    Shape<Rank> sh = shape_, st = strides_;
    std::swap(sh[a], sh[b]);
    std::swap(st[a], st[b]);
    return unchecked(data_, sh, st, device_);
  }

  /// Builds a view whose validity the caller guarantees (derived from a validated view).
  static TensorView unchecked(T* data, const Shape<Rank>& shape, const Shape<Rank>& strides,
                              Device device) {
    TensorView v;
    v.data_ = data;
    v.shape_ = shape;
    v.strides_ = strides;
    v.device_ = device;
    return v;
  }

  /// Number of elements between the first and one past the last addressed element.
  Index span() const {
    if (empty())
      return 0;
    Index last = 0;
    for (int d = 0; d < Rank; ++d)
      last += (shape_[d] - 1) * strides_[d];
    return last + 1;
  }

 private:
  void validate(const char* name, Index capacity) const {
    const Index n = checked_numel<Rank>(shape_, name);
    for (int d = 0; d < Rank; ++d) {
      const std::string dim = "stride[" + std::to_string(d) + "]";
      SSMKIT_CHECK(strides_[d] >= 0, name, dim.c_str(), ">= 0", strides_[d]);
    }
    if (n == 0)
      return;
    SSMKIT_CHECK(data_ != nullptr, name, "data pointer", "non-null for a non-empty view",
                 "nullptr with shape " + detail::shape_string<Rank>(shape_));
    // Largest offset, with overflow checks: the address arithmetic of every kernel relies on it.
    Index last = 0;
    for (int d = 0; d < Rank; ++d) {
      Index term = 0;
      SSMKIT_CHECK(!detail::mul_overflows(shape_[d] - 1, strides_[d], &term) &&
                       !detail::add_overflows(last, term, &last),
                   name, "largest offset", "to fit in int64",
                   "overflow with strides " + detail::shape_string<Rank>(strides_));
    }
    if (capacity >= 0) {
      SSMKIT_CHECK(last < capacity, name, "largest offset",
                   "< capacity " + std::to_string(capacity), last);
    }
    // No two indices may address the same element: ordering the dimensions of extent > 1 by
    // stride, each stride must step past everything the smaller ones reach.
    std::array<int, Rank> order{};
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return strides_[a] < strides_[b]; });
    Index reach = 0;  // offsets 0..reach are addressed by the dimensions seen so far
    for (int k = 0; k < Rank; ++k) {
      const int d = order[k];
      if (shape_[d] <= 1)
        continue;
      SSMKIT_CHECK(strides_[d] > reach, name, ("stride[" + std::to_string(d) + "]").c_str(),
                   "> " + std::to_string(reach) + " so that elements do not alias", strides_[d]);
      reach += (shape_[d] - 1) * strides_[d];
    }
  }

  T* data_ = nullptr;
  Shape<Rank> shape_{};
  Shape<Rank> strides_{};
  Device device_ = Device::CPU;
};

template <class T>
using Vec = TensorView<T, 1>;
template <class T>
using Mat = TensorView<T, 2>;

/// Checks that `v` has exactly `expected` shape; the message names `arg`.
template <class T, int Rank>
void check_shape(const TensorView<T, Rank>& v, const char* arg,
                 const typename detail::identity<Shape<Rank>>::type& expected) {
  SSMKIT_CHECK(v.shape() == expected, arg, "shape", detail::shape_string<Rank>(expected),
               detail::shape_string<Rank>(v.shape()));
}

/// Checks that `v` lives on `device`.
template <class T, int Rank>
void check_device(const TensorView<T, Rank>& v, const char* arg, Device device) {
  SSMKIT_CHECK(v.device() == device, arg, "device", device, v.device());
}

/// Whether the address ranges of two views intersect (an empty view has none). The addresses
/// compare as integers, as the views may lie in different buffers; views that interleave in one
/// buffer without sharing an element count as overlapping.
template <class A, int RA, class B, int RB>
bool overlaps(const TensorView<A, RA>& a, const TensorView<B, RB>& b) {
  if (a.empty() || b.empty())
    return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  return a0 < b0 + sizeof(B) * static_cast<std::size_t>(b.span()) &&
         b0 < a0 + sizeof(A) * static_cast<std::size_t>(a.span());
}

/// Throws unless `out` (written while `in` is read) and `in` are disjoint; names both.
template <class A, int RA, class B, int RB>
void check_disjoint(const TensorView<A, RA>& out, const char* out_name, const TensorView<B, RB>& in,
                    const char* in_name) {
  SSMKIT_CHECK(!overlaps(out, in), out_name, "memory", std::string("disjoint from ") + in_name,
               std::string("an overlap with ") + in_name);
}

/// check_disjoint, except that `out` may be the very elements of `in` (same address, shape and
/// strides): for operations that read each element (or row) before writing it, in place.
template <class A, class B, int R>
void check_disjoint_or_same(const TensorView<A, R>& out, const char* out_name,
                            const TensorView<B, R>& in, const char* in_name) {
  const bool same = static_cast<const void*>(out.data()) == static_cast<const void*>(in.data()) &&
                    sizeof(A) == sizeof(B) && out.shape() == in.shape() &&
                    out.strides() == in.strides();
  if (!same)
    check_disjoint(out, out_name, in, in_name);
}

/// A view and the name of its argument, for the overlap checks over many views at once.
template <class V>
struct Named {
  const V& view;
  const char* name;
};
template <class V>
Named<V> named(const V& view, const char* name) {
  return {view, name};
}

/// check_disjoint of `out` against each of `ins`, in order.
template <class V, class... Ins>
void check_disjoint_from(const Named<V>& out, const Named<Ins>&... ins) {
  (check_disjoint(out.view, out.name, ins.view, ins.name), ...);
}

/// check_disjoint of every pair, each view against those after it (named first in a message).
template <class V, class... Rest>
void check_pairwise_disjoint(const Named<V>& first, const Named<Rest>&... rest) {
  check_disjoint_from(first, rest...);
  if constexpr (sizeof...(Rest) > 1)
    check_pairwise_disjoint(rest...);
}

/// Eigen::Map of a rank-2 host view (any strides), for matrix products and Eigen algorithms.
template <class T>
auto as_eigen(const TensorView<T, 2>& v) {
  using Scalar = std::remove_cv_t<T>;
  using MatrixType = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapType = std::conditional_t<std::is_const_v<T>, const MatrixType, MatrixType>;
  check_device(v, "as_eigen(view)", Device::CPU);
  return Eigen::Map<MapType, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>(
      v.data(), v.size(0), v.size(1),
      Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(v.stride(0), v.stride(1)));
}

/// Eigen::Map of a rank-1 host view as a column vector.
template <class T>
auto as_eigen(const TensorView<T, 1>& v) {
  using Scalar = std::remove_cv_t<T>;
  using VectorType = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using MapType = std::conditional_t<std::is_const_v<T>, const VectorType, VectorType>;
  check_device(v, "as_eigen(view)", Device::CPU);
  return Eigen::Map<MapType, Eigen::Unaligned, Eigen::InnerStride<Eigen::Dynamic>>(
      v.data(), v.size(0), Eigen::InnerStride<Eigen::Dynamic>(v.stride(0)));
}

/// A view of an Eigen matrix's memory (any storage order) on the host.
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m, const char* name = "matrix") {
  using Scalar = typename Derived::Scalar;
  const Index rs = Derived::IsRowMajor ? m.outerStride() : 1;
  const Index cs = Derived::IsRowMajor ? 1 : m.outerStride();
  return TensorView<Scalar, 2>(m.data(), {m.rows(), m.cols()}, {rs, cs}, name);
}

}  // namespace ssmkit
