// Gradients of the Mamba language model on the GPU (nn/mamba_lm.hpp): the chain of the CPU
// nn::mamba_lm_backward — embedding → n_layer × (residual += MambaBlock(RMSNorm(residual))) →
// RMSNorm → lm_head (tied or not) → cross-entropy — over weights and gradients held in
// DeviceMambaLMWeights. The forward keeps each layer's residual input; each block's backward
// recomputes its own internals.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cuda/cross_entropy.cuh"
#include "ssmkit/kernels/cuda/embedding.cuh"
#include "ssmkit/kernels/cuda/embedding_backward.cuh"
#include "ssmkit/kernels/cuda/rms_norm.cuh"
#include "ssmkit/kernels/cuda/rms_norm_backward.cuh"
#include "ssmkit/nn/cuda/grad/device_mamba_lm_weights.cuh"
#include "ssmkit/nn/cuda/grad/linear_backward.cuh"
#include "ssmkit/nn/cuda/grad/mamba_block_backward.cuh"
#include "ssmkit/nn/grad/checked_tokens.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace ssmkit::nn {

/// Device memory of mamba_lm_backward: token ids and targets, every layer's residual input, the
/// logits, the blocks' workspace. reserve() once for a (batch, L); after the first step of that
/// size, a step allocates nothing.
class MambaLMBackwardWorkspace {
 public:
  explicit MambaLMBackwardWorkspace(const cuda::CudaOptions& options = {},
                                    ScanCheckpoints checkpoints = ScanCheckpoints::fine)
      : block_(options, checkpoints) {}

  /// Room for a model of config `c` on (batch, L) sequences.
  void reserve(const MambaLMConfig& c, Index batch, Index L) {
    const Index tokens = batch * L, dm = c.d_model();
    if (ids_.size() < tokens) {
      ids_ = cuda::DeviceBuffer<std::int64_t>(tokens, "ids");
      targets_ = cuda::DeviceBuffer<std::int64_t>(tokens, "targets");
    }
    grow(residual_, (c.n_layer + 1) * tokens * dm);
    for (auto* b : {&normed_, &dnormed_, &dres_, &dx_})
      grow(*b, tokens * dm);
    grow(logits_, tokens * c.vocab_size);
    grow(loss_, 1);
    const std::size_t bytes = std::max(cuda::rms_norm_backward_workspace_size(tokens, dm),
                                       cuda::cross_entropy_workspace_size(tokens));
    if (scratch_.bytes() < bytes)
      scratch_ = cuda::DeviceBuffer<unsigned char>(static_cast<Index>(bytes), "kernel workspace");
    block_.reserve(c.block, batch, L);
  }

  MambaBlockBackwardWorkspace& block() { return block_; }

 private:
  friend double mamba_lm_backward(const DeviceMambaLMWeights&, TensorView<const std::int64_t, 2>,
                                  TensorView<const std::int64_t, 2>, DeviceMambaLMWeights&,
                                  MambaLMBackwardWorkspace&, cudaStream_t, Index);
  friend void mamba_lm_backward(const DeviceMambaLMWeights&, TensorView<const std::int64_t, 2>,
                                TensorView<const float, 3>, DeviceMambaLMWeights&,
                                MambaLMBackwardWorkspace&, cudaStream_t);

  static void grow(cuda::DeviceBuffer<float>& b, Index n) {
    if (b.size() < n)
      b = cuda::DeviceBuffer<float>(n, "LM backward workspace");
  }

  /// Throws unless grads is laid out as the model's weights and ids (host, batch × L) lie in
  /// [0, vocab); returns them, sequence after sequence.
  static std::vector<std::int64_t> checked_ids(const DeviceMambaLMWeights& model,
                                               TensorView<const std::int64_t, 2> ids,
                                               const DeviceMambaLMWeights& grads) {
    model.check_same_layout(grads, "grads");
    return detail::checked_token_ids(ids, model.config().vocab_size);
  }

  /// The forward over `batch` sequences of length L (checked ids, batch·L >= 1), then the
  /// backward from ∂ℓ/∂logits into grads. `head_grad(normed, scratch, bytes)` gets the final
  /// normed activations (tokens, d_model) and the kernels' scratch, and returns dlogits (tokens,
  /// vocab) on the device, ordered on `stream`.
  template <class HeadGrad>
  void backward(const DeviceMambaLMWeights& model, const std::vector<std::int64_t>& ids,
                Index batch, Index L, DeviceMambaLMWeights& grads, cudaStream_t stream,
                HeadGrad&& head_grad) {
    const MambaLMConfig& c = model.config();
    const Index dm = c.d_model(), tokens = batch * L, n_layer = c.n_layer;
    reserve(c, batch, L);
    ids_.copy_from_host_async(ids.data(), tokens, stream);
    const auto ids_dev =
        TensorView<const std::int64_t, 1>::unchecked(ids_.data(), {tokens}, {1}, Device::CUDA);
    auto mat = [&](float* p) {
      return TensorView<float, 2>::unchecked(p, {tokens, dm}, {dm, 1}, Device::CUDA);
    };
    auto seq = [&](float* p) {
      return TensorView<float, 3>::unchecked(p, {batch, L, dm}, {L * dm, dm, 1}, Device::CUDA);
    };
    auto residual = [&](Index i) { return residual_.data() + i * tokens * dm; };
    float *normed = normed_.data(), *dnormed = dnormed_.data(), *dres = dres_.data();
    void* scratch = scratch_.data();
    const std::size_t scratch_bytes = scratch_.bytes();

    // Forward: residual(i) is layer i's input, residual(n_layer) the input of norm_f.
    cuda::embedding<float>(ids_dev, model.embedding(), mat(residual(0)), stream);
    for (Index i = 0; i < n_layer; ++i) {
      cuda::rms_norm(mat(residual(i)), model.norm(i), c.norm_eps, mat(normed), stream);
      SSMKIT_CUDA_CHECK(cudaMemcpyAsync(residual(i + 1), residual(i), sizeof(float) * tokens * dm,
                                        cudaMemcpyDeviceToDevice, stream));
      mamba_block_forward(c.block, model.mixer(i), seq(normed), seq(residual(i + 1)), block_,
                          stream, /*accumulate=*/true);
    }
    cuda::rms_norm(mat(residual(n_layer)), model.norm_f(), c.norm_eps, mat(normed), stream);

    // Backward.
    const TensorView<const float, 2> dlogits = head_grad(mat(normed), scratch, scratch_bytes);
    cuda::linear_backward(block_.linear(), mat(normed), model.head(), dlogits, mat(dnormed),
                          grads.head(), {}, stream);
    cuda::rms_norm_backward(mat(residual(n_layer)), model.norm_f(), c.norm_eps, mat(dnormed),
                            mat(dres), grads.norm_f(), stream, scratch, scratch_bytes);
    for (Index i = n_layer - 1; i >= 0; --i) {
      cuda::rms_norm(mat(residual(i)), model.norm(i), c.norm_eps, mat(normed), stream);
      mamba_block_backward(c.block, model.mixer(i), seq(normed), seq(dres), seq(dnormed),
                           grads.mixer(i), block_, stream);
      cuda::rms_norm_backward(mat(residual(i)), model.norm(i), c.norm_eps, mat(dnormed),
                              mat(dx_.data()), grads.norm(i), stream, scratch, scratch_bytes);
      // The residual path passes dres through; the norm's branch adds to it.
      detail::add(dres, dx_.data(), tokens * dm, stream);
    }
    cuda::embedding_backward(ids_dev, mat(dres), grads.embedding(), stream,
                             /*accumulate=*/c.tie_embeddings);
  }

  MambaBlockBackwardWorkspace block_;
  cuda::DeviceBuffer<std::int64_t> ids_, targets_;
  cuda::DeviceBuffer<float> residual_, normed_, dnormed_, dres_, dx_, logits_, loss_;
  cuda::DeviceBuffer<unsigned char> scratch_;  // the norms' and the loss's, one call at a time
};

/// Mean cross-entropy of the model's logits on host ids (batch, L) against host targets (batch,
/// L) — tokens whose target is ignore_index do not count — and its gradient: every tensor of
/// `grads` (DeviceMambaLMWeights::zeros_like(model)) is overwritten; the tied embedding gets both
/// of its gradients. As nn::mamba_lm_backward on the CPU, the whole batch at once. Ordered on
/// `stream`, which it synchronises once to return the loss. Throws ssmkit::Error.
inline double mamba_lm_backward(const DeviceMambaLMWeights& model,
                                TensorView<const std::int64_t, 2> ids,
                                TensorView<const std::int64_t, 2> targets,
                                DeviceMambaLMWeights& grads, MambaLMBackwardWorkspace& ws,
                                cudaStream_t stream, Index ignore_index = -100) {
  cuda::check_current_device(ws.block_.device(), "ws");
  const std::vector<std::int64_t> flat_ids =
      MambaLMBackwardWorkspace::checked_ids(model, ids, grads);
  const Index batch = ids.size(0), L = ids.size(1), V = model.config().vocab_size;
  const Index tokens = batch * L;
  Index counted = 0;
  const std::vector<std::int64_t> flat_targets =
      detail::checked_targets(targets, batch, L, V, ignore_index, counted);
  if (tokens == 0) {
    grads.zero(stream);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    return 0.0;
  }
  ws.reserve(model.config(), batch, L);
  ws.targets_.copy_from_host_async(flat_targets.data(), tokens, stream);
  ws.backward(
      model, flat_ids, batch, L, grads, stream,
      [&](TensorView<const float, 2> normed, void* scratch, std::size_t bytes) {
        const auto logits =
            TensorView<float, 2>::unchecked(ws.logits_.data(), {tokens, V}, {V, 1}, Device::CUDA);
        cuda::linear_forward(ws.block_.linear(), normed, model.head(), {}, logits, stream);
        const auto targets_dev = TensorView<const std::int64_t, 1>::unchecked(
            ws.targets_.data(), {tokens}, {1}, Device::CUDA);
        // dlogits in place: the mean's gradient, (softmax − onehot) / counted.
        cuda::cross_entropy(logits, targets_dev, logits, ws.loss_.data(), stream, scratch, bytes,
                            ignore_index, counted ? 1.0 / static_cast<double>(counted) : 0.0);
        return TensorView<const float, 2>(logits);
      });
  float loss_sum = 0;
  ws.loss_.copy_to_host_async(&loss_sum, 1, stream);
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return counted ? static_cast<double>(loss_sum) / static_cast<double>(counted) : 0.0;
}

/// The gradient of any loss of the logits, given dlogits = ∂ℓ/∂logits (batch, L, vocab, device,
/// contiguous) for host ids (batch, L): every tensor of `grads` is overwritten. Ordered on
/// `stream` (no synchronisation). As the CPU overload; throws ssmkit::Error.
inline void mamba_lm_backward(const DeviceMambaLMWeights& model,
                              TensorView<const std::int64_t, 2> ids,
                              TensorView<const float, 3> dlogits, DeviceMambaLMWeights& grads,
                              MambaLMBackwardWorkspace& ws, cudaStream_t stream) {
  cuda::check_current_device(ws.block_.device(), "ws");
  const std::vector<std::int64_t> flat_ids =
      MambaLMBackwardWorkspace::checked_ids(model, ids, grads);
  const Index batch = ids.size(0), L = ids.size(1), V = model.config().vocab_size;
  check_device(dlogits, "dlogits", Device::CUDA);
  check_shape(dlogits, "dlogits", {batch, L, V});
  SSMKIT_CHECK(dlogits.is_contiguous(), "dlogits", "layout", "contiguous", "strided");
  if (batch * L == 0) {
    grads.zero(stream);
    return;
  }
  ws.backward(model, flat_ids, batch, L, grads, stream,
              [&](TensorView<const float, 2>, void*, std::size_t) {
                return TensorView<const float, 2>::unchecked(dlogits.data(), {batch * L, V}, {V, 1},
                                                             Device::CUDA);
              });
}

}  // namespace ssmkit::nn
