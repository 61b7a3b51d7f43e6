// A linear layer y = x·Wᵀ + b (torch.nn.Linear's convention) for training on the GPU, through
// cuBLAS: the forward product and its gradients dx = dy·W, dW = dyᵀ·x, db = Σ_tokens dy (a GEMV
// with a ones vector, so the sum has a fixed order), as nn::linear_backward computes them.
// Float in FP32 compute; TF32 tensor cores only with CudaOptions::allow_tf32. Unlike cuda::linear
// (inference), every token count goes through cuBLAS: trainable weights have unpadded rows,
// which the gemv path of few tokens does not take.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/nn/cuda/linear.cuh"
#include "ssmkit/nn/grad/linear_backward.hpp"  // nn::detail::check_linear_backward

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

namespace ssmkit::cuda {

/// The cuBLAS handle of the training products and a ones vector for the bias sums. reserve()
/// allocates; the products then allocate nothing.
class LinearBackwardWorkspace {
 public:
  explicit LinearBackwardWorkspace(const CudaOptions& options = {}) : cublas_(options) {}

  /// Room for bias gradients over up to `tokens` tokens (synchronous when it grows).
  void reserve(Index tokens) {
    if (ones_.size() >= tokens)
      return;
    ones_ = DeviceBuffer<float>(tokens, "ones");
    const std::vector<float> host(static_cast<std::size_t>(tokens), 1.f);
    SSMKIT_CUDA_CHECK(cudaMemcpy(ones_.data(), host.data(), ones_.bytes(), cudaMemcpyHostToDevice));
  }

  CublasHandle& cublas() { return cublas_; }
  const float* ones() const { return ones_.data(); }
  Index ones_size() const { return ones_.size(); }

 private:
  CublasHandle cublas_;
  DeviceBuffer<float> ones_;
};

namespace detail {

inline int as_int(Index n) {
  SSMKIT_CHECK(n <= 2147483647, "matrix", "extent", "< 2^31 for cuBLAS", n);
  return static_cast<int>(n);
}

/// Row-major C (m, n) = α·op(A)·op(B) + β·C, ld's the row strides: cuBLAS sees the column-major
/// transposes, so Cᵀ = op(B)ᵀ·op(A)ᵀ.
inline void gemm_rows(LinearBackwardWorkspace& ws, bool trans_a, bool trans_b, Index m, Index n,
                      Index k, const float* A, Index lda, const float* B, Index ldb, float beta,
                      float* C, Index ldc, cudaStream_t stream) {
  if (m == 0 || n == 0)
    return;
  const float alpha = 1.f;
  const cublasComputeType_t compute =
      ws.cublas().options().allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (k == 0) {  // an empty sum: C = β·C, β being 0 or 1
    if (beta == 0.f)
      SSMKIT_CUDA_CHECK(cudaMemset2DAsync(C, sizeof(float) * static_cast<std::size_t>(ldc), 0,
                                          sizeof(float) * static_cast<std::size_t>(n),
                                          static_cast<std::size_t>(m), stream));
    return;
  }
  SSMKIT_CUBLAS_CHECK(cublasGemmEx(ws.cublas().on(stream), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, as_int(n), as_int(m),
                                   as_int(k), &alpha, B, CUDA_R_32F, as_int(ldb), A, CUDA_R_32F,
                                   as_int(lda), &beta, C, CUDA_R_32F, as_int(ldc), compute,
                                   CUBLAS_GEMM_DEFAULT));
}

template <class V>
void check_rows(const V& v, const char* arg) {
  check_device(v, arg, Device::CUDA);
  SSMKIT_CHECK(v.stride(1) == 1, arg, "inner stride", "1", v.stride(1));
}

}  // namespace detail

/// out (tokens, N) = x (tokens, K) · weight (N, K)ᵀ + bias (N, optional), or out += that with
/// `accumulate`, ordered on `stream`. Device views with contiguous rows; out must not overlap x.
inline void linear_forward(LinearBackwardWorkspace& ws, TensorView<const float, 2> x,
                           TensorView<const float, 2> weight, TensorView<const float, 1> bias,
                           TensorView<float, 2> out, cudaStream_t stream, bool accumulate = false) {
  const Index tokens = x.size(0), K = x.size(1), N = weight.size(0);
  detail::check_rows(x, "x");
  detail::check_rows(weight, "weight");
  detail::check_rows(out, "out");
  check_shape(weight, "weight", {N, K});
  check_shape(out, "out", {tokens, N});
  if (tokens == 0 || N == 0)
    return;
  detail::check_bias(bias, N);
  float beta = accumulate ? 1.f : 0.f;
  if (!bias.absent()) {
    detail::bias_rows_kernel<<<static_cast<unsigned>(tokens), detail::kLinearThreads, 0, stream>>>(
        bias.data(), out.data(), out.stride(0), detail::as_int(N), accumulate);
    SSMKIT_CUDA_CHECK_LAUNCH("bias_rows_kernel");
    beta = 1.f;
  }
  detail::gemm_rows(ws, false, true, tokens, N, K, x.data(), x.stride(0), weight.data(),
                    weight.stride(0), beta, out.data(), out.stride(0), stream);
}

/// Given x (tokens, in), weight (out, in) and dy = ∂ℓ/∂y (tokens, out), device views with
/// contiguous rows: writes dx (tokens, in) unless absent (adds to it with `accumulate_dx`), and
/// dweight (out, in) and dbias (out, unless absent), added to with `accumulate`. Ordered on
/// `stream`; ws must have room for `tokens` (reserve()) when dbias is given. dx may be x's
/// memory but must not overlap dy. Throws ssmkit::Error.
inline void linear_backward(LinearBackwardWorkspace& ws, TensorView<const float, 2> x,
                            TensorView<const float, 2> weight, TensorView<const float, 2> dy,
                            TensorView<float, 2> dx, TensorView<float, 2> dweight,
                            TensorView<float, 1> dbias, cudaStream_t stream,
                            bool accumulate = false, bool accumulate_dx = false) {
  const Index tokens = x.size(0), in = x.size(1), out = weight.size(0);
  nn::detail::check_linear_backward(
      x, weight, dy, dx, dweight, dbias, Device::CUDA,
      [](const auto& v, const char* arg) { detail::check_rows(v, arg); });
  if (!dbias.absent()) {
    SSMKIT_CHECK(ws.ones_size() >= tokens, "ws", "ones vector",
                 ">= " + std::to_string(tokens) + " elements (reserve())", ws.ones_size());
  }
  // dW (out, in) = dyᵀ (out, tokens) · x (tokens, in), and dbias, before dx: dx may be x.
  detail::gemm_rows(ws, true, false, out, in, tokens, dy.data(), dy.stride(0), x.data(),
                    x.stride(0), accumulate ? 1.f : 0.f, dweight.data(), dweight.stride(0), stream);
  if (!dbias.absent() && out > 0) {
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    if (tokens > 0)  // dbias (out) = dyᵀ · ones: column-major dy is (out, tokens).
      SSMKIT_CUBLAS_CHECK(cublasSgemv(ws.cublas().on(stream), CUBLAS_OP_N, detail::as_int(out),
                                      detail::as_int(tokens), &alpha, dy.data(),
                                      detail::as_int(dy.stride(0)), ws.ones(), 1, &beta,
                                      dbias.data(), detail::as_int(dbias.stride(0))));
    else if (!accumulate)
      SSMKIT_CUDA_CHECK(cudaMemset2DAsync(dbias.data(),
                                          sizeof(float) * std::max<Index>(dbias.stride(0), 1), 0,
                                          sizeof(float), out, stream));
  }
  if (!dx.absent())  // dx (tokens, in) = dy (tokens, out) · W (out, in)
    detail::gemm_rows(ws, false, false, tokens, in, out, dy.data(), dy.stride(0), weight.data(),
                      weight.stride(0), accumulate_dx ? 1.f : 0.f, dx.data(), dx.stride(0), stream);
}

}  // namespace ssmkit::cuda
