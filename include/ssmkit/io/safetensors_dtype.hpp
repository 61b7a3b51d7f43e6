// The element types of the safetensors format (little-endian, IEEE 754 / bfloat16 / two's
// complement): their names, the C++ type stored for each, and checked conversion between them.
#pragma once

#include "ssmkit/core/dtype.hpp"
#include "ssmkit/core/error.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error \
    "ssmkit's safetensors reader maps little-endian data directly: a little-endian host is needed"
#endif

namespace ssmkit::io {

/// The DType of a safetensors dtype name; nullopt for names ssmkit does not support (F8_*, U16..).
inline std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::Bool})
    if (name_of(t) == name)
      return t;
  return std::nullopt;
}

constexpr bool is_floating(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

namespace detail {

template <class T>
T load_unaligned(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// The floating-point element at `p` of dtype `t` (one of F64/F32/F16/BF16), widened to double.
inline double load_floating(const std::uint8_t* p, DType t) {
  switch (t) {
    case DType::F64:
      return load_unaligned<double>(p);
    case DType::F32:
      return load_unaligned<float>(p);
    case DType::F16:
      return static_cast<double>(static_cast<float>(
          Eigen::numext::bit_cast<Eigen::half>(load_unaligned<std::uint16_t>(p))));
    default:  // BF16
      return static_cast<double>(static_cast<float>(
          Eigen::numext::bit_cast<Eigen::bfloat16>(load_unaligned<std::uint16_t>(p))));
  }
}

/// The integer element at `p` of dtype `t` (I64..U8 or BOOL); every one fits in int64.
inline std::int64_t load_integer(const std::uint8_t* p, DType t) {
  switch (t) {
    case DType::I64:
      return load_unaligned<std::int64_t>(p);
    case DType::I32:
      return load_unaligned<std::int32_t>(p);
    case DType::I16:
      return load_unaligned<std::int16_t>(p);
    case DType::I8:
      return load_unaligned<std::int8_t>(p);
    default:  // U8, BOOL: a byte, read as a byte so that a BOOL of 2 is caught, not undefined
      return *p;
  }
}

}  // namespace detail

/// Converts one element of dtype `src` at `p` to T. Floating targets accept any floating source
/// (rounded to nearest) whose value stays finite in T: NaN and inf pass through, but a finite
/// value past T's range is refused rather than turned into inf. Integer targets accept any integer
/// source whose value fits (BOOL counts as an integer limited to 0 and 1). Returns false when the
/// value does not fit or the kinds differ; the caller names the tensor in its error.
template <class T>
bool convert_element(const std::uint8_t* p, DType src, T* out) {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) {
    if (!is_floating(src))
      return false;
    const double v = detail::load_floating(p, src);
    *out = static_cast<T>(v);
    return !std::isfinite(v) || std::isfinite(*out);
  } else if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
    if (!is_floating(src))
      return false;
    // Half-precision sources convert exactly through float; F64 rounds twice (to float first).
    const double v = detail::load_floating(p, src);
    *out = static_cast<T>(static_cast<float>(v));
    return !std::isfinite(v) || std::isfinite(static_cast<float>(*out));
  } else {
    static_assert(std::is_integral_v<T>, "read_as supports the floating and integer storage types");
    if (is_floating(src))
      return false;
    const std::int64_t v = detail::load_integer(p, src);
    if (src == DType::Bool && v > 1)
      return false;
    const std::int64_t lo = std::is_same_v<T, bool> ? 0 : std::numeric_limits<T>::min();
    const std::int64_t hi = std::is_same_v<T, bool> ? 1 : std::numeric_limits<T>::max();
    if (v < lo || v > hi)
      return false;
    *out = static_cast<T>(v);
    return true;
  }
}

}  // namespace ssmkit::io
