// The Mamba language model on the GPU (Gu & Dao, arXiv 2312.00752), as nn::MambaLM and HF's
// MambaForCausalLM compute it: embedding → n_layer × (residual += MambaBlock(RMSNorm(residual)))
// → RMSNorm → lm_head, the residual stream in float. MambaLM<T, Cuda> stores its matrices as T
// (float or __nv_bfloat16). A decoding step (all layers, head and greedy argmax) can be captured
// in a CUDA graph and replayed per token, so only token ids travel to the host.
#pragma once

#include "ssmkit/core/device_buffer.cuh"
#include "ssmkit/kernels/cuda/argmax.cuh"
#include "ssmkit/kernels/cuda/embedding.cuh"
#include "ssmkit/kernels/cuda/rms_norm.cuh"
#include "ssmkit/nn/cuda/linear.cuh"
#include "ssmkit/nn/cuda/mamba_block.cuh"
#include "ssmkit/nn/mamba_lm.hpp"
#include "ssmkit/nn/sampling.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::nn {

namespace detail {

/// An instantiated CUDA graph (RAII, move-only).
class GraphExec {
 public:
  GraphExec() = default;
  GraphExec(GraphExec&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  GraphExec& operator=(GraphExec&& o) noexcept {
    std::swap(exec_, o.exec_);
    return *this;
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() {
    if (exec_ != nullptr)
      cudaGraphExecDestroy(exec_);
  }

  bool empty() const { return exec_ == nullptr; }

  /// Records what `work()` enqueues on `stream` (which must not be the legacy default stream)
  /// and instantiates it; nothing runs.
  template <class Work>
  void capture(cudaStream_t stream, Work&& work) {
    SSMKIT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      work();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph != nullptr)
        cudaGraphDestroy(graph);
      throw;
    }
    SSMKIT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    SSMKIT_CUDA_CHECK(status);
    *this = GraphExec();
    exec_ = exec;
  }

  void launch(cudaStream_t stream) const { SSMKIT_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace detail

template <class T>
class MambaLM<T, Cuda> {
  using Block = MambaBlock<T, Cuda>;

 public:
  /// Decoding state of `batch()` sequences in device memory, bound to the stream every call on
  /// it is ordered on: each layer's conv and SSM state, the logits of each sequence's next token
  /// and their argmax, the scratch memory of prefill() and steps, and the captured step graph.
  class Cache {
   public:
    Index batch() const { return batch_; }
    cudaStream_t stream() const { return stream_; }
    /// (batch, vocab) device logits of each sequence's next token, after prefill() or a step.
    TensorView<const float, 2> logits() const {
      return TensorView<const float, 2>::unchecked(logits_.data(), {batch_, vocab_}, {vocab_, 1},
                                                   Device::CUDA);
    }
    /// (batch) device ids: the argmax of logits(), what step_greedy() feeds back.
    TensorView<const std::int64_t, 1> next_ids() const {
      return TensorView<const std::int64_t, 1>::unchecked(next_.data(), {batch_}, {1},
                                                          Device::CUDA);
    }
    /// next_ids() copied to the host (waits for the stream).
    std::vector<std::int64_t> next_ids_host() const {
      std::vector<std::int64_t> ids(static_cast<std::size_t>(batch_));
      next_.copy_to_host_async(ids.data(), batch_, stream_);
      SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return ids;
    }
    /// Forgets every sequence (all states back to zero).
    void reset() {
      for (auto& s : layers_)
        s.reset(stream_);
    }

   private:
    friend class MambaLM;
    Cache(const MambaLMConfig& c, Index batch, const cuda::CudaOptions& options,
          cudaStream_t stream)
        : batch_(batch),
          vocab_(c.vocab_size),
          stream_(stream),
          logits_(batch * c.vocab_size, "logits"),
          next_(batch, "next ids"),
          residual_(batch * c.d_model(), "residual"),
          step_ws_(options),
          prefill_ws_(options) {
      for (Index i = 0; i < c.n_layer; ++i)
        layers_.emplace_back(c.block, batch, stream);
      step_ws_.reserve(c.block, batch);
      logits_.fill_bytes_async(0xFF, stream);  // NaN until a prefill writes them
      next_.fill_bytes_async(0, stream);
    }

    void reserve_prefill(Index tokens, Index d_model) {
      if (ids_.size() < tokens)
        ids_ = cuda::DeviceBuffer<std::int64_t>(tokens, "prefill ids");
      if (p_residual_.size() < tokens * d_model)
        p_residual_ = cuda::DeviceBuffer<float>(tokens * d_model, "prefill residual");
    }

    Index batch_, vocab_;
    cudaStream_t stream_;
    std::vector<DeviceMambaBlockState> layers_;
    cuda::DeviceBuffer<float> logits_;
    cuda::DeviceBuffer<std::int64_t> next_;
    // A step's buffers stay where they are, for the captured graph.
    cuda::DeviceBuffer<float> residual_;
    typename Block::Workspace step_ws_;
    detail::GraphExec graph_;
    // prefill() grows its own.
    cuda::DeviceBuffer<std::int64_t> ids_;
    cuda::DeviceBuffer<float> p_residual_;
    typename Block::Workspace prefill_ws_;
  };

  /// Uploads a (validated) CPU model's weights to the current device, synchronously. Its calls
  /// need that device current.
  explicit MambaLM(const MambaLM<float, Cpu>& host, const cuda::CudaOptions& options = {})
      : c_(host.config()),
        options_(options),
        device_(cuda::current_device()),
        embedding_(host.embedding().view(), "embedding"),
        norm_f_(upload(host.norm_f().weight, "norm_f")) {
    if (!c_.tie_embeddings)
      lm_head_ = cuda::DeviceMatrix<T>(host.head(), "lm_head");
    for (Index i = 0; i < c_.n_layer; ++i) {
      norms_.push_back(upload(host.norm(i).weight, "norm"));
      blocks_.emplace_back(host.mixer(i));
    }
  }

  /// Loads an HF MambaForCausalLM directory (config.json + model.safetensors or shards) as the
  /// CPU model does, `open` included, then uploads it.
  static MambaLM from_pretrained(const std::string& dir, const cuda::CudaOptions& options = {},
                                 const io::HfOpenOptions& open = {}) {
    return MambaLM(MambaLM<float, Cpu>::from_pretrained(dir, open), options);
  }

  const MambaLMConfig& config() const { return c_; }
  Index vocab_size() const { return c_.vocab_size; }

  /// Bytes of device memory the weights take (what one decoding step reads).
  std::size_t weight_bytes() const {
    std::size_t n = embedding_.bytes() + lm_head_.bytes() + norm_f_.bytes();
    for (Index i = 0; i < c_.n_layer; ++i)
      n += norms_[static_cast<std::size_t>(i)].bytes() +
           blocks_[static_cast<std::size_t>(i)].weight_bytes();
    return n;
  }

  /// A cache for `batch` sequences, all empty, whose calls are ordered on `stream`.
  Cache make_cache(Index batch, cudaStream_t stream) const {
    cuda::check_current_device(device_, "MambaLM");
    SSMKIT_CHECK(batch >= 1, "batch", "value", ">= 1", batch);
    return Cache(c_, batch, options_, stream);
  }

  /// Device logits (batch, L, vocab) of every position of host ids (batch, L), from empty
  /// sequences, ordered on `stream`.
  void forward(TensorView<const std::int64_t, 2> ids, TensorView<float, 3> logits,
               cudaStream_t stream) const {
    Cache cache = make_cache(std::max<Index>(1, ids.size(0)), stream);
    prefill(ids, cache, 0, logits);
    SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the cache's memory goes
  }

  /// Continues sequences [first, first + batch) of `cache` with host ids (batch, L), L >= 1:
  /// their states advance, and logits()/next_ids() rows get each one's next token. `all_logits`
  /// (batch, L, vocab, device, evenly spaced rows), when given, receives every position's.
  void prefill(TensorView<const std::int64_t, 2> ids, Cache& cache, Index first = 0,
               TensorView<float, 3> all_logits = {}) const {
    cuda::check_current_device(device_, "MambaLM");
    const Index batch = ids.size(0), L = ids.size(1), dm = c_.d_model(), V = c_.vocab_size;
    SSMKIT_CHECK(L >= 1, "ids", "length size(1)", ">= 1", L);
    SSMKIT_CHECK(first >= 0 && first + batch <= cache.batch(), "first", "sequence range",
                 "inside the cache's " + std::to_string(cache.batch()) + " sequences",
                 "[" + std::to_string(first) + ", " + std::to_string(first + batch) + ")");
    if (!all_logits.absent()) {
      check_device(all_logits, "logits", Device::CUDA);
      check_shape(all_logits, "logits", {batch, L, V});
      SSMKIT_CHECK(all_logits.stride(2) == 1 &&
                       (batch <= 1 || all_logits.stride(0) == L * all_logits.stride(1)),
                   "logits", "strides", "contiguous vocab, evenly spaced sequences", "other");
    }
    const std::vector<std::int64_t> flat = checked_ids(ids);
    const Index tokens = batch * L;
    cudaStream_t s = cache.stream_;
    cache.reserve_prefill(tokens, dm);
    cache.ids_.copy_from_host_async(flat.data(), tokens, s);
    float* residual = cache.p_residual_.data();
    cuda::embedding<T>(vec(cache.ids_.data(), tokens), embedding_.view(), mat(residual, tokens, dm),
                       s);
    for (Index i = 0; i < c_.n_layer; ++i)
      blocks_[static_cast<std::size_t>(i)].forward(
          seq(residual, batch, L), seq(residual, batch, L), cache.prefill_ws_, s,
          cache.layers_[static_cast<std::size_t>(i)].view(first, batch), true, norm(i));
    float* logits = cache.logits_.data() + first * V;
    cuda::LinearWorkspace& lin = cache.prefill_ws_.linear();
    if (!all_logits.absent()) {
      const auto rows = TensorView<float, 2>::unchecked(all_logits.data(), {tokens, V},
                                                        {all_logits.stride(1), 1}, Device::CUDA);
      cuda::linear<T>(lin, cmat(residual, tokens, dm), head(), {}, rows, s, false, norm_f());
      SSMKIT_CUDA_CHECK(cudaMemcpy2DAsync(logits, sizeof(float) * V,
                                          all_logits.data() + (L - 1) * all_logits.stride(1),
                                          sizeof(float) * (batch <= 1 ? V : all_logits.stride(0)),
                                          sizeof(float) * V, batch, cudaMemcpyDeviceToDevice, s));
    } else {
      // Only the last position of each sequence: rows L-1, 2L-1, ... of the residual.
      const auto last = TensorView<const float, 2>::unchecked(residual + (L - 1) * dm, {batch, dm},
                                                              {L * dm, 1}, Device::CUDA);
      cuda::linear<T>(lin, last, head(), {}, mat(logits, batch, V), s, false, norm_f());
    }
    cuda::argmax(cmat(logits, batch, V), vec(cache.next_.data() + first, batch), s);
  }

  /// One token per sequence of the cache: host ids (cache.batch()). States advance; logits()
  /// and next_ids() hold the token after.
  void step(TensorView<const std::int64_t, 1> ids, Cache& cache) const {
    cuda::check_current_device(device_, "MambaLM");
    check_shape(ids, "ids", {cache.batch()});
    const std::vector<std::int64_t> flat = checked_ids(TensorView<const std::int64_t, 2>::unchecked(
        ids.data(), {cache.batch(), 1}, {ids.stride(0), 1}, ids.device()));
    cache.next_.copy_from_host_async(flat.data(), cache.batch(), cache.stream_);
    decode(cache);
  }

  /// One token per sequence, each the argmax the last call left in next_ids(): a greedy step
  /// that never leaves the device. With `graph`, the step is captured in a CUDA graph on first
  /// use (the cache's stream must then be a created stream) and replayed after.
  void step_greedy(Cache& cache, bool graph = true) const {
    cuda::check_current_device(device_, "MambaLM");
    if (!graph) {
      decode(cache);
      return;
    }
    if (cache.graph_.empty()) {
      SSMKIT_CHECK(cache.stream_ != nullptr && cache.stream_ != cudaStreamLegacy &&
                       cache.stream_ != cudaStreamPerThread,
                   "cache stream", "kind", "a created stream (for graph capture)",
                   "the default stream");
      cache.graph_.capture(cache.stream_, [&] { decode(cache); });
    }
    cache.graph_.launch(cache.stream_);
  }

 private:
  /// The step after next_ids(): embedding, layers, final norm, head, argmax.
  void decode(Cache& cache) const {
    const Index batch = cache.batch(), dm = c_.d_model();
    cudaStream_t s = cache.stream_;
    float* residual = cache.residual_.data();
    cuda::embedding<T>(cache.next_ids(), embedding_.view(), mat(residual, batch, dm), s);
    for (Index i = 0; i < c_.n_layer; ++i)
      blocks_[static_cast<std::size_t>(i)].step(cmat(residual, batch, dm), mat(residual, batch, dm),
                                                cache.layers_[static_cast<std::size_t>(i)].view(),
                                                cache.step_ws_, s, true, norm(i));
    cuda::linear<T>(cache.step_ws_.linear(), cmat(residual, batch, dm), head(), {},
                    mat(cache.logits_.data(), batch, c_.vocab_size), s, false, norm_f());
    cuda::argmax(cache.logits(), vec(cache.next_.data(), batch), s);
  }

  /// The ids, checked against the vocabulary, as one contiguous row-major array.
  std::vector<std::int64_t> checked_ids(const TensorView<const std::int64_t, 2>& ids) const {
    check_device(ids, "ids", Device::CPU);
    std::vector<std::int64_t> flat;
    flat.reserve(static_cast<std::size_t>(ids.size(0) * ids.size(1)));
    for (Index b = 0; b < ids.size(0); ++b)
      for (Index t = 0; t < ids.size(1); ++t) {
        SSMKIT_CHECK(ids(b, t) >= 0 && ids(b, t) < c_.vocab_size, "ids",
                     ("element (" + std::to_string(b) + ", " + std::to_string(t) + ")").c_str(),
                     "in [0, vocab_size = " + std::to_string(c_.vocab_size) + ")", ids(b, t));
        flat.push_back(ids(b, t));
      }
    return flat;
  }

  static cuda::DeviceBuffer<float> upload(const HostTensor<float, 1>& t, const char* name) {
    return cuda::upload_vector(t.data(), t.numel(), name);
  }
  /// Layer i's pre-norm and the final norm, fused into the products that follow them.
  cuda::RowNorm norm(Index i) const {
    return {cuda::vector_view(norms_[static_cast<std::size_t>(i)]), c_.norm_eps};
  }
  cuda::RowNorm norm_f() const { return {cuda::vector_view(norm_f_), c_.norm_eps}; }
  TensorView<const T, 2> head() const {
    return c_.tie_embeddings ? embedding_.view() : lm_head_.view();
  }
  static TensorView<float, 2> mat(float* p, Index r, Index c) {
    return TensorView<float, 2>::unchecked(p, {r, c}, {c, 1}, Device::CUDA);
  }
  static TensorView<const float, 2> cmat(const float* p, Index r, Index c) {
    return TensorView<const float, 2>::unchecked(p, {r, c}, {c, 1}, Device::CUDA);
  }
  template <class E>
  static TensorView<E, 1> vec(E* p, Index n) {
    return TensorView<E, 1>::unchecked(p, {n}, {1}, Device::CUDA);
  }
  TensorView<float, 3> seq(float* p, Index batch, Index L) const {
    const Index dm = c_.d_model();
    return TensorView<float, 3>::unchecked(p, {batch, L, dm}, {L * dm, dm, 1}, Device::CUDA);
  }

  MambaLMConfig c_;
  cuda::CudaOptions options_;
  int device_;  // where the weights live
  cuda::DeviceMatrix<T> embedding_;
  cuda::DeviceMatrix<T> lm_head_;  // empty when tied to the embedding
  cuda::DeviceBuffer<float> norm_f_;
  std::vector<cuda::DeviceBuffer<float>> norms_;
  std::vector<Block> blocks_;
};

/// nn::generate for the GPU model: the prompts' continuations of up to max_new_tokens tokens
/// each, ended by SamplingConfig::stop_token_ids as on the CPU, with timings. Greedy decoding
/// stays on the device (argmax there, a CUDA graph per step when `graph`; an ended slot is fed
/// its argmax, which is not recorded); sampled decoding copies each step's logits to the host
/// for nn::Sampler, which still draws for ended slots (fed their last token), so each sequence's
/// tokens are a prefix of what it gets without stop ids.
template <class T>
GenerationResult generate(const MambaLM<T, Cuda>& model,
                          const std::vector<std::vector<std::int64_t>>& prompts,
                          Index max_new_tokens, const SamplingConfig& sampling, cudaStream_t stream,
                          bool graph = true, const std::function<void(Index)>& on_token = {}) {
  using Clock = std::chrono::steady_clock;
  const Index batch = static_cast<Index>(prompts.size());
  SSMKIT_CHECK(batch >= 1, "prompts", "count", ">= 1", batch);
  SSMKIT_CHECK(max_new_tokens >= 0, "max_new_tokens", "value", ">= 0", max_new_tokens);
  for (std::size_t b = 0; b < prompts.size(); ++b)
    SSMKIT_CHECK(!prompts[b].empty(), "prompts[" + std::to_string(b) + "]", "length", ">= 1", 0);
  Sampler sampler(sampling);
  detail::StopTracker stops(sampling.stop_token_ids, batch, model.vocab_size());
  const bool greedy = sampling.temperature == 0;
  GenerationResult r;
  r.tokens.resize(prompts.size());
  auto cache = model.make_cache(batch, stream);

  const auto t0 = Clock::now();
  const bool same_length = std::all_of(
      prompts.begin(), prompts.end(), [&](const auto& p) { return p.size() == prompts[0].size(); });
  if (same_length) {
    const Index L = static_cast<Index>(prompts[0].size());
    std::vector<std::int64_t> ids;
    for (const auto& p : prompts)
      ids.insert(ids.end(), p.begin(), p.end());
    model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {batch, L}, "ids"), cache);
  } else {
    for (Index b = 0; b < batch; ++b) {
      const auto& p = prompts[static_cast<std::size_t>(b)];
      model.prefill(
          TensorView<const std::int64_t, 2>(p.data(), {1, static_cast<Index>(p.size())}, "ids"),
          cache, b);
    }
  }
  for (const auto& p : prompts)
    r.prefill_tokens += static_cast<Index>(p.size());
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto t1 = Clock::now();

  const Index V = model.vocab_size();
  std::vector<float> logits(greedy ? 0 : static_cast<std::size_t>(batch * V));
  std::vector<std::int64_t> next(static_cast<std::size_t>(batch));
  for (Index i = 0; i < max_new_tokens; ++i) {
    if (greedy) {
      next = cache.next_ids_host();  // ended slots' ids are not recorded
    } else {
      SSMKIT_CUDA_CHECK(cudaMemcpyAsync(logits.data(), cache.logits().data(),
                                        sizeof(float) * logits.size(), cudaMemcpyDeviceToHost,
                                        stream));
      SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (Index b = 0; b < batch; ++b) {
        const Index token =
            sampler(TensorView<const float, 1>(logits.data() + b * V, {V}, "logits"));
        if (!stops.ended(b))  // an ended slot is fed its last token again
          next[static_cast<std::size_t>(b)] = token;
      }
    }
    stops.append(next, r.tokens);
    if (on_token)
      on_token(i);
    if (i + 1 == max_new_tokens || stops.all_ended())
      break;
    if (greedy)
      model.step_greedy(cache, graph);
    else
      model.step(TensorView<const std::int64_t, 1>(next.data(), {batch}, "ids"), cache);
    r.decode_tokens += batch;
  }
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto t2 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  r.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  return r;
}

}  // namespace ssmkit::nn
