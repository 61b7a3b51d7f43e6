// Convolution kernel of a DPLR SSM (bilinear) on the GPU (S4, arXiv 2111.00396, Algorithm 1):
// Cauchy sums at the roots of unity, a thread per (channel, frequency), the Woodbury correction
// in registers, then cuFFT's inverse real transform. cpu::ssm_kernel_dplr's math and struct.
#pragma once

#include "ssmkit/core/cufft_plan.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cpu/ssm_kernel_dplr.hpp"
#include "ssmkit/kernels/cuda/ssm_kernel_vandermonde.cuh"

#include <cuda_runtime.h>

#include <type_traits>

namespace ssmkit::cuda {

namespace detail {

// Rank 2 covers every HiPPO measure (LegS and LagT have rank 1, LegT and FouT rank 2).
constexpr int kDplrThreads = 128, kDplrChunk = 32, kDplrMaxRank = 2;

template <class T>
struct DplrArgs {
  DiagonalArgs<T> d;  // Lambda, B, C (= C~), dt
  const Cplx<T>* P;
  Index P_s[3];
  Cplx<T>* Khat;  // (H, F) contiguous
  T* K;           // written directly when L == 1 (no transform)
  Index K_s0;
  Index L, F;
};

/// Solves the R x R complex system m x = b in place (partial pivoting by |.|^2, unrolled).
template <int R, class T>
__device__ __forceinline__ void solve_small(Cplx<T> (&m)[R][R], Cplx<T> (&b)[R]) {
#pragma unroll
  for (int c = 0; c < R; ++c) {
#pragma unroll
    for (int r = c + 1; r < R; ++r) {
      const T pr = m[r][c].re * m[r][c].re + m[r][c].im * m[r][c].im;
      const T pc = m[c][c].re * m[c][c].re + m[c][c].im * m[c][c].im;
      if (pr > pc) {
#pragma unroll
        for (int k = 0; k < R; ++k) {
          const Cplx<T> tmp = m[c][k];
          m[c][k] = m[r][k];
          m[r][k] = tmp;
        }
        const Cplx<T> tmp = b[c];
        b[c] = b[r];
        b[r] = tmp;
      }
    }
    const Cplx<T> inv = recip(m[c][c]);
#pragma unroll
    for (int r = c + 1; r < R; ++r) {
      const Cplx<T> f = m[r][c] * inv;
#pragma unroll
      for (int k = c; k < R; ++k)
        m[r][k] = m[r][k] - f * m[c][k];
      b[r] = b[r] - f * b[c];
    }
  }
#pragma unroll
  for (int c = R - 1; c >= 0; --c) {
#pragma unroll
    for (int k = c + 1; k < R; ++k)
      b[c] = b[c] - m[c][k] * b[k];
    b[c] = b[c] / m[c][c];
  }
}

/// K^(z_k) / L for z_k = exp(-2 pi i k / L): the sums k_XY = sum_n X_n Y_n / D_n(z) over the
/// modes and their conjugates for X in {C~, conj P_r}, Y in {B, P_r}, then
/// K^ = 2 [k_CB - (1+z) k_CP (I + (1+z) k_PP)^-1 k_PB] (see cpu::ssm_kernel_dplr).
template <class T, class Acc, int R>
__global__ void __launch_bounds__(kDplrThreads) ssm_kernel_dplr_kernel(const DplrArgs<T> a) {
  constexpr int S = (1 + R) * (1 + R);
  __shared__ Cplx<Acc> lam[kDplrChunk], v[kDplrChunk][S];
  const int h = blockIdx.y;
  const Index k = blockIdx.x * Index{kDplrThreads} + threadIdx.x;
  // Threads past F still compute (at the last frequency) so that every thread reaches the
  // barriers; they store nothing.
  const Index kk = k < a.F ? k : a.F - 1;
  const double theta = -2.0 * 3.14159265358979323846 * double(kk) / double(a.L);
  double sz, cz;
  sincos(theta, &sz, &cz);
  const double two_dt = 2.0 / double(a.d.dt[h * a.d.dt_s]);
  const Cplx<Acc> d0{Acc(two_dt * (1.0 - cz)), Acc(-two_dt * sz)}, e{Acc(1.0 + cz), Acc(sz)};
  Cplx<Acc> acc[S];
#pragma unroll
  for (int s = 0; s < S; ++s)
    acc[s] = {Acc(0), Acc(0)};
  for (int n0 = 0; n0 < a.d.M; n0 += kDplrChunk) {
    const int mc = min(kDplrChunk, a.d.M - n0);
    __syncthreads();
    for (int i = threadIdx.x; i < mc * S; i += kDplrThreads) {
      const int n = n0 + i / S, s = i % S, x = s / (1 + R), y = s % (1 + R);
      const Cplx<T> xv = x == 0 ? a.d.C[h * a.d.C_s[0] + n * a.d.C_s[1]]
                                : conj(a.P[h * a.P_s[0] + n * a.P_s[1] + (x - 1) * a.P_s[2]]);
      const Cplx<T> yv = y == 0 ? a.d.B[h * a.d.B_s[0] + n * a.d.B_s[1]]
                                : a.P[h * a.P_s[0] + n * a.P_s[1] + (y - 1) * a.P_s[2]];
      v[i / S][s] = cast<Acc>(xv) * cast<Acc>(yv);
      if (s == 0)
        lam[i / S] = cast<Acc>(a.d.Lambda[h * a.d.lambda_s[0] + n * a.d.lambda_s[1]]);
    }
    __syncthreads();
    for (int n = 0; n < mc; ++n) {
      const Cplx<Acc> l = lam[n];
      const Cplx<Acc> dn = d0 - e * l, dc = d0 - e * conj(l);
      const Acc nn = dn.re * dn.re + dn.im * dn.im, nc = dc.re * dc.re + dc.im * dc.im;
      Acc inn, inc;
      if constexpr (std::is_same_v<Acc, double>) {
        // One division for both: 1/|D|^2 = |Dc|^2 / (|D|^2 |Dc|^2) and vice versa.
        const Acc inv = Acc(1) / (nn * nc);
        inn = nc * inv;
        inc = nn * inv;
      } else {
        // A reciprocal each: in float, |D|^2 |Dc|^2 passes the range at high frequencies once
        // (2/dt)^4 does (dt below ~5e-9), which would zero those bins.
        inn = Acc(1) / nn;
        inc = Acc(1) / nc;
      }
      const Cplx<Acc> rn = inn * conj(dn), rc = inc * conj(dc);
#pragma unroll
      for (int s = 0; s < S; ++s)
        acc[s] = acc[s] + v[n][s] * rn + conj(v[n][s]) * rc;
    }
  }
  if (k >= a.F)
    return;
  Cplx<Acc> m[R][R], b[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    b[i] = acc[(1 + i) * (1 + R)];
#pragma unroll
    for (int j = 0; j < R; ++j)
      m[i][j] = Cplx<Acc>{Acc(i == j), Acc(0)} + e * acc[(1 + i) * (1 + R) + 1 + j];
  }
  solve_small<R>(m, b);
  Cplx<Acc> corr{Acc(0), Acc(0)};
#pragma unroll
  for (int j = 0; j < R; ++j)
    corr = corr + acc[1 + j] * b[j];
  const Cplx<T> khat = cast<T>(Acc(2.0 / double(a.L)) * (acc[0] - e * corr));
  if (a.L == 1)
    a.K[h * a.K_s0] = khat.re;  // the one-point inverse transform is the identity
  else
    a.Khat[h * a.F + k] = khat;
}

/// Copies the (H, L) contiguous transform output into K's strides.
template <class T>
__global__ void copy_rows_kernel(const T* src, T* K, Index K_s0, Index K_s1, Index H, Index L) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < H * L;
       i += Index{gridDim.x} * blockDim.x)
    K[i / L * K_s0 + i % L * K_s1] = src[i];
}

}  // namespace detail

/// The workspace of cuda::ssm_kernel_dplr: the half spectra, the inverse plan and (for strided
/// K) the time-domain rows, kept between calls and remade when H, L or the current device
/// changes.
template <class T>
class DplrKernelPlan {
 public:
  using complex = typename CufftReal<T>::complex;

  /// Buffers and the C2R plan for H channels of L taps.
  void prepare(Index H, Index L) {
    if (const int device = current_device(); device != device_) {
      *this = DplrKernelPlan();
      device_ = device;
    }
    const Index F = L / 2 + 1;
    if (spectrum_.size() < H * F)
      spectrum_ = DeviceBuffer<complex>(H * F, "DPLR spectrum");
    if (L > 1 && !inverse_.matches(L, H, CufftReal<T>::inverse))
      inverse_ = CufftPlan(L, H, CufftReal<T>::inverse);
  }
  /// Time rows for a K that is not contiguous.
  T* rows(Index count) {
    if (rows_.size() < count)
      rows_ = DeviceBuffer<T>(count, "DPLR kernel rows");
    return rows_.data();
  }
  complex* spectrum() { return spectrum_.data(); }
  const CufftPlan& inverse() const { return inverse_; }

 private:
  int device_ = -1;
  DeviceBuffer<complex> spectrum_;
  DeviceBuffer<T> rows_;
  CufftPlan inverse_;
};

/// K (H, L) = the first L taps of each channel, with `s.C` holding C~ for this L
/// (cpu::dplr_c_tilde), ordered on `stream`; T float or double, views on Device::CUDA, rank
/// R <= 2. The Cauchy sums and the Woodbury solve run in Acc: double by default, since float
/// sums go past the 1e-5 relative error float storage is held to for some C at L >= 4097
/// (tools/model_dplr_float_sums.py); Acc = float is the faster option. Throws ssmkit::Error on
/// invalid arguments or a failed launch or cuFFT call.
template <class T, class Acc = double>
void ssm_kernel_dplr(const cpu::DplrSsm<T>& s, const TensorView<T, 2>& K, DplrKernelPlan<T>& plan,
                     cudaStream_t stream) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "T: float or double");
  detail::validate_device(cpu::DiagonalSsm<T>{s.Lambda, s.B, s.C, s.dt});
  const Index H = s.channels(), M = s.modes(), R = s.P.size(2);
  SSMKIT_CHECK(R >= 1 && R <= detail::kDplrMaxRank, "P", "rank (dim 2)", "in [1, 2] on CUDA", R);
  check_shape(s.P, "P", {H, M, R});
  check_device(s.P, "P", Device::CUDA);
  detail::check_kernel_out(K, H);
  const Index L = K.size(1), F = L / 2 + 1;
  const Index blocks = (F + detail::kDplrThreads - 1) / detail::kDplrThreads;
  SSMKIT_CHECK(blocks <= 2147483647, "K", "length", "< 2^38 on CUDA", L);
  plan.prepare(H, L);

  detail::DplrArgs<T> a{};
  a.d = detail::diagonal_args(cpu::DiagonalSsm<T>{s.Lambda, s.B, s.C, s.dt});
  a.P = reinterpret_cast<const detail::Cplx<T>*>(s.P.data());
  for (int d = 0; d < 3; ++d)
    a.P_s[d] = s.P.stride(d);
  a.Khat = reinterpret_cast<detail::Cplx<T>*>(plan.spectrum());
  a.K = K.data();
  a.K_s0 = K.stride(0);
  a.L = L;
  a.F = F;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(H));
  if (R == 1)
    detail::ssm_kernel_dplr_kernel<T, Acc, 1><<<grid, detail::kDplrThreads, 0, stream>>>(a);
  else
    detail::ssm_kernel_dplr_kernel<T, Acc, 2><<<grid, detail::kDplrThreads, 0, stream>>>(a);
  SSMKIT_CUDA_CHECK_LAUNCH("ssm_kernel_dplr_kernel");
  if (L == 1)
    return;
  const bool contiguous = K.stride(1) == 1 && K.stride(0) == L;
  T* out = contiguous ? K.data() : plan.rows(H * L);
  SSMKIT_CUFFT_CHECK(CufftReal<T>::exec_inverse(plan.inverse().on(stream), plan.spectrum(), out));
  if (!contiguous) {
    const Index blocks_copy = std::min<Index>((H * L + 255) / 256, 65536);
    detail::copy_rows_kernel<<<static_cast<unsigned>(blocks_copy), 256, 0, stream>>>(
        out, K.data(), K.stride(0), K.stride(1), H, L);
    SSMKIT_CUDA_CHECK_LAUNCH("copy_rows_kernel");
  }
}

/// ssm_kernel_dplr with a workspace of its own; synchronises `stream` before freeing it.
template <class T, class Acc = double>
void ssm_kernel_dplr(const cpu::DplrSsm<T>& s, const TensorView<T, 2>& K, cudaStream_t stream) {
  DplrKernelPlan<T> plan;
  ssm_kernel_dplr<T, Acc>(s, K, plan, stream);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace ssmkit::cuda
