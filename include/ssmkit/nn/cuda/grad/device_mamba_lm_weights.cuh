// The trainable weights of a Mamba LM (nn/mamba_lm.hpp) in device memory, all float, in one flat
// buffer with a view per tensor: what the GPU backward reads (weights) and writes (gradients), and
// what an optimizer and gradient clipping step through, tensor by tensor or as a whole.
#pragma once

#include "ssmkit/core/cuda_check.cuh"
#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/nn/mamba_lm.hpp"

#include <cuda_runtime.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::nn {

/// Views of one block's tensors (E = float or const float), in HF's shapes as MambaBlockWeights;
/// an absent optional bias is an absent view.
template <class E>
struct MambaBlockWeightViews {
  TensorView<E, 2> in_proj_weight;   ///< (2·d_inner, d_model)
  TensorView<E, 1> in_proj_bias;     ///< (2·d_inner), optional
  TensorView<E, 2> conv1d_weight;    ///< (d_inner, d_conv)
  TensorView<E, 1> conv1d_bias;      ///< (d_inner), optional
  TensorView<E, 2> x_proj_weight;    ///< (dt_rank + 2·d_state, d_inner)
  TensorView<E, 2> dt_proj_weight;   ///< (d_inner, dt_rank)
  TensorView<E, 1> dt_proj_bias;     ///< (d_inner)
  TensorView<E, 2> A_log;            ///< (d_inner, d_state)
  TensorView<E, 1> D;                ///< (d_inner)
  TensorView<E, 2> out_proj_weight;  ///< (d_model, d_inner)
  TensorView<E, 1> out_proj_bias;    ///< (d_model), optional
};

/// A Mamba LM's weights (or their gradients) on the GPU, float, zero at construction. The tensors
/// are those of nn::parameters(MambaLMWeights&), in that order and under those names, each
/// starting 64-byte aligned in one allocation (the gaps stay zero). Move-only.
class DeviceMambaLMWeights {
 public:
  DeviceMambaLMWeights() = default;

  /// Room for the tensors of `model` (its optional biases and head present or not), zero.
  explicit DeviceMambaLMWeights(const MambaLM<float>& model) : c_(model.config()) {
    const Index V = c_.vocab_size, dm = c_.d_model(), di = c_.block.d_inner;
    const Index N = c_.block.d_state, R = c_.block.dt_rank, K = c_.block.d_conv;
    embedding_ = add(io::kHfEmbeddings, V, dm, true);
    for (Index i = 0; i < c_.n_layer; ++i) {
      const io::MambaLayerNames n(i);
      const MambaBlockWeights<float>& w = model.mixer(i).weights();
      Layer l{};
      l[kNorm] = add(n.norm, dm, 0, false);
      l[kInW] = add(n.in_proj_weight, 2 * di, dm, true);
      l[kInB] = w.in_proj_bias.numel() ? add(n.in_proj_bias, 2 * di, 0, false) : -1;
      l[kConvW] = add(n.conv1d_weight, di, K, true);
      l[kConvB] = w.conv1d_bias.numel() ? add(n.conv1d_bias, di, 0, false) : -1;
      l[kXW] = add(n.x_proj_weight, R + 2 * N, di, true);
      l[kDtW] = add(n.dt_proj_weight, di, R, true);
      l[kDtB] = add(n.dt_proj_bias, di, 0, false);
      l[kALog] = add(n.A_log, di, N, false);
      l[kD] = add(n.D, di, 0, false);
      l[kOutW] = add(n.out_proj_weight, dm, di, true);
      l[kOutB] = w.out_proj_bias.numel() ? add(n.out_proj_bias, dm, 0, false) : -1;
      layers_.push_back(l);
    }
    norm_f_ = add(io::kHfNormF, dm, 0, false);
    lm_head_ = c_.tie_embeddings ? -1 : add(io::kHfLmHead, V, dm, true);
    buf_ = cuda::DeviceBuffer<float>(size_, "trainable weights");
    if (size_ > 0)
      SSMKIT_CUDA_CHECK(cudaMemset(buf_.data(), 0, buf_.bytes()));
  }

  /// Zero tensors laid out as `other`'s: a gradient buffer for `other`'s weights.
  static DeviceMambaLMWeights zeros_like(const DeviceMambaLMWeights& other) {
    DeviceMambaLMWeights z;
    z.c_ = other.c_;
    z.entries_ = other.entries_;
    z.layers_ = other.layers_;
    z.embedding_ = other.embedding_, z.norm_f_ = other.norm_f_, z.lm_head_ = other.lm_head_;
    z.size_ = other.size_;
    z.buf_ = cuda::DeviceBuffer<float>(z.size_, "trainable weights");
    if (z.size_ > 0)
      SSMKIT_CUDA_CHECK(cudaMemset(z.buf_.data(), 0, z.buf_.bytes()));
    return z;
  }

  const MambaLMConfig& config() const { return c_; }

  /// Throws unless `o` (named `arg`) holds the same tensors as this (names and sizes, in the same
  /// order); the message names the first that differs.
  void check_same_layout(const DeviceMambaLMWeights& o, const char* arg) const {
    SSMKIT_CHECK(o.entries_.size() == entries_.size(), arg, "tensor count",
                 std::to_string(entries_.size()) + " (see zeros_like)", o.entries_.size());
    const auto describe = [](const Entry& e) {
      return e.name + " (" + std::to_string(e.rows) +
             (e.cols ? " x " + std::to_string(e.cols) : "") + ")";
    };
    for (std::size_t k = 0; k < entries_.size(); ++k) {
      const Entry &e = entries_[k], &f = o.entries_[k];
      const std::string what = "tensor " + std::to_string(k);
      SSMKIT_CHECK(e.name == f.name && e.rows == f.rows && e.cols == f.cols, arg, what.c_str(),
                   describe(e), describe(f));
    }
  }

  /// Copies host tensors in, synchronously: `host` lists them as nn::parameters(weights) or
  /// MambaLM::parameters() do, and must name the same tensors with the same sizes.
  void upload(const std::vector<NamedParameter<float>>& host) {
    check_host(host);
    std::vector<float> staged(static_cast<std::size_t>(size_), 0.f);
    for (std::size_t k = 0; k < entries_.size(); ++k)
      for (Index i = 0; i < host[k].value.size(0); ++i)
        staged[static_cast<std::size_t>(entries_[k].offset + i)] = host[k].value(i);
    if (size_ > 0)
      SSMKIT_CUDA_CHECK(
          cudaMemcpy(buf_.data(), staged.data(), buf_.bytes(), cudaMemcpyHostToDevice));
  }

  /// Copies the tensors out into `host` (listed as for upload()), synchronously.
  void download(const std::vector<NamedParameter<float>>& host) const {
    check_host(host);
    std::vector<float> staged(static_cast<std::size_t>(size_));
    if (size_ > 0)
      SSMKIT_CUDA_CHECK(
          cudaMemcpy(staged.data(), buf_.data(), buf_.bytes(), cudaMemcpyDeviceToHost));
    for (std::size_t k = 0; k < entries_.size(); ++k)
      for (Index i = 0; i < host[k].value.size(0); ++i)
        host[k].value(i) = staged[static_cast<std::size_t>(entries_[k].offset + i)];
  }

  /// The weights of a CPU model: upload(model.parameters()).
  void upload(MambaLM<float>& model) { upload(model.parameters()); }
  /// Into a CPU model (then model.parameters_changed()), e.g. to evaluate or save it.
  void download(MambaLM<float>& model) const {
    download(model.parameters());
    model.parameters_changed();
  }

  /// Every tensor as a flat device view, in the order of nn::parameters(), with its name and
  /// whether weight decay suits it.
  std::vector<NamedParameter<float>> parameters() {
    std::vector<NamedParameter<float>> list;
    for (const Entry& e : entries_)
      list.push_back({e.name, vec(e), e.decay});
    return list;
  }

  /// The whole allocation (the tensors and the zero gaps between them).
  TensorView<float, 1> flat() { return view1(buf_.data(), size_); }

  TensorView<float, 2> embedding() { return mat(embedding_); }
  TensorView<const float, 2> embedding() const { return mat(embedding_); }
  /// (vocab, d_model): the embedding when tied.
  TensorView<float, 2> head() { return mat(c_.tie_embeddings ? embedding_ : lm_head_); }
  TensorView<const float, 2> head() const { return mat(c_.tie_embeddings ? embedding_ : lm_head_); }
  TensorView<float, 1> norm(Index layer) { return vec(layers_.at(checked(layer))[kNorm]); }
  TensorView<const float, 1> norm(Index layer) const {
    return vec(layers_.at(checked(layer))[kNorm]);
  }
  TensorView<float, 1> norm_f() { return vec(norm_f_); }
  TensorView<const float, 1> norm_f() const { return vec(norm_f_); }
  MambaBlockWeightViews<float> mixer(Index layer) { return block<float>(layer); }
  MambaBlockWeightViews<const float> mixer(Index layer) const { return block<const float>(layer); }

  /// Sets every tensor to zero, ordered on `stream`.
  void zero(cudaStream_t stream) { buf_.fill_bytes_async(0, stream); }

 private:
  enum Slot { kNorm, kInW, kInB, kConvW, kConvB, kXW, kDtW, kDtB, kALog, kD, kOutW, kOutB, kSlots };
  using Layer = std::array<int, kSlots>;  // entry index per slot, -1 when absent

  struct Entry {
    std::string name;
    Index offset, rows, cols;  // cols 0: a vector of `rows`
    bool decay;
    Index numel() const { return cols ? rows * cols : rows; }
  };

  static constexpr Index kAlign = 16;  // floats: 64 bytes

  int add(std::string name, Index rows, Index cols, bool decay) {
    entries_.push_back({std::move(name), size_, rows, cols, decay});
    size_ += (entries_.back().numel() + kAlign - 1) / kAlign * kAlign;
    return static_cast<int>(entries_.size() - 1);
  }

  std::size_t checked(Index layer) const {
    SSMKIT_CHECK(layer >= 0 && layer < c_.n_layer, "layer", "index",
                 "in [0, " + std::to_string(c_.n_layer) + ")", layer);
    return static_cast<std::size_t>(layer);
  }

  void check_host(const std::vector<NamedParameter<float>>& host) const {
    SSMKIT_CHECK_EQ("host parameters", "count", entries_.size(), host.size());
    for (std::size_t k = 0; k < entries_.size(); ++k) {
      SSMKIT_CHECK(host[k].name == entries_[k].name && host[k].value.size(0) == entries_[k].numel(),
                   "host parameters", ("entry " + std::to_string(k)).c_str(),
                   entries_[k].name + " of " + std::to_string(entries_[k].numel()) + " elements",
                   host[k].name + " of " + std::to_string(host[k].value.size(0)));
      check_device(host[k].value, "host parameters", Device::CPU);
    }
  }

  float* at(int k) const { return const_cast<float*>(buf_.data()) + entries_[k].offset; }
  TensorView<float, 1> vec(int k) const {
    if (k < 0)
      return {};
    return view1(at(k), entries_[k].numel());
  }
  TensorView<float, 1> vec(const Entry& e) const {
    return view1(const_cast<float*>(buf_.data()) + e.offset, e.numel());
  }
  TensorView<float, 2> mat(int k) const {
    if (k < 0)
      return {};
    const Entry& e = entries_[k];
    return TensorView<float, 2>::unchecked(at(k), {e.rows, e.cols}, {e.cols, 1}, Device::CUDA);
  }
  static TensorView<float, 1> view1(float* p, Index n) {
    return TensorView<float, 1>::unchecked(p, {n}, {1}, Device::CUDA);
  }

  template <class E>
  MambaBlockWeightViews<E> block(Index layer) const {
    const Layer& l = layers_.at(checked(layer));
    MambaBlockWeightViews<E> v;
    v.in_proj_weight = mat(l[kInW]), v.in_proj_bias = vec(l[kInB]);
    v.conv1d_weight = mat(l[kConvW]), v.conv1d_bias = vec(l[kConvB]);
    v.x_proj_weight = mat(l[kXW]);
    v.dt_proj_weight = mat(l[kDtW]), v.dt_proj_bias = vec(l[kDtB]);
    v.A_log = mat(l[kALog]), v.D = vec(l[kD]);
    v.out_proj_weight = mat(l[kOutW]), v.out_proj_bias = vec(l[kOutB]);
    return v;
  }

  MambaLMConfig c_;
  std::vector<Entry> entries_;
  std::vector<Layer> layers_;
  int embedding_ = -1, norm_f_ = -1, lm_head_ = -1;
  Index size_ = 0;
  cuda::DeviceBuffer<float> buf_;
};

}  // namespace ssmkit::nn
