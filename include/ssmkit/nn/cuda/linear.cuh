// Linear layers on the GPU: out (tokens, N) = x (tokens, K) · Wᵀ + bias, as nn::linear computes
// on the CPU, optionally of RMSNorm(x) (the pre-norm of a residual layer, fused for few tokens).
// A few tokens (decoding) go through cuda::gemv, which streams W at memory speed; more go through
// cuBLAS (float: FP32 compute, TF32 only when asked; bf16 weights: the tokens rounded to bf16,
// products accumulated in float).
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/kernels/cuda/gemv.cuh"
#include "ssmkit/kernels/cuda/rms_norm.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <type_traits>
#include <utility>
#include <vector>

namespace ssmkit::cuda {

/// Throws ssmkit::Error unless a cuBLAS call returned CUBLAS_STATUS_SUCCESS.
#define SSMKIT_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                             \
    const cublasStatus_t ssmkit_cublas_ = (call);                                                  \
    if (ssmkit_cublas_ != CUBLAS_STATUS_SUCCESS)                                                   \
      throw ::ssmkit::Error(::ssmkit::detail::concat("ssmkit: cuBLAS call ", #call, " failed at ", \
                                                     __FILE__, ":", __LINE__, ": ",                \
                                                     cublasGetStatusString(ssmkit_cublas_)));      \
  } while (0)

/// Options of the GPU modules.
struct CudaOptions {
  /// Float products through cuBLAS with TF32 tensor cores (about 1e-3 relative error) instead of
  /// full FP32.
  bool allow_tf32 = false;
};

/// A cuBLAS handle with the workspace it uses on every stream, so that products can be captured
/// in a CUDA graph (cuBLAS must not allocate while a stream is being captured). Move-only.
class CublasHandle {
 public:
  explicit CublasHandle(const CudaOptions& options = {})
      : options_(options),
        device_(current_device()),
        workspace_(kWorkspaceBytes, "cuBLAS workspace") {
    SSMKIT_CUBLAS_CHECK(cublasCreate(&h_));
    SSMKIT_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
  }
  CublasHandle(CublasHandle&& o) noexcept
      : options_(o.options_),
        device_(o.device_),
        workspace_(std::move(o.workspace_)),
        h_(std::exchange(o.h_, nullptr)),
        stream_(o.stream_) {}
  CublasHandle& operator=(CublasHandle&&) = delete;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() {
    if (h_ != nullptr)
      cublasDestroy(h_);
  }

  const CudaOptions& options() const { return options_; }

  /// The handle, bound to `stream` and to this object's workspace. The device current when it
  /// was made must be current. Calls on different streams share the workspace: the caller
  /// orders them (a call on one stream after the last on another has finished).
  cublasHandle_t on(cudaStream_t stream) {
    check_current_device(device_, "cuBLAS handle");
    if (!bound_ || stream != stream_) {
      // cublasSetStream drops the user workspace, so it is set again after.
      SSMKIT_CUBLAS_CHECK(cublasSetStream(h_, stream));
      SSMKIT_CUBLAS_CHECK(cublasSetWorkspace(h_, workspace_.data(), workspace_.bytes()));
      stream_ = stream;
      bound_ = true;
    }
    return h_;
  }

 private:
  static constexpr Index kWorkspaceBytes = Index{32} << 20;  // NVIDIA's advice for Hopper

  CudaOptions options_;
  int device_;
  DeviceBuffer<unsigned char> workspace_;
  cublasHandle_t h_ = nullptr;
  cudaStream_t stream_{};
  bool bound_ = false;
};

/// A (rows, cols) weight matrix in device memory as storage type W, each row padded to a
/// 16-byte multiple (what gemv's vector loads need).
template <class W>
class DeviceMatrix {
 public:
  DeviceMatrix() = default;

  /// Uploads (converting to W) a host matrix with contiguous rows, synchronously.
  template <class Src>
  explicit DeviceMatrix(TensorView<const Src, 2> host, const char* name)
      : rows_(host.size(0)), cols_(host.size(1)), ld_(padded(host.size(1))) {
    check_device(host, name, Device::CPU);
    buf_ = DeviceBuffer<W>(rows_ * ld_, name);
    std::vector<W> staged(static_cast<std::size_t>(rows_ * ld_), to_w(0.f));
    for (Index r = 0; r < rows_; ++r)
      for (Index c = 0; c < cols_; ++c)
        staged[static_cast<std::size_t>(r * ld_ + c)] = to_w(static_cast<float>(host(r, c)));
    SSMKIT_CUDA_CHECK(cudaMemcpy(buf_.data(), staged.data(), buf_.bytes(), cudaMemcpyHostToDevice));
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  TensorView<const W, 2> view() const {
    return TensorView<const W, 2>::unchecked(buf_.data(), {rows_, cols_}, {ld_, 1}, Device::CUDA);
  }
  std::size_t bytes() const { return buf_.bytes(); }

 private:
  static Index padded(Index cols) {
    constexpr Index v = 16 / static_cast<Index>(sizeof(W));
    return (cols + v - 1) / v * v;
  }
  static W to_w(float x) {
    if constexpr (std::is_same_v<W, float>)
      return x;
    else
      return __float2bfloat16_rn(x);
  }

  DeviceBuffer<W> buf_;
  Index rows_ = 0, cols_ = 0, ld_ = 0;
};

/// A float vector uploaded once (biases, norms, A, D): empty when the host tensor is.
template <class Src>
DeviceBuffer<float> upload_vector(const Src* data, Index n, const char* name) {
  DeviceBuffer<float> buf(n, name);
  std::vector<float> staged(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i)
    staged[static_cast<std::size_t>(i)] = static_cast<float>(data[i]);
  if (n > 0)
    SSMKIT_CUDA_CHECK(cudaMemcpy(buf.data(), staged.data(), buf.bytes(), cudaMemcpyHostToDevice));
  return buf;
}

/// View of an uploaded vector, absent when it is empty.
inline TensorView<const float, 1> vector_view(const DeviceBuffer<float>& b) {
  if (b.size() == 0)
    return {};
  return TensorView<const float, 1>::unchecked(b.data(), {b.size()}, {1}, Device::CUDA);
}

namespace detail {

constexpr int kLinearThreads = 256;

/// out[t, n] = bias[n] (+ out[t, n]): cuBLAS then adds the product with beta = 1.
static __global__ void __launch_bounds__(kLinearThreads)
    bias_rows_kernel(const float* bias, float* out, Index ldo, int N, bool accumulate) {
  float* o = out + static_cast<Index>(blockIdx.x) * ldo;
  for (int n = static_cast<int>(threadIdx.x); n < N; n += kLinearThreads)
    o[n] = accumulate ? o[n] + bias[n] : bias[n];
}

/// dst (rows, cols, ld = cols) = bf16(src (rows, cols, ld)).
static __global__ void __launch_bounds__(kLinearThreads)
    round_rows_kernel(const float* src, Index lds, __nv_bfloat16* dst, int cols) {
  const float* s = src + static_cast<Index>(blockIdx.x) * lds;
  __nv_bfloat16* d = dst + static_cast<Index>(blockIdx.x) * cols;
  for (int c = static_cast<int>(threadIdx.x); c < cols; c += kLinearThreads)
    d[c] = __float2bfloat16_rn(s[c]);
}

}  // namespace detail

/// What linear() needs besides its operands: the cuBLAS handle, and for many tokens the rows
/// normalised (a RowNorm) and rounded to bf16 (bf16 weights). reserve() before capturing
/// linear() calls in a CUDA graph, which must not allocate.
class LinearWorkspace {
 public:
  explicit LinearWorkspace(const CudaOptions& options = {}) : cublas_(options) {}

  /// Room for products of up to `tokens` tokens and `width` input features.
  void reserve(Index tokens, Index width) {
    if (tokens <= kGemvMaxTokens)
      return;  // gemv needs no scratch
    if (normed_.size() < tokens * width) {
      normed_ = DeviceBuffer<float>(tokens * width, "linear scratch");
      rounded_ = DeviceBuffer<__nv_bfloat16>(tokens * width, "linear scratch");
    }
  }

  CublasHandle& cublas() { return cublas_; }
  float* normed() { return normed_.data(); }
  __nv_bfloat16* rounded() { return rounded_.data(); }

 private:
  CublasHandle cublas_;
  DeviceBuffer<float> normed_;
  DeviceBuffer<__nv_bfloat16> rounded_;
};

/// out (tokens, N) = x̂ (tokens, K) · weight (N, K)ᵀ + bias (N) (+ out's old values when
/// `accumulate`), x̂ = x or RMSNorm(x)·norm.weight, ordered on `stream`. Up to kGemvMaxTokens
/// tokens go through gemv, more through cuBLAS (scratch grown in `ws` unless reserved). out
/// must not overlap x. Throws ssmkit::Error.
template <class W>
void linear(LinearWorkspace& ws, TensorView<const float, 2> x, TensorView<const W, 2> weight,
            TensorView<const float, 1> bias, TensorView<float, 2> out, cudaStream_t stream,
            bool accumulate = false, const RowNorm& norm = {}) {
  const Index tokens = x.size(0), K = x.size(1), N = weight.size(0);
  if (tokens <= kGemvMaxTokens) {
    GemvParams<W> p;
    p.x = x;
    p.weight = weight;
    p.bias = bias;
    p.out = out;
    p.accumulate = accumulate;
    p.norm = norm;
    gemv(p, stream);
    return;
  }
  check_device(x, "x", Device::CUDA);
  check_device(weight, "weight", Device::CUDA);
  check_device(out, "out", Device::CUDA);
  check_shape(weight, "weight", {N, K});
  check_shape(out, "out", {tokens, N});
  SSMKIT_CHECK(x.stride(1) == 1, "x", "inner stride", "1", x.stride(1));
  SSMKIT_CHECK(out.stride(1) == 1, "out", "inner stride", "1", out.stride(1));
  SSMKIT_CHECK(weight.stride(1) == 1, "weight", "inner stride", "1", weight.stride(1));
  SSMKIT_CHECK(tokens <= 2147483647, "x", "tokens = size(0)", "< 2^31 on CUDA", tokens);
  SSMKIT_CHECK(K <= 2147483647, "x", "features = size(1)", "< 2^31 on CUDA", K);
  SSMKIT_CHECK(N <= 2147483647, "weight", "rows = size(0)", "< 2^31 on CUDA", N);
  // cuBLAS takes the row strides as int.
  SSMKIT_CHECK(x.stride(0) <= 2147483647, "x", "row stride", "< 2^31 on CUDA", x.stride(0));
  SSMKIT_CHECK(out.stride(0) <= 2147483647, "out", "row stride", "< 2^31 on CUDA", out.stride(0));
  SSMKIT_CHECK(weight.stride(0) <= 2147483647, "weight", "row stride", "< 2^31 on CUDA",
               weight.stride(0));
  detail::check_bias(bias, N);
  if (tokens == 0 || N == 0)
    return;
  ws.reserve(tokens, K);
  if (!norm.weight.absent()) {
    const auto normed =
        TensorView<float, 2>::unchecked(ws.normed(), {tokens, K}, {K, 1}, Device::CUDA);
    rms_norm(x, norm.weight, norm.eps, normed, stream);
    x = normed;
  }
  float beta = accumulate ? 1.f : 0.f;
  if (!bias.absent()) {
    detail::bias_rows_kernel<<<static_cast<unsigned>(tokens), detail::kLinearThreads, 0, stream>>>(
        bias.data(), out.data(), out.stride(0), static_cast<int>(N), accumulate);
    SSMKIT_CUDA_CHECK_LAUNCH("bias_rows_kernel");
    beta = 1.f;
  }
  const float alpha = 1.f;
  const void* xp = x.data();
  Index ldx = x.stride(0);
  cudaDataType_t type = CUDA_R_32F;
  cublasComputeType_t compute =
      ws.cublas().options().allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if constexpr (std::is_same_v<W, __nv_bfloat16>) {
    detail::round_rows_kernel<<<static_cast<unsigned>(tokens), detail::kLinearThreads, 0, stream>>>(
        x.data(), x.stride(0), ws.rounded(), static_cast<int>(K));
    SSMKIT_CUDA_CHECK_LAUNCH("round_rows_kernel");
    xp = ws.rounded();
    ldx = K;
    type = CUDA_R_16BF;
    compute = CUBLAS_COMPUTE_32F;
  }
  // Column-major view: outᵀ (N, tokens) = W (K, N)ᵀ · x̂ᵀ (K, tokens).
  SSMKIT_CUBLAS_CHECK(cublasGemmEx(
      ws.cublas().on(stream), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
      static_cast<int>(tokens), static_cast<int>(K), &alpha, weight.data(), type,
      static_cast<int>(weight.stride(0)), xp, type, static_cast<int>(ldx), &beta, out.data(),
      CUDA_R_32F, static_cast<int>(out.stride(0)), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace ssmkit::cuda
