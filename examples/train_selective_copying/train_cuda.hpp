// train_selective_copying's GPU path, compiled by nvcc into the example when CUDA is there
// (main.cpp itself stays plain C++).
#pragma once

#include <ssmkit/core/tensor_view.hpp>
#include <ssmkit/nn/mamba_lm.hpp>
#include <ssmkit/optim/adamw.hpp>

#include <cstdint>
#include <memory>

/// Trains a model's weights on the GPU: a device copy of them, their gradients, AdamW's moments
/// and the backward's workspace, all made once.
class CudaTrainer {
 public:
  /// Uploads `model`'s weights; AdamW with `adam`, weight decay where the parameter list says.
  /// Throws ssmkit::Error (no device, ...).
  CudaTrainer(ssmkit::nn::MambaLM<float>& model, const ssmkit::optim::AdamWOptions& adam);
  ~CudaTrainer();
  CudaTrainer(const CudaTrainer&) = delete;
  CudaTrainer& operator=(const CudaTrainer&) = delete;

  /// One step on host ids and targets (batch, L): the loss's gradient, clipped to a global norm
  /// of max_norm, then AdamW at learning rate lr. Returns the loss (mean cross-entropy).
  double step(ssmkit::TensorView<const std::int64_t, 2> ids,
              ssmkit::TensorView<const std::int64_t, 2> targets, double lr, double max_norm);

  /// Copies the trained weights into `model` (which it was made from).
  void download(ssmkit::nn::MambaLM<float>& model) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
