// Complex arithmetic for S4's device code in float or double: a plain pair with the operations
// kernel generation needs (products, reciprocal, exp, 2 atanh, expm1), and the one-mode
// discretisation of math::discretize_mode (ZOH and bilinear) computed on the device.
#pragma once

#include "ssmkit/math/discretize.hpp"

#include <cuda_runtime.h>

namespace ssmkit::cuda::detail {

template <class T>
struct Cplx {
  T re, im;
};

template <class T>
__host__ __device__ __forceinline__ Cplx<T> operator+(Cplx<T> a, Cplx<T> b) {
  return {a.re + b.re, a.im + b.im};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> operator-(Cplx<T> a, Cplx<T> b) {
  return {a.re - b.re, a.im - b.im};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> operator*(Cplx<T> a, Cplx<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> operator*(T s, Cplx<T> a) {
  return {s * a.re, s * a.im};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> conj(Cplx<T> a) {
  return {a.re, -a.im};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> recip(Cplx<T> a) {
  const T inv = T(1) / (a.re * a.re + a.im * a.im);
  return {a.re * inv, -a.im * inv};
}
template <class T>
__host__ __device__ __forceinline__ Cplx<T> operator/(Cplx<T> a, Cplx<T> b) {
  return a * recip(b);
}
template <class T, class U>
__host__ __device__ __forceinline__ Cplx<T> cast(Cplx<U> a) {
  return {static_cast<T>(a.re), static_cast<T>(a.im)};
}

__device__ __forceinline__ Cplx<float> cexp(Cplx<float> z) {
  float s, c;
  sincosf(z.im, &s, &c);
  const float m = expf(z.re);
  return {m * c, m * s};
}
__device__ __forceinline__ Cplx<double> cexp(Cplx<double> z) {
  double s, c;
  sincos(z.im, &s, &c);
  const double m = exp(z.re);
  return {m * c, m * s};
}

/// 2 atanh(w) = log((1 + w) / (1 - w)), accurate for small |w| (as math::discretize_mode's):
/// the real part through log1p, where the log of the rounded quotient would cancel.
__device__ __forceinline__ Cplx<double> two_atanh(Cplx<double> w) {
  const double x = w.re, y = w.im;
  return {0.5 * log1p(4 * x / ((1 - x) * (1 - x) + y * y)),
          atan2(2 * y, (1 - x) * (1 + x) - y * y)};
}

/// exp(z) - 1, accurate for small |z| (as math::expm1).
__device__ __forceinline__ Cplx<double> cexpm1(Cplx<double> z) {
  const double s = sin(z.im / 2);
  return {expm1(z.re) * cos(z.im) - 2 * s * s, exp(z.re) * sin(z.im)};
}

/// math::DiagonalMode of one eigenvalue on the device, in double: log A_bar and B_bar / B.
struct DeviceMode {
  Cplx<double> log_A_bar, B_scale;
};

__device__ __forceinline__ DeviceMode discretize_mode(Cplx<double> lambda, double dt,
                                                      math::Discretization method) {
  const Cplx<double> z = dt * lambda;
  if (method == math::Discretization::ZOH) {
    const Cplx<double> scale = (z.re == 0 && z.im == 0) ? Cplx<double>{dt, 0} : cexpm1(z) / lambda;
    return {z, scale};
  }
  const Cplx<double> den{1 - z.re / 2, -z.im / 2};
  return {two_atanh(0.5 * z), dt * recip(den)};
}

}  // namespace ssmkit::cuda::detail
