// Gradients of the whole Mamba language model (nn/mamba_lm.hpp): embedding → n_layer ×
// (residual += MambaBlock(RMSNorm(residual))) → RMSNorm → lm_head. The forward runs again keeping
// only each layer's residual input; each block's backward recomputes its own internals.
#pragma once

#include "ssmkit/nn/grad/checked_tokens.hpp"
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

/// What one batch shard of mamba_lm_backward works in.
template <class T>
struct LMBackwardShard {
  std::vector<std::vector<T>> residual;  // each layer's input, then norm_f's
  Workspace<T, 7> buffers;               // normed, mixed, dnormed, dres, dx, logits, dlogits
  typename MambaBlock<T>::Workspace forward;
  MambaBlockBackwardBuffers<T> block;
};

}  // namespace detail

/// The host buffers mamba_lm_backward works in: one set per batch shard (thread), and the
/// gradients of every shard but the first. Kept from one call to the next (a training loop's
/// steps), they are allocated once; contents between calls are unspecified.
template <class T>
struct MambaLMBackwardBuffers {
  std::vector<detail::LMBackwardShard<T>> shards;
  std::vector<MambaLMWeights<T>> shard_grads;
};

namespace detail {

/// Throws unless every id lies in [0, vocab) and grads has the shapes of zeros_like(model).
/// Returns the ids, sequence after sequence.
template <class T>
std::vector<std::int64_t> checked_ids(const MambaLM<T>& model,
                                      TensorView<const std::int64_t, 2> ids,
                                      const MambaLMWeights<T>& grads) {
  const MambaLMConfig& c = model.config();
  std::vector<std::int64_t> flat = checked_token_ids(ids, c.vocab_size);
  check_grad_shape(grads.embedding, model.embedding(), "grads.embedding");
  SSMKIT_CHECK(grads.layers.size() == static_cast<std::size_t>(c.n_layer), "grads.layers", "count",
               std::to_string(c.n_layer) + ", the model's (see zeros_like)", grads.layers.size());
  for (Index i = 0; i < c.n_layer; ++i) {
    const MambaLayerWeights<T>& g = grads.layers[static_cast<std::size_t>(i)];
    const std::string layer = "grads.layers[" + std::to_string(i) + "].";
    check_grad_shape(g.norm, model.norm(i).weight, layer + "norm");
    check_grad_shapes(g.mixer, model.mixer(i).weights(), layer + "mixer.");
  }
  check_grad_shape(grads.norm_f, model.norm_f().weight, "grads.norm_f");
  if (c.tie_embeddings)
    SSMKIT_CHECK(grads.lm_head.numel() == 0, "grads.lm_head", "presence",
                 "absent (tied embeddings)",
                 ssmkit::detail::shape_string<2>(grads.lm_head.shape()));
  else
    check_grad_shape(grads.lm_head, model.head(), "grads.lm_head");
  return flat;
}

/// Sets every gradient to zero (the gradient of an empty batch); returns the loss, 0.
template <class T>
double zero(MambaLMWeights<T>& grads) {
  for (auto& p : parameters(grads))
    std::fill_n(p.value.data(), p.value.size(0), T(0));
  return 0.0;
}

/// The forward over `batch` sequences of length L (ids contiguous, already checked), then the
/// backward from ∂ℓ/∂logits into grads. `head_grad(x)` gets the final normed activations x
/// (tokens, d_model) and returns a view of dlogits (tokens, vocab) valid until this returns.
template <class T, class HeadGrad>
void mamba_lm_backward_rows(const MambaLM<T>& model, const std::int64_t* ids, Index batch, Index L,
                            MambaLMWeights<T>& grads, LMBackwardShard<T>& work,
                            HeadGrad&& head_grad) {
  const MambaLMConfig& c = model.config();
  const Index dm = c.d_model(), tokens = batch * L, n_layer = c.n_layer;
  // Each buffer is written whole before it is read.
  auto buf = [&](int slot) { return work.buffers.get(slot, tokens * dm); };
  auto mat = [&](T* b) {
    return TensorView<T, 2>::unchecked(b, {tokens, dm}, {dm, 1}, Device::CPU);
  };
  auto cmat = [&](const T* b) {
    return TensorView<const T, 2>::unchecked(b, {tokens, dm}, {dm, 1}, Device::CPU);
  };
  auto seq = [&](T* b) {
    return TensorView<T, 3>::unchecked(b, {batch, L, dm}, {L * dm, dm, 1}, Device::CPU);
  };
  auto cseq = [&](const T* b) {
    return TensorView<const T, 3>::unchecked(b, {batch, L, dm}, {L * dm, dm, 1}, Device::CPU);
  };
  auto add = [&](T* acc, const T* x) {
    parallel_for(0, batch, [&](Index s) {
      for (Index f = s * L * dm; f < (s + 1) * L * dm; ++f)
        acc[f] += x[f];
    });
  };

  // Forward: residual[i] is layer i's input, residual[n_layer] the input of norm_f.
  std::vector<std::vector<T>>& residual = work.residual;
  residual.resize(static_cast<std::size_t>(n_layer + 1));
  for (auto& r : residual)
    r.resize(static_cast<std::size_t>(tokens * dm));
  for (Index t = 0; t < tokens; ++t)
    std::copy_n(model.embedding().data() + ids[t] * dm, dm, residual[0].data() + t * dm);
  T *normed = buf(0), *mixed = buf(1);
  for (Index i = 0; i < n_layer; ++i) {
    const auto k = static_cast<std::size_t>(i);
    model.norm(i).forward(cmat(residual[k].data()), mat(normed));
    model.mixer(i).forward(cseq(normed), seq(mixed), work.forward);
    residual[k + 1] = residual[k];
    add(residual[k + 1].data(), mixed);
  }
  const auto top = static_cast<std::size_t>(n_layer);
  model.norm_f().forward(cmat(residual[top].data()), mat(normed));

  // Backward.
  const TensorView<const T, 2> dlogits = head_grad(cmat(normed));
  const TensorView<T, 2> dhead = c.tie_embeddings ? grads.embedding.view() : grads.lm_head.view();
  T *dnormed = buf(2), *dres = buf(3), *dx = buf(4);
  linear_backward<T>(cmat(normed), model.head(), dlogits, mat(dnormed), dhead, {});
  rms_norm_backward<T>(cmat(residual[top].data()), model.norm_f().weight.view(), model.norm_f().eps,
                       cmat(dnormed), mat(dres), grads.norm_f.view());
  for (Index i = n_layer - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    MambaLayerWeights<T>& g = grads.layers[k];
    model.norm(i).forward(cmat(residual[k].data()), mat(normed));
    mamba_block_backward<T>(model.mixer(i), cseq(normed), cseq(dres), seq(dnormed), g.mixer,
                            work.block);
    rms_norm_backward<T>(cmat(residual[k].data()), model.norm(i).weight.view(), model.norm(i).eps,
                         cmat(dnormed), mat(dx), g.norm.view());
    add(dres, dx);  // the residual path passes dres through; the norm's branch adds to it
  }
  embedding_backward<T, std::int64_t>(TensorView<const std::int64_t, 1>(ids, {tokens}, "ids"),
                                      cmat(dres), grads.embedding.view(),
                                      /*accumulate=*/c.tie_embeddings);
}

/// Splits the batch into one shard of whole sequences per thread (a few large tasks rather than
/// many small parallel regions: the kernels of a small model are too short to split) and calls
/// shard(work, first, count, g) for each, with its buffers in `buffers` and g being `grads` for
/// the first shard and buffers' gradient set for the others; then sums them into grads.
/// Sequential with one thread or one sequence.
template <class T, class Shard>
void over_batch_shards(const MambaLM<T>& model, Index batch, MambaLMWeights<T>& grads,
                       MambaLMBackwardBuffers<T>& buffers, Shard&& shard) {
  const Index shards = std::max<Index>(1, std::min<Index>(max_threads(), batch));
  if (buffers.shards.size() < static_cast<std::size_t>(shards))
    buffers.shards.resize(static_cast<std::size_t>(shards));
  if (shards == 1) {
    shard(buffers.shards[0], Index{0}, batch, grads);
    return;
  }
  // Gradient sets of another model's shapes are replaced; each shard overwrites its own.
  std::vector<MambaLMWeights<T>>& extra = buffers.shard_grads;
  const auto sizes = [](MambaLMWeights<T>& w) {
    std::vector<Index> n;
    for (const auto& p : parameters(w))
      n.push_back(p.value.size(0));
    return n;
  };
  const std::vector<Index> want = sizes(grads);
  for (auto& e : extra)
    if (sizes(e) != want)
      e = zeros_like(model);
  while (extra.size() < static_cast<std::size_t>(shards - 1))
    extra.push_back(zeros_like(model));
  parallel_for(0, shards, [&](Index k) {
    const Index first = batch * k / shards, end = batch * (k + 1) / shards;
    const auto i = static_cast<std::size_t>(k);
    shard(buffers.shards[i], first, end - first, k == 0 ? grads : extra[i - 1]);
  });
  auto total = parameters(grads);
  std::vector<std::vector<NamedParameter<T>>> parts;
  for (Index k = 1; k < shards; ++k)
    parts.push_back(parameters(extra[static_cast<std::size_t>(k - 1)]));
  parallel_for(0, static_cast<Index>(total.size()), [&](Index p) {
    const auto k = static_cast<std::size_t>(p);
    for (const auto& part : parts)
      for (Index i = 0; i < total[k].value.size(0); ++i)
        total[k].value(i) += part[k].value(i);
  });
}

}  // namespace detail

/// Mean cross-entropy of the model's logits on ids (batch, L) against targets (batch, L) — tokens
/// whose target is ignore_index do not count — and its gradient: every tensor of `grads`
/// (shaped by zeros_like(model)) is overwritten. The tied embedding gets both of its gradients.
/// With several threads the batch is split among them (see detail::over_batch_shards), so the
/// result depends on the thread count at the level of rounding.
/// `buffers` holds what it works in from one call to the next (see MambaLMBackwardBuffers).
template <class T>
double mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                         TensorView<const std::int64_t, 2> targets, MambaLMWeights<T>& grads,
                         MambaLMBackwardBuffers<T>& buffers, Index ignore_index = -100) {
  const std::vector<std::int64_t> flat_ids = detail::checked_ids(model, ids, grads);
  const Index batch = ids.size(0), L = ids.size(1), V = model.vocab_size();
  Index counted = 0;
  const std::vector<std::int64_t> flat_targets =
      detail::checked_targets(targets, batch, L, V, ignore_index, counted);
  if (batch * L == 0)
    return detail::zero(grads);
  std::vector<double> loss(static_cast<std::size_t>(batch), 0.0);  // per shard, by first row
  detail::over_batch_shards(
      model, batch, grads, buffers, [&](auto& work, Index first, Index count, auto& g) {
        const Index tokens = count * L;
        const std::int64_t* y = flat_targets.data() + first * L;
        const Index mine = static_cast<Index>(
            std::count_if(y, y + tokens, [&](std::int64_t v) { return v != ignore_index; }));
        T* logits = work.buffers.get(5, tokens * V);
        T* dlogits = work.buffers.get(6, tokens * V);
        detail::mamba_lm_backward_rows<T>(
            model, flat_ids.data() + first * L, count, L, g, work, [&](TensorView<const T, 2> x) {
              const auto lv = TensorView<T, 2>::unchecked(logits, {tokens, V}, {V, 1}, Device::CPU);
              const auto dv =
                  TensorView<T, 2>::unchecked(dlogits, {tokens, V}, {V, 1}, Device::CPU);
              linear<T>(x, model.head(), {}, lv);
              const double mean = cross_entropy<T, std::int64_t>(
                  lv, TensorView<const std::int64_t, 1>(y, {tokens}, "targets"), dv, ignore_index);
              // This shard's mean over its own answers, reweighted to the mean over the batch's.
              const double share =
                  counted ? static_cast<double>(mine) / static_cast<double>(counted) : 0.0;
              loss[static_cast<std::size_t>(first)] = mean * share;
              for (Index i = 0; i < tokens * V; ++i)
                dlogits[i] = static_cast<T>(dlogits[i] * share);
              return TensorView<const T, 2>::unchecked(dlogits, {tokens, V}, {V, 1}, Device::CPU);
            });
      });
  double total = 0;
  for (double l : loss)
    total += l;
  return total;
}

/// The same with buffers of its own, allocated for this call.
template <class T>
double mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                         TensorView<const std::int64_t, 2> targets, MambaLMWeights<T>& grads,
                         Index ignore_index = -100) {
  MambaLMBackwardBuffers<T> buffers;
  return mamba_lm_backward(model, ids, targets, grads, buffers, ignore_index);
}

/// The gradient of any loss of the logits, given dlogits = ∂ℓ/∂logits (batch, L, vocab,
/// contiguous): every tensor of `grads` (shaped by zeros_like(model)) is overwritten.
/// `buffers` holds what it works in from one call to the next (see MambaLMBackwardBuffers).
template <class T>
void mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                       TensorView<const T, 3> dlogits, MambaLMWeights<T>& grads,
                       MambaLMBackwardBuffers<T>& buffers) {
  const std::vector<std::int64_t> flat_ids = detail::checked_ids(model, ids, grads);
  const Index batch = ids.size(0), L = ids.size(1), V = model.vocab_size();
  check_device(dlogits, "dlogits", Device::CPU);
  check_shape(dlogits, "dlogits", {batch, L, V});
  SSMKIT_CHECK(dlogits.is_contiguous(), "dlogits", "layout", "contiguous", "strided");
  if (batch * L == 0) {
    detail::zero(grads);
    return;
  }
  detail::over_batch_shards(
      model, batch, grads, buffers, [&](auto& work, Index first, Index count, auto& g) {
        detail::mamba_lm_backward_rows<T>(
            model, flat_ids.data() + first * L, count, L, g, work, [&](TensorView<const T, 2>) {
              return TensorView<const T, 2>::unchecked(dlogits.data() + first * L * V,
                                                       {count * L, V}, {V, 1}, Device::CPU);
            });
      });
}

/// The same with buffers of its own, allocated for this call.
template <class T>
void mamba_lm_backward(const MambaLM<T>& model, TensorView<const std::int64_t, 2> ids,
                       TensorView<const T, 3> dlogits, MambaLMWeights<T>& grads) {
  MambaLMBackwardBuffers<T> buffers;
  mamba_lm_backward(model, ids, dlogits, grads, buffers);
}

}  // namespace ssmkit::nn
