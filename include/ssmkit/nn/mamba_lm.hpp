// The Mamba language model (Gu & Dao, arXiv 2312.00752), as HF's MambaForCausalLM computes it:
// embedding → n_layer × (residual += MambaBlock(RMSNorm(residual))) → RMSNorm → lm_head.
#pragma once

#include "ssmkit/io/hf_mamba.hpp"
#include "ssmkit/nn/linear.hpp"
#include "ssmkit/nn/mamba_block.hpp"
#include "ssmkit/nn/rms_norm.hpp"
#include "ssmkit/nn/workspace.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::nn {

struct MambaLMConfig {
  Index vocab_size = 0;
  Index n_layer = 0;
  MambaBlockConfig block;  ///< d_model and the mixer sizes
  double norm_eps = 1e-5;
  bool tie_embeddings = true;

  Index d_model() const { return block.d_model; }

  void validate() const {
    block.validate();
    SSMKIT_CHECK(vocab_size >= 1, "config.vocab_size", "value", ">= 1", vocab_size);
    SSMKIT_CHECK(n_layer >= 0, "config.n_layer", "value", ">= 0", n_layer);
    SSMKIT_CHECK(std::isfinite(norm_eps) && norm_eps >= 0, "config.norm_eps", "value",
                 "finite and >= 0", norm_eps);
  }

  static MambaLMConfig from_hf(const io::MambaConfig& c) {
    MambaLMConfig m;
    m.vocab_size = c.vocab_size;
    m.n_layer = c.n_layer;
    m.block = {c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank};
    m.norm_eps = c.norm_eps;
    m.tie_embeddings = c.tie_word_embeddings;
    return m;
  }
};

/// One residual layer: its RMSNorm weight and its mixer.
template <class T>
struct MambaLayerWeights {
  HostTensor<T, 1> norm;  ///< (d_model)
  MambaBlockWeights<T> mixer;
};

template <class T>
struct MambaLMWeights {
  HostTensor<T, 2> embedding;  ///< (vocab, d_model)
  std::vector<MambaLayerWeights<T>> layers;
  HostTensor<T, 1> norm_f;   ///< (d_model)
  HostTensor<T, 2> lm_head;  ///< (vocab, d_model); empty when tied to the embedding
};

/// One parameter tensor as a flat view, under its HF checkpoint name, and whether weight decay
/// suits it (matrices other than A_log; not biases, norms, A_log or D, as mamba_ssm trains).
template <class T>
struct NamedParameter {
  std::string name;
  TensorView<T, 1> value;
  bool decay;
};

namespace detail {

template <class T, int R>
void add_parameter(std::vector<NamedParameter<T>>& list, std::string name, HostTensor<T, R>& t,
                   bool decay) {
  if (t.numel() != 0)  // absent optional biases are left out
    list.push_back({std::move(name), TensorView<T, 1>(t.data(), {t.numel()}, "parameter"), decay});
}

/// The tensors of every layer and the final ones, in checkpoint order: embedding, layers (norm,
/// then the mixer's), norm_f, lm_head. layer(i) gives layer i's norm weight and mixer weights.
template <class T, class Layer>
std::vector<NamedParameter<T>> parameter_list(HostTensor<T, 2>& embedding, Index n_layer,
                                              Layer&& layer, HostTensor<T, 1>& norm_f,
                                              HostTensor<T, 2>& lm_head) {
  std::vector<NamedParameter<T>> list;
  add_parameter(list, io::kHfEmbeddings, embedding, true);
  for (Index i = 0; i < n_layer; ++i) {
    const io::MambaLayerNames n(i);
    auto [norm, m] = layer(i);
    add_parameter(list, n.norm, norm, false);
    add_parameter(list, n.in_proj_weight, m.in_proj_weight, true);
    add_parameter(list, n.in_proj_bias, m.in_proj_bias, false);
    add_parameter(list, n.conv1d_weight, m.conv1d_weight, true);
    add_parameter(list, n.conv1d_bias, m.conv1d_bias, false);
    add_parameter(list, n.x_proj_weight, m.x_proj_weight, true);
    add_parameter(list, n.dt_proj_weight, m.dt_proj_weight, true);
    add_parameter(list, n.dt_proj_bias, m.dt_proj_bias, false);
    add_parameter(list, n.A_log, m.A_log, false);
    add_parameter(list, n.D, m.D, false);
    add_parameter(list, n.out_proj_weight, m.out_proj_weight, true);
    add_parameter(list, n.out_proj_bias, m.out_proj_bias, false);
  }
  add_parameter(list, io::kHfNormF, norm_f, false);
  add_parameter(list, io::kHfLmHead, lm_head, true);
  return list;
}

}  // namespace detail

/// Every tensor of a weight set (a model's gradients, say) in the order of MambaLM::parameters().
template <class T>
std::vector<NamedParameter<T>> parameters(MambaLMWeights<T>& w) {
  return detail::parameter_list<T>(
      w.embedding, static_cast<Index>(w.layers.size()),
      [&](Index i) -> std::pair<HostTensor<T, 1>&, MambaBlockWeights<T>&> {
        auto& l = w.layers[static_cast<std::size_t>(i)];
        return {l.norm, l.mixer};
      },
      w.norm_f, w.lm_head);
}

template <class T, class Backend = Cpu>
class MambaLM {
  // T is float or double (MambaBlock checks), so the residual stream, kept in T, is at least fp32
  // as HF's residual_in_fp32 asks.
  enum Slot { kResidual, kNormed, kMixed, kSlots };

 public:
  /// Decoding state of `batch()` sequences: every layer's conv and SSM state, the logits of each
  /// sequence's next token, and the scratch memory of prefill() and step().
  class Cache {
   public:
    Index batch() const { return logits_.size(0); }
    /// (batch, vocab) logits of the next token of each sequence, after prefill() or step().
    TensorView<const T, 2> logits() const { return logits_.view(); }
    /// Forgets every sequence (all states back to zero).
    void reset() {
      for (auto& s : layers_)
        s.reset();
    }

   private:
    friend class MambaLM;
    Cache(const MambaLMConfig& c, Index batch) : logits_({batch, c.vocab_size}, "logits") {
      for (Index i = 0; i < c.n_layer; ++i)
        layers_.emplace_back(c.block, batch);
    }
    std::vector<MambaBlockState<T>> layers_;
    HostTensor<T, 2> logits_;
    Workspace<T, kSlots> ws_;
    typename MambaBlock<T, Backend>::Workspace block_ws_;
  };

  /// Checks every weight's shape against `config` (blocks check their own).
  MambaLM(const MambaLMConfig& config, MambaLMWeights<T> w)
      : c_(config),
        embedding_(std::move(w.embedding)),
        lm_head_(std::move(w.lm_head)),
        norm_f_{std::move(w.norm_f), config.norm_eps} {
    c_.validate();
    const Index dm = c_.d_model(), V = c_.vocab_size;
    check_shape(embedding_.view(), "embedding", {V, dm});
    check_shape(norm_f_.weight.view(), "norm_f", {dm});
    if (c_.tie_embeddings)
      SSMKIT_CHECK(lm_head_.numel() == 0, "lm_head", "presence", "absent (tied embeddings)",
                   "a tensor");
    else
      check_shape(lm_head_.view(), "lm_head", {V, dm});
    SSMKIT_CHECK_EQ("layers", "count", static_cast<std::size_t>(c_.n_layer), w.layers.size());
    for (Index i = 0; i < c_.n_layer; ++i) {
      auto& l = w.layers[static_cast<std::size_t>(i)];
      check_shape(l.norm.view(), ("layers[" + std::to_string(i) + "].norm").c_str(), {dm});
      norms_.push_back({std::move(l.norm), c_.norm_eps});
      mixers_.emplace_back(c_.block, std::move(l.mixer));
    }
  }

  /// Loads an HF MambaForCausalLM directory (config.json + model.safetensors or shards),
  /// converting the stored dtype to T. `open` says whether tensors the config does not name are
  /// accepted (io::HfOpenOptions; by default they are an error).
  static MambaLM from_pretrained(const std::string& dir, const io::HfOpenOptions& open = {}) {
    const auto ck = io::HfMambaCheckpoint::open(dir, open);
    const io::MambaConfig& hc = ck.config();
    const MambaLMConfig c = MambaLMConfig::from_hf(hc);
    const Index dm = hc.d_model, di = hc.d_inner, N = hc.d_state, R = hc.dt_rank;
    MambaLMWeights<T> w;
    w.embedding = ck.load<T, 2>(io::kHfEmbeddings, {hc.vocab_size, dm});
    w.norm_f = ck.load<T, 1>(io::kHfNormF, {dm});
    if (!hc.tie_word_embeddings)
      w.lm_head = ck.load<T, 2>(io::kHfLmHead, {hc.vocab_size, dm});
    for (Index i = 0; i < hc.n_layer; ++i) {
      const io::MambaLayerNames n(i);
      MambaLayerWeights<T> l;
      l.norm = ck.load<T, 1>(n.norm, {dm});
      auto& m = l.mixer;
      m.in_proj_weight = ck.load<T, 2>(n.in_proj_weight, {2 * di, dm});
      const auto conv = ck.load<T, 3>(n.conv1d_weight, {di, 1, hc.d_conv});
      m.conv1d_weight = HostTensor<T, 2>({di, hc.d_conv});
      std::memcpy(m.conv1d_weight.data(), conv.data(), sizeof(T) * conv.numel());
      m.x_proj_weight = ck.load<T, 2>(n.x_proj_weight, {R + 2 * N, di});
      m.dt_proj_weight = ck.load<T, 2>(n.dt_proj_weight, {di, R});
      m.dt_proj_bias = ck.load<T, 1>(n.dt_proj_bias, {di});
      m.A_log = ck.load<T, 2>(n.A_log, {di, N});
      m.D = ck.load<T, 1>(n.D, {di});
      m.out_proj_weight = ck.load<T, 2>(n.out_proj_weight, {dm, di});
      if (hc.use_bias) {
        m.in_proj_bias = ck.load<T, 1>(n.in_proj_bias, {2 * di});
        m.out_proj_bias = ck.load<T, 1>(n.out_proj_bias, {dm});
      }
      if (hc.use_conv_bias)
        m.conv1d_bias = ck.load<T, 1>(n.conv1d_bias, {di});
      w.layers.push_back(std::move(l));
    }
    return MambaLM(c, std::move(w));
  }

  const MambaLMConfig& config() const { return c_; }
  Index vocab_size() const { return c_.vocab_size; }

  /// The parts, for a backward pass (nn/grad/mamba_lm_backward.hpp).
  const HostTensor<T, 2>& embedding() const { return embedding_; }
  /// The LM head's weight (vocab, d_model): the embedding when tied.
  TensorView<const T, 2> head() const {
    return c_.tie_embeddings ? embedding_.view() : lm_head_.view();
  }
  const RMSNorm<T>& norm(Index layer) const { return norms_.at(static_cast<std::size_t>(layer)); }
  const MambaBlock<T, Backend>& mixer(Index layer) const {
    return mixers_.at(static_cast<std::size_t>(layer));
  }
  const RMSNorm<T>& norm_f() const { return norm_f_; }

  /// Every parameter as a flat view to change in place (an optimizer step), in the order of
  /// nn::parameters(MambaLMWeights&); parameters_changed() must follow before the next forward.
  std::vector<NamedParameter<T>> parameters() {
    return detail::parameter_list<T>(
        embedding_, c_.n_layer,
        [&](Index i) -> std::pair<HostTensor<T, 1>&, MambaBlockWeights<T>&> {
          const auto k = static_cast<std::size_t>(i);
          return {norms_[k].weight, mixers_[k].mutable_weights()};
        },
        norm_f_.weight, lm_head_);
  }

  /// Recomputes what the blocks derive from their weights, after parameters() were changed.
  void parameters_changed() {
    for (auto& m : mixers_)
      m.weights_changed();
  }

  /// A cache for `batch` sequences, all empty.
  Cache make_cache(Index batch) const {
    SSMKIT_CHECK(batch >= 1, "batch", "value", ">= 1", batch);
    return Cache(c_, batch);
  }

  /// Logits (batch, L, vocab) of every position of ids (batch, L), from empty sequences.
  void forward(TensorView<const std::int64_t, 2> ids, TensorView<T, 3> logits) const {
    Cache cache = make_cache(std::max<Index>(1, ids.size(0)));
    prefill(ids, cache, 0, logits);
  }

  /// Continues sequences [first, first + batch) of `cache` with ids (batch, L), L >= 1: their
  /// states advance and cache.logits() rows get each one's next-token logits. `all_logits`
  /// (batch, L, vocab), when given, receives the logits of every position.
  void prefill(TensorView<const std::int64_t, 2> ids, Cache& cache, Index first = 0,
               TensorView<T, 3> all_logits = {}) const {
    const Index batch = ids.size(0), L = ids.size(1), dm = c_.d_model(), V = c_.vocab_size;
    SSMKIT_CHECK(L >= 1, "ids", "length size(1)", ">= 1", L);
    SSMKIT_CHECK(first >= 0 && first + batch <= cache.batch(), "first", "sequence range",
                 "inside the cache's " + std::to_string(cache.batch()) + " sequences",
                 "[" + std::to_string(first) + ", " + std::to_string(first + batch) + ")");
    if (!all_logits.absent()) {
      check_device(all_logits, "logits", Device::CPU);
      check_shape(all_logits, "logits", {batch, L, V});
    }
    check_ids(ids);
    const Index tokens = batch * L;
    T* residual = embed(ids, cache);
    T* normed = cache.ws_.get(kNormed, tokens * dm);
    T* mixed = cache.ws_.get(kMixed, tokens * dm);
    for (Index i = 0; i < c_.n_layer; ++i) {
      norms_[i].forward(cmat(residual, tokens, dm), mat(normed, tokens, dm));
      mixers_[i].forward(cseq(normed, batch, L), seq(mixed, batch, L), cache.block_ws_,
                         cache.layers_[i].view(first, batch));
      add(residual, mixed, tokens * dm);
    }
    if (!all_logits.absent()) {
      norm_f_.forward(cmat(residual, tokens, dm), mat(normed, tokens, dm));
      for (Index b = 0; b < batch; ++b) {
        linear<T>(cmat(normed + b * L * dm, L, dm), head(), {}, all_logits[b]);
        std::copy(&all_logits(b, L - 1, 0), &all_logits(b, L - 1, 0) + V,
                  &cache.logits_(first + b, 0));
      }
      return;
    }
    // Only the last position of each sequence: rows L-1, 2L-1, ... of the residual.
    const auto last = TensorView<const T, 2>::unchecked(residual + (L - 1) * dm, {batch, dm},
                                                        {L * dm, 1}, Device::CPU);
    norm_f_.forward(last, mat(normed, batch, dm));
    linear<T>(cmat(normed, batch, dm), head(), {}, rows(cache.logits_, first, batch));
  }

  /// One token per sequence of the cache: ids (cache.batch()). States advance; cache.logits()
  /// holds the logits of the token after.
  void step(TensorView<const std::int64_t, 1> ids, Cache& cache) const {
    const Index batch = cache.batch(), dm = c_.d_model();
    check_shape(ids, "ids", {batch});
    const auto ids2 = TensorView<const std::int64_t, 2>::unchecked(
        ids.data(), {batch, 1}, {ids.stride(0), 1}, ids.device());
    check_ids(ids2);
    T* residual = embed(ids2, cache);
    T* normed = cache.ws_.get(kNormed, batch * dm);
    T* mixed = cache.ws_.get(kMixed, batch * dm);
    for (Index i = 0; i < c_.n_layer; ++i) {
      norms_[i].forward(cmat(residual, batch, dm), mat(normed, batch, dm));
      mixers_[i].step(cmat(normed, batch, dm), mat(mixed, batch, dm), cache.layers_[i].view(),
                      cache.block_ws_);
      add(residual, mixed, batch * dm);
    }
    norm_f_.forward(cmat(residual, batch, dm), mat(normed, batch, dm));
    linear<T>(cmat(normed, batch, dm), head(), {}, cache.logits_.view());
  }

 private:
  void check_ids(const TensorView<const std::int64_t, 2>& ids) const {
    check_device(ids, "ids", Device::CPU);
    for (Index b = 0; b < ids.size(0); ++b)
      for (Index t = 0; t < ids.size(1); ++t)
        SSMKIT_CHECK(ids(b, t) >= 0 && ids(b, t) < c_.vocab_size, "ids",
                     ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                     "in [0, vocab_size = " + std::to_string(c_.vocab_size) + ")", ids(b, t));
  }

  /// The residual stream (tokens, d_model) starts as the embedding rows of the ids.
  T* embed(const TensorView<const std::int64_t, 2>& ids, Cache& cache) const {
    const Index dm = c_.d_model(), L = ids.size(1);
    T* residual = cache.ws_.get(kResidual, ids.size(0) * L * dm);
    for (Index b = 0; b < ids.size(0); ++b)
      for (Index t = 0; t < L; ++t)
        std::memcpy(residual + (b * L + t) * dm, embedding_.data() + ids(b, t) * dm,
                    sizeof(T) * static_cast<std::size_t>(dm));
    return residual;
  }

  static void add(T* acc, const T* x, Index n) {
    for (Index i = 0; i < n; ++i)
      acc[i] += x[i];
  }

  static TensorView<T, 2> mat(T* p, Index r, Index c) {
    return TensorView<T, 2>::unchecked(p, {r, c}, {c, 1}, Device::CPU);
  }
  static TensorView<const T, 2> cmat(const T* p, Index r, Index c) {
    return TensorView<const T, 2>::unchecked(p, {r, c}, {c, 1}, Device::CPU);
  }
  static TensorView<T, 2> rows(HostTensor<T, 2>& m, Index first, Index count) {
    return TensorView<T, 2>::unchecked(m.data() + first * m.size(1), {count, m.size(1)},
                                       {m.size(1), 1}, Device::CPU);
  }
  TensorView<T, 3> seq(T* p, Index batch, Index L) const {
    const Index dm = c_.d_model();
    return TensorView<T, 3>::unchecked(p, {batch, L, dm}, {L * dm, dm, 1}, Device::CPU);
  }
  TensorView<const T, 3> cseq(const T* p, Index batch, Index L) const {
    const Index dm = c_.d_model();
    return TensorView<const T, 3>::unchecked(p, {batch, L, dm}, {L * dm, dm, 1}, Device::CPU);
  }

  MambaLMConfig c_;
  HostTensor<T, 2> embedding_;
  HostTensor<T, 2> lm_head_;
  RMSNorm<T> norm_f_;
  std::vector<RMSNorm<T>> norms_;
  std::vector<MambaBlock<T, Backend>> mixers_;
};

}  // namespace ssmkit::nn
