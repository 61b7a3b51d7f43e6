// train_selective_copying's GPU path: nn::mamba_lm_backward on device weights, gradient clipping
// and AdamW on the device; only the token ids go up and the loss comes back per step.
#include "train_cuda.hpp"

#include <ssmkit/core/cuda_check.cuh>
#include <ssmkit/nn/cuda/grad/mamba_lm_backward.cuh>
#include <ssmkit/optim/cuda/adamw.cuh>
#include <ssmkit/optim/cuda/clip_grad_norm.cuh>

#include <cuda_runtime.h>

#include <vector>

struct CudaTrainer::Impl {
  /// A created stream, destroyed last.
  struct Stream {
    cudaStream_t s{};
    Stream() { SSMKIT_CUDA_CHECK(cudaStreamCreate(&s)); }
    ~Stream() { cudaStreamDestroy(s); }
  };

  Impl(ssmkit::nn::MambaLM<float>& model, const ssmkit::optim::AdamWOptions& adam)
      : weights(model), optimizer(adam) {
    weights.upload(model);
    grads = ssmkit::nn::DeviceMambaLMWeights::zeros_like(weights);
    const auto p = weights.parameters(), g = grads.parameters();
    for (std::size_t k = 0; k < p.size(); ++k) {
      optimizer.add(p[k].value, g[k].value, p[k].decay);
      grad_views.push_back(g[k].value);
    }
  }

  Stream stream;
  ssmkit::nn::DeviceMambaLMWeights weights, grads;
  ssmkit::nn::MambaLMBackwardWorkspace workspace;
  ssmkit::optim::AdamW<float, ssmkit::Cuda> optimizer;
  std::vector<ssmkit::TensorView<float, 1>> grad_views;
};

CudaTrainer::CudaTrainer(ssmkit::nn::MambaLM<float>& model,
                         const ssmkit::optim::AdamWOptions& adam) {
  if (ssmkit::cuda::device_count() == 0)
    throw ssmkit::Error("ssmkit: --device cuda: no CUDA device found");
  impl_ = std::make_unique<Impl>(model, adam);
}

CudaTrainer::~CudaTrainer() = default;

double CudaTrainer::step(ssmkit::TensorView<const std::int64_t, 2> ids,
                         ssmkit::TensorView<const std::int64_t, 2> targets, double lr,
                         double max_norm) {
  Impl& m = *impl_;
  const double loss =
      ssmkit::nn::mamba_lm_backward(m.weights, ids, targets, m.grads, m.workspace, m.stream.s);
  ssmkit::optim::clip_grad_norm(m.grad_views, max_norm, m.stream.s);
  m.optimizer.options().lr = lr;
  m.optimizer.step(m.stream.s);
  return loss;
}

void CudaTrainer::download(ssmkit::nn::MambaLM<float>& model) const {
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(impl_->stream.s));
  impl_->weights.download(model);
}
