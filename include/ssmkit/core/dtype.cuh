// dtype_traits for the CUDA storage types __half and __nv_bfloat16 (both accumulate in float),
// and the float conversions device code uses to load and store any storage type.
#pragma once

#include "ssmkit/core/dtype.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ssmkit {

template <>
struct dtype_traits<__half> {
  static constexpr DType dtype = DType::F16;
  using accum = float;
};
template <>
struct dtype_traits<__nv_bfloat16> {
  static constexpr DType dtype = DType::BF16;
  using accum = float;
};

namespace cuda {

/// Storage type -> float, in device code.
__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

/// float -> storage type (round to nearest even), in device code.
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace cuda
}  // namespace ssmkit
