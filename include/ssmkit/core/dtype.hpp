// Element types ssmkit stores on the CPU and the type each one accumulates in.
// float and double accumulate in themselves; Eigen::half and Eigen::bfloat16 accumulate in float.
#pragma once

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>
#include <type_traits>

namespace ssmkit {

/// Runtime tag of an element type (safetensors' dtype names are the same words).
enum class DType : std::uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

constexpr std::size_t size_of(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::Bool:
      return 1;
  }
  return 0;
}

constexpr std::string_view name_of(DType t) {
  switch (t) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::Bool:
      return "BOOL";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, DType t) {
  return os << name_of(t);
}

/// dtype_traits<T>: `dtype` (the runtime tag) and `accum` (the type arithmetic on T runs in).
/// Specialised here for the CPU types; kernels/cuda adds __half and __nv_bfloat16.
template <class T>
struct dtype_traits;

template <>
struct dtype_traits<double> {
  static constexpr DType dtype = DType::F64;
  using accum = double;
};
template <>
struct dtype_traits<float> {
  static constexpr DType dtype = DType::F32;
  using accum = float;
};
template <>
struct dtype_traits<Eigen::half> {
  static constexpr DType dtype = DType::F16;
  using accum = float;
};
template <>
struct dtype_traits<Eigen::bfloat16> {
  static constexpr DType dtype = DType::BF16;
  using accum = float;
};
template <>
struct dtype_traits<std::int64_t> {
  static constexpr DType dtype = DType::I64;
  using accum = std::int64_t;
};
template <>
struct dtype_traits<std::int32_t> {
  static constexpr DType dtype = DType::I32;
  using accum = std::int64_t;
};
template <>
struct dtype_traits<std::int16_t> {
  static constexpr DType dtype = DType::I16;
  using accum = std::int64_t;
};
template <>
struct dtype_traits<std::int8_t> {
  static constexpr DType dtype = DType::I8;
  using accum = std::int64_t;
};
template <>
struct dtype_traits<std::uint8_t> {
  static constexpr DType dtype = DType::U8;
  using accum = std::int64_t;
};
template <>
struct dtype_traits<bool> {
  static constexpr DType dtype = DType::Bool;
  using accum = std::int64_t;
};

template <class T>
using accum_t = typename dtype_traits<std::remove_cv_t<T>>::accum;

template <class T>
constexpr DType dtype_of = dtype_traits<std::remove_cv_t<T>>::dtype;

/// Converts between a storage type and its accumulate type (or any arithmetic type).
template <class To, class From>
inline To convert(From x) {
  return static_cast<To>(x);
}

}  // namespace ssmkit
