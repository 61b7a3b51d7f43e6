// Causal long convolution y[b,t,h] = sum_{s<=t} K[h,s] u[b,t-s,h] + D[h] u[b,t,h] on the GPU
// through cuFFT (S4, arXiv 2111.00396, Sec. 3.3): the rows of K, with D added to tap 0 so that the
// skip rides along, and of u zero-padded to n >= 2L - 1, one batched R2C, the pointwise product,
// one batched C2R, and the write-back. cpu::fft_conv's math and argument struct; token-major and
// channel-major views alike.
#pragma once

#include "ssmkit/core/cufft_plan.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cpu/fft_conv.hpp"
#include "ssmkit/kernels/cuda/kernel_args.cuh"

#include <cuda_runtime.h>

#include <algorithm>

namespace ssmkit::cuda {

namespace detail {

/// 32 x 32 tiles of (time, channel) through shared memory, so that rows of time are written
/// (and read back) coalesced whichever of time or channel is contiguous in the activations.
constexpr int kTileDim = 32, kTileRows = 8;

template <class T>
struct PackArgs {
  const T* src;  // (batch, time, channel) logical
  Index s[3];
  T* rows;  // row (row0 + b H + h), n values each
  Index row0, L, n;
  int H;
  bool along_channel;  // the channel stride is the smaller one: threads walk channels on load
  const T* tap0;       // (H) added at t = 0, or null
  Index tap0_s;
};

/// rows[row0 + b H + h][t] = src(b, t, h) (+ tap0[h] at t = 0) for t < L, 0 for L <= t < n.
template <class T>
__global__ void __launch_bounds__(kTileDim* kTileRows) pack_rows_kernel(const PackArgs<T> a) {
  __shared__ T tile[kTileDim][kTileDim + 1];  // [time][channel]
  const Index t0 = Index{blockIdx.x} * kTileDim, b = blockIdx.z;
  const int h0 = blockIdx.y * kTileDim, tx = threadIdx.x;
  for (int i = threadIdx.y; i < kTileDim; i += kTileRows) {
    const Index t = t0 + (a.along_channel ? i : tx);
    const int h = h0 + (a.along_channel ? tx : i);
    T x = t < a.L && h < a.H ? a.src[b * a.s[0] + t * a.s[1] + h * a.s[2]] : T(0);
    if (t == 0 && h < a.H && a.tap0 != nullptr)
      x += a.tap0[h * a.tap0_s];
    if (a.along_channel)
      tile[i][tx] = x;
    else
      tile[tx][i] = x;
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTileDim; i += kTileRows) {
    const int h = h0 + i;
    const Index t = t0 + tx;
    if (h < a.H && t < a.n)
      a.rows[(a.row0 + b * a.H + h) * a.n + t] = tile[tx][i];
  }
}

template <class T>
struct UnpackArgs {
  const T* rows;  // row (b H + h), n values each, already scaled by 1/n
  Index n, L;
  int H;
  T* y;
  Index y_s[3];
  bool along_channel;  // y's channel stride is the smaller one
};

/// y(b, t, h) = rows[b H + h][t].
template <class T>
__global__ void __launch_bounds__(kTileDim* kTileRows) unpack_rows_kernel(const UnpackArgs<T> a) {
  __shared__ T tile[kTileDim][kTileDim + 1];  // [time][channel]
  const Index t0 = Index{blockIdx.x} * kTileDim, b = blockIdx.z;
  const int h0 = blockIdx.y * kTileDim, tx = threadIdx.x;
  for (int i = threadIdx.y; i < kTileDim; i += kTileRows) {
    const int h = h0 + i;
    const Index t = t0 + tx;
    if (h < a.H && t < a.L)
      tile[tx][i] = a.rows[(b * a.H + h) * a.n + t];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTileDim; i += kTileRows) {
    const Index t = t0 + (a.along_channel ? i : tx);
    const int h = h0 + (a.along_channel ? tx : i);
    if (t >= a.L || h >= a.H)
      continue;
    a.y[b * a.y_s[0] + t * a.y_s[1] + h * a.y_s[2]] = a.along_channel ? tile[i][tx] : tile[tx][i];
  }
}

/// spec[H + r][f] *= spec[r mod H][f] * scale for the B H rows of u after the H rows of K.
template <class C, class T>
__global__ void multiply_spectra_kernel(C* spec, Index H, Index F, Index rows, T scale) {
  const C* k = spec;
  C* x = spec + H * F;
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < rows * F;
       i += Index{gridDim.x} * blockDim.x) {
    const C kv = k[i / F % H * F + i % F], xv = x[i];
    x[i] = C{scale * (xv.x * kv.x - xv.y * kv.y), scale * (xv.x * kv.y + xv.y * kv.x)};
  }
}

inline dim3 tile_grid(Index n_time, Index H, Index batch) {
  return dim3(static_cast<unsigned>((n_time + kTileDim - 1) / kTileDim),
              static_cast<unsigned>((H + kTileDim - 1) / kTileDim), static_cast<unsigned>(batch));
}

/// Checks an FftConvParams whose views live on the GPU (shapes as cpu::validate).
template <class T>
void validate_device(const cpu::FftConvParams<T>& p) {
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.u.size(2);
  check_device(p.u, "u", Device::CUDA);
  SSMKIT_CHECK(Bt >= 1 && Bt <= 65535, "u", "batch (dim 0)", "in [1, 65535] on CUDA", Bt);
  SSMKIT_CHECK(L >= 1, "u", "length (dim 1)", ">= 1", L);
  SSMKIT_CHECK(H >= 1 && H <= 2097120, "u", "channels (dim 2)", "in [1, 2097120] on CUDA", H);
  SSMKIT_CHECK(p.K.size(0) == H && p.K.size(1) >= L, "K", "shape",
               "(" + std::to_string(H) + ", >= " + std::to_string(L) + ")",
               ssmkit::detail::shape_string<2>(p.K.shape()));
  check_device(p.K, "K", Device::CUDA);
  if (!p.D_skip.absent()) {
    check_shape(p.D_skip, "D", {H});
    check_device(p.D_skip, "D", Device::CUDA);
  }
  check_shape(p.y, "y", {Bt, L, H});
  check_device(p.y, "y", Device::CUDA);
}

}  // namespace detail

/// The workspace of cuda::fft_conv: padded rows of K and u ((batch + 1) H rows of n), their
/// half spectra, the output rows, and the two batched plans; remade when the shape or the
/// current device changes.
template <class T>
class FftConvPlan {
 public:
  using complex = typename CufftReal<T>::complex;

  /// Buffers and plans for `batch` sequences of H channels and transform length n.
  void prepare(Index batch, Index H, Index n) {
    if (const int device = current_device(); device != device_) {
      *this = FftConvPlan();
      device_ = device;
    }
    const Index F = n / 2 + 1, rows = (batch + 1) * H;
    if (in_.size() < rows * n)
      in_ = DeviceBuffer<T>(rows * n, "fft_conv padded rows");
    if (out_.size() < batch * H * n)
      out_ = DeviceBuffer<T>(batch * H * n, "fft_conv output rows");
    if (spec_.size() < rows * F)
      spec_ = DeviceBuffer<complex>(rows * F, "fft_conv spectra");
    if (!forward_.matches(n, rows, CufftReal<T>::forward))
      forward_ = CufftPlan(n, rows, CufftReal<T>::forward);
    if (!inverse_.matches(n, batch * H, CufftReal<T>::inverse))
      inverse_ = CufftPlan(n, batch * H, CufftReal<T>::inverse);
  }
  T* in() { return in_.data(); }
  T* out() { return out_.data(); }
  complex* spectra() { return spec_.data(); }
  const CufftPlan& forward() const { return forward_; }
  const CufftPlan& inverse() const { return inverse_; }

 private:
  int device_ = -1;
  DeviceBuffer<T> in_, out_;
  DeviceBuffer<complex> spec_;
  CufftPlan forward_, inverse_;
};

/// y = causal_conv(u, K) + D u on the GPU, ordered on `stream` (T float or double, views on
/// Device::CUDA in any memory order; y may be u). Throws ssmkit::Error on invalid arguments, a
/// failed launch or a failed cuFFT call.
template <class T>
void fft_conv(const cpu::FftConvParams<T>& p, FftConvPlan<T>& plan, cudaStream_t stream) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "T: float or double");
  detail::validate_device(p);
  const Index Bt = p.u.size(0), L = p.u.size(1), H = p.u.size(2);
  const Index n = cpu::fft_conv_length(L), F = n / 2 + 1;
  plan.prepare(Bt, H, n);
  const dim3 block(detail::kTileDim, detail::kTileRows);

  // K as a (1, L, H) view: row h of the padded rows is channel h's kernel.
  detail::PackArgs<T> k{};
  k.src = p.K.data();
  k.s[0] = 0;
  k.s[1] = p.K.stride(1);
  k.s[2] = p.K.stride(0);
  k.rows = plan.in();
  k.row0 = 0;
  k.L = L;
  k.n = n;
  k.H = static_cast<int>(H);
  k.along_channel = k.s[2] < k.s[1];
  detail::set_view(p.D_skip, k.tap0, k.tap0_s);
  detail::pack_rows_kernel<<<detail::tile_grid(n, H, 1), block, 0, stream>>>(k);
  SSMKIT_CUDA_CHECK_LAUNCH("pack_rows_kernel (K)");

  detail::PackArgs<T> u = k;
  u.src = p.u.data();
  detail::copy_strides(p.u, u.s);
  u.row0 = H;
  u.along_channel = u.s[2] < u.s[1];
  u.tap0 = nullptr;
  detail::pack_rows_kernel<<<detail::tile_grid(n, H, Bt), block, 0, stream>>>(u);
  SSMKIT_CUDA_CHECK_LAUNCH("pack_rows_kernel (u)");

  SSMKIT_CUFFT_CHECK(
      CufftReal<T>::exec_forward(plan.forward().on(stream), plan.in(), plan.spectra()));
  const Index blocks = std::min<Index>((Bt * H * F + 255) / 256, 65536);
  detail::multiply_spectra_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      plan.spectra(), H, F, Bt * H, T(1) / T(n));
  SSMKIT_CUDA_CHECK_LAUNCH("multiply_spectra_kernel");
  SSMKIT_CUFFT_CHECK(
      CufftReal<T>::exec_inverse(plan.inverse().on(stream), plan.spectra() + H * F, plan.out()));

  detail::UnpackArgs<T> w{};
  w.rows = plan.out();
  w.n = n;
  w.L = L;
  w.H = static_cast<int>(H);
  w.y = p.y.data();
  detail::copy_strides(p.y, w.y_s);
  w.along_channel = w.y_s[2] < w.y_s[1];
  detail::unpack_rows_kernel<<<detail::tile_grid(L, H, Bt), block, 0, stream>>>(w);
  SSMKIT_CUDA_CHECK_LAUNCH("unpack_rows_kernel");
}

/// fft_conv with a workspace of its own; synchronises `stream` before freeing it.
template <class T>
void fft_conv(const cpu::FftConvParams<T>& p, cudaStream_t stream) {
  FftConvPlan<T> plan;
  fft_conv(p, plan, stream);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace ssmkit::cuda
