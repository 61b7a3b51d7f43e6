// Convolution kernel of a diagonal SSM on the GPU, K[h,l] = 2 Re sum_n C[h,n] A_bar[h,n]^l
// B_bar[h,n] (S4D, arXiv 2206.11893, Sec. 3.2): cpu::ssm_kernel_vandermonde's math and argument
// struct.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/kernels/cpu/ssm_kernel_vandermonde.hpp"
#include "ssmkit/kernels/cuda/complex_math.cuh"

#include <cuda_runtime.h>

#include <complex>

namespace ssmkit::cuda {

namespace detail {

/// Blocks of kThreads threads own kReps * kThreads consecutive taps of one channel; modes go
/// through shared memory kChunk at a time; a thread's offset t splits as t = 16 t_hi + t_lo.
struct VandermondePolicy {
  static constexpr int kThreads = 256, kReps = 8, kChunk = 32, kSplit = 16;
  static constexpr Index kTile = Index{kThreads} * kReps;
  static_assert(kThreads == kSplit * kSplit, "a thread's offset is two table entries");
};

template <class T>
struct DiagonalArgs {
  const Cplx<T>* Lambda;
  Index lambda_s[2];
  const Cplx<T>* B;
  Index B_s[2];
  const Cplx<T>* C;
  Index C_s[2];
  const T* dt;
  Index dt_s;
  int H, M;
};

template <class T>
DiagonalArgs<T> diagonal_args(const cpu::DiagonalSsm<T>& s) {
  auto ptr = [](const TensorView<const std::complex<T>, 2>& v) {
    return reinterpret_cast<const Cplx<T>*>(v.data());
  };
  return {ptr(s.Lambda),
          {s.Lambda.stride(0), s.Lambda.stride(1)},
          ptr(s.B),
          {s.B.stride(0), s.B.stride(1)},
          ptr(s.C),
          {s.C.stride(0), s.C.stride(1)},
          s.dt.data(),
          s.dt.stride(0),
          static_cast<int>(s.channels()),
          static_cast<int>(s.modes())};
}

template <class T>
__device__ __forceinline__ Cplx<double> load_mode(const Cplx<T>* p, const Index (&s)[2], int h,
                                                  int n) {
  return cast<double>(p[h * s[0] + n * s[1]]);
}

/// K[h, l0 + r kThreads + t] = sum_n Re(anchor[n][r] · A_bar_n^t), where the anchors
/// q_n A_bar_n^(l0 + r kThreads) are exact double exponentials and A_bar_n^t is the product of
/// two table entries built by at most 15 double multiplications: no error grows with l.
template <class T, class P>
__global__ void __launch_bounds__(P::kThreads)
    ssm_kernel_vandermonde_kernel(const DiagonalArgs<T> a, math::Discretization method, T* K,
                                  Index K_s0, Index K_s1, Index L) {
  __shared__ Cplx<double> log_a[P::kChunk], q[P::kChunk];
  __shared__ Cplx<T> anchor[P::kChunk][P::kReps];
  __shared__ Cplx<T> e_lo[P::kChunk][P::kSplit], e_hi[P::kChunk][P::kSplit];
  const int h = blockIdx.y, t = threadIdx.x;
  const Index l0 = blockIdx.x * P::kTile;
  T acc[P::kReps] = {};
  for (int n0 = 0; n0 < a.M; n0 += P::kChunk) {
    const int mc = min(P::kChunk, a.M - n0);
    __syncthreads();  // the previous chunk's tables are consumed
    if (t < mc) {
      const int n = n0 + t;
      const DeviceMode m =
          discretize_mode(load_mode(a.Lambda, a.lambda_s, h, n), double(a.dt[h * a.dt_s]), method);
      log_a[t] = m.log_A_bar;
      q[t] = 2.0 * (load_mode(a.C, a.C_s, h, n) * m.B_scale * load_mode(a.B, a.B_s, h, n));
      const Cplx<double> step = cexp(m.log_A_bar), big = cexp(double(P::kSplit) * m.log_A_bar);
      Cplx<double> lo{1, 0}, hi{1, 0};
      for (int j = 0; j < P::kSplit; ++j) {
        e_lo[t][j] = cast<T>(lo);
        e_hi[t][j] = cast<T>(hi);
        lo = lo * step;
        hi = hi * big;
      }
    }
    __syncthreads();
    for (int i = t; i < mc * P::kReps; i += P::kThreads) {
      const int n = i / P::kReps, r = i % P::kReps;
      const double l = double(l0 + Index{r} * P::kThreads);
      anchor[n][r] = cast<T>(q[n] * cexp(l * log_a[n]));
    }
    __syncthreads();
    for (int n = 0; n < mc; ++n) {
      const Cplx<T> p = e_hi[n][t / P::kSplit] * e_lo[n][t % P::kSplit];
#pragma unroll
      for (int r = 0; r < P::kReps; ++r)
        acc[r] += anchor[n][r].re * p.re - anchor[n][r].im * p.im;
    }
  }
#pragma unroll
  for (int r = 0; r < P::kReps; ++r) {
    const Index l = l0 + Index{r} * P::kThreads + t;
    if (l < L)
      K[h * K_s0 + l * K_s1] = acc[r];
  }
}

/// Shapes and devices of a diagonal system whose parameters live on the GPU. Their values
/// (Re Lambda < 0, dt > 0, finite) are not read back: that would cost a round trip per call.
template <class T>
void validate_device(const cpu::DiagonalSsm<T>& s) {
  const Index H = s.Lambda.size(0), M = s.Lambda.size(1);
  SSMKIT_CHECK(H >= 1 && H <= 65535, "Lambda", "channels (dim 0)", "in [1, 65535] on CUDA", H);
  SSMKIT_CHECK(M >= 1 && M <= 2147483647, "Lambda", "modes (dim 1)", "in [1, 2^31 - 1]", M);
  check_device(s.Lambda, "Lambda", Device::CUDA);
  check_shape(s.B, "B", {H, M});
  check_device(s.B, "B", Device::CUDA);
  check_shape(s.C, "C", {H, M});
  check_device(s.C, "C", Device::CUDA);
  check_shape(s.dt, "dt", {H});
  check_device(s.dt, "dt", Device::CUDA);
}

template <class T>
void check_kernel_out(const TensorView<T, 2>& K, Index H) {
  SSMKIT_CHECK(K.size(1) >= 1, "K", "length (dim 1)", ">= 1", K.size(1));
  check_shape(K, "K", {H, K.size(1)});
  check_device(K, "K", Device::CUDA);
}

}  // namespace detail

/// K (H, L) on the GPU, ordered on `stream`: T float or double, every view on Device::CUDA.
/// Throws ssmkit::Error on invalid shapes or devices or a failed launch.
template <class T, class Policy = detail::VandermondePolicy>
void ssm_kernel_vandermonde(const cpu::DiagonalSsm<T>& s, math::Discretization method,
                            const TensorView<T, 2>& K, cudaStream_t stream) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "T: float or double");
  detail::validate_device(s);
  detail::check_kernel_out(K, s.channels());
  const Index L = K.size(1), tiles = (L + Policy::kTile - 1) / Policy::kTile;
  SSMKIT_CHECK(tiles <= 2147483647, "K", "length", "< 2^31 tiles", L);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(s.channels()));
  detail::ssm_kernel_vandermonde_kernel<T, Policy><<<grid, Policy::kThreads, 0, stream>>>(
      detail::diagonal_args(s), method, K.data(), K.stride(0), K.stride(1), L);
  SSMKIT_CUDA_CHECK_LAUNCH("ssm_kernel_vandermonde_kernel");
}

}  // namespace ssmkit::cuda
