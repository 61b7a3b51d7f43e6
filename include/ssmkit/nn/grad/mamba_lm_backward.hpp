// Gradients of the whole Mamba language model (nn/mamba_lm.hpp): embedding → n_layer ×
// (residual += MambaBlock(RMSNorm(residual))) → RMSNorm → lm_head. The forward runs again keeping
// only each layer's residual input; each block's backward recomputes its own internals.
#pragma once

#include "ssmkit/nn/grad/cross_entropy.hpp"
#include "ssmkit/nn/grad/embedding_backward.hpp"
#include "ssmkit/nn/grad/linear_backward.hpp"
#include "ssmkit/nn/grad/mamba_block_backward.hpp"
#include "ssmkit/nn/grad/rms_norm_backward.hpp"
#include "ssmkit/nn/mamba_lm.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::nn {

/// Zero tensors of the shapes of the model's weights (lm_head absent when tied): a gradient
/// buffer for mamba_lm_backward, listed by nn::parameters(grads) in the order of
/// model.parameters().
template <class T>
MambaLMWeights<T> zeros_like(const MambaLM<T>& model) {
  const MambaLMConfig& c = model.config();
  MambaLMWeights<T> g;
  g.embedding = HostTensor<T, 2>(model.embedding().shape());
  for (Index i = 0; i < c.n_layer; ++i)
    g.layers.push_back(
        {HostTensor<T, 1>(model.norm(i).weight.shape()), zeros_like(model.mixer(i).weights())});
  g.norm_f = HostTensor<T, 1>(model.norm_f().weight.shape());
  if (!c.tie_embeddings)
    g.lm_head = HostTensor<T, 2>(model.head().shape());
  return g;
}

namespace detail {

/// The forward over ids (batch, L), then the backward from ∂ℓ/∂logits. `head_grad(x)` gets the
/// final normed activations x (tokens, d_model) and returns the loss (which this returns) and a
/// view of dlogits (tokens, vocab) that stays valid until this returns.
template <class T, class HeadGrad>
double mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                         MambaLMWeights<T>& grads, HeadGrad&& head_grad) {
  const MambaLMConfig& c = model.config();
  const Index batch = ids.size(0), L = ids.size(1), dm = c.d_model(), V = c.vocab_size;
  const Index tokens = batch * L, n_layer = c.n_layer;
  check_device(ids, "ids", Device::CPU);
  std::vector<std::int64_t> flat_ids;
  for (Index b = 0; b < batch; ++b)
    for (Index t = 0; t < L; ++t) {
      SSMKIT_CHECK(ids(b, t) >= 0 && ids(b, t) < V, "ids",
                   ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                   "in [0, vocab_size = " + std::to_string(V) + ")", ids(b, t));
      flat_ids.push_back(ids(b, t));
    }
  auto same = [](const auto& a, const auto& b) { return a.shape() == b.shape(); };
  bool shapes_ok = same(grads.embedding, model.embedding()) &&
                   grads.layers.size() == static_cast<std::size_t>(n_layer) &&
                   same(grads.norm_f, model.norm_f().weight) &&
                   (c.tie_embeddings ? grads.lm_head.numel() == 0
                                     : grads.lm_head.shape() == model.head().shape());
  for (Index i = 0; shapes_ok && i < n_layer; ++i)
    shapes_ok = same(grads.layers[static_cast<std::size_t>(i)].norm, model.norm(i).weight);
  SSMKIT_CHECK(shapes_ok, "grads", "shapes", "those of the model's weights (see zeros_like)",
               "different ones");
  if (tokens == 0) {
    for (auto& p : parameters(grads))
      std::fill_n(p.value.data(), p.value.size(0), T(0));
    return 0.0;
  }

  using Buffer = std::vector<T>;
  auto buf = [](Index n) { return Buffer(static_cast<std::size_t>(n)); };
  auto mat = [&](Buffer& b, Index cols) {
    return TensorView<T, 2>::unchecked(b.data(), {tokens, cols}, {cols, 1}, Device::CPU);
  };
  auto cmat = [&](const Buffer& b) {
    return TensorView<const T, 2>::unchecked(b.data(), {tokens, dm}, {dm, 1}, Device::CPU);
  };
  auto seq = [&](Buffer& b) {
    return TensorView<T, 3>::unchecked(b.data(), {batch, L, dm}, {L * dm, dm, 1}, Device::CPU);
  };
  auto cseq = [&](const Buffer& b) {
    return TensorView<const T, 3>::unchecked(b.data(), {batch, L, dm}, {L * dm, dm, 1},
                                             Device::CPU);
  };

  // Forward: residual[i] is layer i's input, residual[n_layer] the input of norm_f.
  std::vector<Buffer> residual(static_cast<std::size_t>(n_layer + 1));
  residual[0] = buf(tokens * dm);
  for (Index t = 0; t < tokens; ++t)
    std::copy_n(model.embedding().data() + flat_ids[static_cast<std::size_t>(t)] * dm, dm,
                residual[0].data() + t * dm);
  Buffer normed = buf(tokens * dm), mixed = buf(tokens * dm);
  typename MambaBlock<T>::Workspace ws;
  for (Index i = 0; i < n_layer; ++i) {
    const auto k = static_cast<std::size_t>(i);
    model.norm(i).forward(cmat(residual[k]), mat(normed, dm));
    model.mixer(i).forward(cseq(normed), seq(mixed), ws);
    residual[k + 1] = residual[k];
    T* r = residual[k + 1].data();
    parallel_for(0, tokens, [&](Index t) {
      for (Index f = t * dm; f < (t + 1) * dm; ++f)
        r[f] += mixed[static_cast<std::size_t>(f)];
    });
  }
  const auto top = static_cast<std::size_t>(n_layer);
  model.norm_f().forward(cmat(residual[top]), mat(normed, dm));

  // Backward.
  const auto [loss, dlogits] = head_grad(cmat(normed));
  const TensorView<T, 2> dhead = c.tie_embeddings ? grads.embedding.view() : grads.lm_head.view();
  Buffer dnormed = buf(tokens * dm), dres = buf(tokens * dm), dx = buf(tokens * dm);
  linear_backward<T>(cmat(normed), model.head(), dlogits, mat(dnormed, dm), dhead, {});
  rms_norm_backward<T>(cmat(residual[top]), model.norm_f().weight.view(), model.norm_f().eps,
                       cmat(dnormed), mat(dres, dm), grads.norm_f.view());
  for (Index i = n_layer - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    MambaLayerWeights<T>& g = grads.layers[k];
    model.norm(i).forward(cmat(residual[k]), mat(normed, dm));
    mamba_block_backward<T>(model.mixer(i), cseq(normed), cseq(dres), seq(dnormed), g.mixer);
    rms_norm_backward<T>(cmat(residual[k]), model.norm(i).weight.view(), model.norm(i).eps,
                         cmat(dnormed), mat(dx, dm), g.norm.view());
    // The residual path passes dres through unchanged; the norm's branch adds to it.
    parallel_for(0, tokens, [&](Index t) {
      for (Index f = t * dm; f < (t + 1) * dm; ++f)
        dres[static_cast<std::size_t>(f)] += dx[static_cast<std::size_t>(f)];
    });
    residual[k + 1] = Buffer();  // no longer needed
  }
  embedding_backward<T, std::int64_t>(
      TensorView<const std::int64_t, 1>(flat_ids.data(), {tokens}, "ids"), cmat(dres),
      grads.embedding.view(), /*accumulate=*/c.tie_embeddings);
  return loss;
}

}  // namespace detail

/// Mean cross-entropy of the model's logits on ids (batch, L) against targets (batch, L) — tokens
/// whose target is ignore_index do not count — and its gradient: every tensor of `grads`
/// (shaped by zeros_like(model)) is overwritten. The tied embedding gets both of its gradients.
template <class T>
double mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                         TensorView<const std::int64_t, 2> targets, MambaLMWeights<T>& grads,
                         Index ignore_index = -100) {
  check_device(targets, "targets", Device::CPU);
  check_shape(targets, "targets", {ids.size(0), ids.size(1)});
  const Index tokens = ids.size(0) * ids.size(1), V = model.vocab_size();
  // Validated before any work (cross_entropy checks them again, cheaply).
  std::vector<std::int64_t> flat_targets;
  for (Index b = 0; b < targets.size(0); ++b)
    for (Index t = 0; t < targets.size(1); ++t) {
      const std::int64_t y = targets(b, t);
      SSMKIT_CHECK(y == ignore_index || (y >= 0 && y < V), "targets",
                   ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                   "in [0, " + std::to_string(V) + ") or the ignore_index", y);
      flat_targets.push_back(y);
    }
  std::vector<T> logits, dlogits;
  return detail::mamba_lm_backward<T>(model, ids, grads, [&](TensorView<const T, 2> x) {
    logits.resize(static_cast<std::size_t>(tokens * V));
    dlogits.resize(logits.size());
    const auto lv = TensorView<T, 2>::unchecked(logits.data(), {tokens, V}, {V, 1}, Device::CPU);
    const auto dv = TensorView<T, 2>::unchecked(dlogits.data(), {tokens, V}, {V, 1}, Device::CPU);
    linear<T>(x, model.head(), {}, lv);
    const double loss = cross_entropy<T, std::int64_t>(
        lv, TensorView<const std::int64_t, 1>(flat_targets.data(), {tokens}, "targets"), dv,
        ignore_index);
    return std::pair<double, TensorView<const T, 2>>(loss, dv);
  });
}

/// The gradient of any loss of the logits, given dlogits = ∂ℓ/∂logits (batch, L, vocab,
/// contiguous): every tensor of `grads` (shaped by zeros_like(model)) is overwritten.
template <class T>
void mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                       TensorView<const T, 3> dlogits, MambaLMWeights<T>& grads) {
  const Index batch = ids.size(0), L = ids.size(1), V = model.vocab_size();
  check_device(dlogits, "dlogits", Device::CPU);
  check_shape(dlogits, "dlogits", {batch, L, V});
  SSMKIT_CHECK(dlogits.is_contiguous(), "dlogits", "layout", "contiguous", "strided");
  detail::mamba_lm_backward<T>(model, ids, grads, [&](TensorView<const T, 2>) {
    return std::pair<double, TensorView<const T, 2>>(
        0.0,
        TensorView<const T, 2>::unchecked(dlogits.data(), {batch * L, V}, {V, 1}, Device::CPU));
  });
}

}  // namespace ssmkit::nn
