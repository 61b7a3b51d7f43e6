// Device math the scan kernels share: Ā = exp(Δ·A) as ex2.approx on the MUFU, Mamba's
// Δ = softplus(δ + bias), the SiLU gate and σ, all without branches.
#pragma once

namespace ssmkit::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2_mufu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// e^x through ex2.approx.ftz: __expf without -ftz also rescales arguments below -126 to keep
/// denormal results, three instructions more per call. Here e^x only enters 1 + e^x, where a
/// denormal vanishes anyway, or softplus(x) = max(x, 0) + log1p(e^-|x|), which it moves by less
/// than 1.2e-38.
__device__ __forceinline__ float exp_ftz(float x) {
  return ex2_mufu(x * kLog2e);
}

/// PyTorch's softplus (identity above 20) without branches, so that a tile of steps stays one
/// basic block the scheduler can interleave: max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1],
/// with log1p(e) = 2·atanh(s), s = e / (2 + e) <= 1/3, as its odd series to s^15 (error 3e-8).
__device__ __forceinline__ float softplus_f(float x) {
  const float e = exp_ftz(-fabsf(x));
  const float s = __fdividef(e, 2.f + e), s2 = s * s;
  float p = 1.f / 15.f;
  p = fmaf(p, s2, 1.f / 13.f);
  p = fmaf(p, s2, 1.f / 11.f);
  p = fmaf(p, s2, 1.f / 9.f);
  p = fmaf(p, s2, 1.f / 7.f);
  p = fmaf(p, s2, 1.f / 5.f);
  p = fmaf(p, s2, 1.f / 3.f);
  p = fmaf(p, s2, 1.f);
  const float sp = fmaxf(x, 0.f) + 2.f * s * p;
  return x > 20.f ? x : sp;
}

/// c ? x : y as bit operations: with a flag the whole grid shares (softplus on or off, z present
/// or not) the compiler otherwise jumps around the costlier operand, and the jumps split a tile's
/// steps into basic blocks whose long dependency chains the scheduler cannot interleave.
__device__ __forceinline__ float select_f(bool c, float x, float y) {
  const unsigned m = 0u - static_cast<unsigned>(c);
  return __uint_as_float((__float_as_uint(x) & m) | (__float_as_uint(y) & ~m));
}

/// x·σ(x); the quotient goes to 0 when e^-x overflows.
__device__ __forceinline__ float silu_f(float x) {
  return __fdividef(x, 1.f + exp_ftz(-x));
}

/// σ(x); 0 when e^-x overflows.
__device__ __forceinline__ float sigmoid_f(float x) {
  return __fdividef(1.f, 1.f + exp_ftz(-x));
}

}  // namespace ssmkit::cuda::detail
