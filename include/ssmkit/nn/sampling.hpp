// Next-token selection and the generation loop of a language model: greedy (argmax) or sampled
// from softmax(logits / temperature) restricted to the top-k tokens and then to the top-p
// nucleus (Holtzman et al., arXiv 1904.09751), in the order HF's warpers apply them.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/tensor_view.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iterator>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ssmkit::nn {

struct SamplingConfig {
  double temperature = 0;  ///< 0: greedy; else logits are divided by it before the softmax
  Index top_k = 0;         ///< keep the k most likely tokens (ties with the k-th kept); 0: all
  double top_p = 1;        ///< keep the most likely tokens until their mass reaches p; 1: all
  std::uint64_t seed = 0;  ///< seeds the sampler's generator: equal seeds, equal tokens
  /// generate() ends a sequence after it emits one of these, which is kept (as HF's
  /// eos_token_id), and ends when every sequence has ended; empty: every sequence gets
  /// max_new_tokens. (`{}`: aggregate initialisations that leave it out draw no warning.)
  std::vector<std::int64_t> stop_token_ids{};

  void validate() const {
    SSMKIT_CHECK(std::isfinite(temperature) && temperature >= 0, "temperature", "value",
                 "finite and >= 0", temperature);
    SSMKIT_CHECK(top_k >= 0, "top_k", "value", ">= 0", top_k);
    SSMKIT_CHECK(top_p > 0 && top_p <= 1, "top_p", "value", "in (0, 1]", top_p);
    for (std::size_t i = 0; i < stop_token_ids.size(); ++i)
      SSMKIT_CHECK(stop_token_ids[i] >= 0, "stop_token_ids",
                   ("element " + std::to_string(i)).c_str(), ">= 0", stop_token_ids[i]);
  }
};

/// Picks tokens from logits. Not thread-safe: it owns a random generator and scratch memory.
class Sampler {
 public:
  explicit Sampler(const SamplingConfig& config) : c_(config), rng_(config.seed) { c_.validate(); }

  /// The candidate tokens and their probabilities (summing to 1), most likely first: what
  /// operator() draws from. Greedy yields the single argmax with probability 1. Logits of +inf
  /// share all the probability equally; NaN logits are rejected.
  template <class T>
  std::vector<std::pair<Index, double>> distribution(TensorView<const T, 1> logits) {
    const Index V = logits.size(0);
    SSMKIT_CHECK(V >= 1, "logits", "size", ">= 1", V);
    check_device(logits, "logits", Device::CPU);
    for (Index i = 0; i < V; ++i)
      SSMKIT_CHECK(!std::isnan(static_cast<double>(logits(i))), "logits",
                   ("element " + std::to_string(i)).c_str(), "not NaN", "NaN");
    if (c_.temperature == 0) {
      Index best = 0;  // the first maximum, as torch.argmax
      for (Index i = 1; i < V; ++i)
        if (logits(i) > logits(best))
          best = i;
      return {{best, 1.0}};
    }
    order_.resize(static_cast<std::size_t>(V));
    std::iota(order_.begin(), order_.end(), Index{0});
    // Stable: equal logits keep id order, so the result does not depend on the sort's whims.
    std::stable_sort(order_.begin(), order_.end(),
                     [&](Index a, Index b) { return logits(a) > logits(b); });
    Index keep = V;
    if (c_.top_k > 0 && c_.top_k < V) {
      keep = c_.top_k;
      while (keep < V && logits(order_[keep]) == logits(order_[keep - 1]))
        ++keep;
    }
    // (logit − top) / temperature, never logit / temperature: a tiny temperature then sends the
    // others to −inf (weight 0) instead of overflowing them all to inf. Entries equal to the top
    // weigh 1, so +inf logits share the draw evenly (softmax's limit), as all −inf ones do.
    const double top = static_cast<double>(logits(order_[0]));
    std::vector<std::pair<Index, double>> out;
    out.reserve(static_cast<std::size_t>(keep));
    double sum = 0;
    for (Index i = 0; i < keep; ++i) {
      const double l = static_cast<double>(logits(order_[i]));
      const double e = l == top ? 1.0 : std::exp((l - top) / c_.temperature);
      out.emplace_back(order_[i], e);
      sum += e;
    }
    // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    std::size_t n = 0;
    while (n < out.size()) {
      mass += out[n++].second / sum;
      if (c_.top_p < 1 && mass >= c_.top_p)
        break;
    }
    out.resize(n);
    double kept = 0;
    for (const auto& kv : out)
      kept += kv.second;
    for (auto& kv : out)
      kv.second /= kept;
    return out;
  }

  /// The next token: the argmax when greedy, else a draw from distribution(logits).
  template <class T>
  Index operator()(TensorView<const T, 1> logits) {
    const auto dist = distribution(logits);
    if (dist.size() == 1)
      return dist[0].first;
    // 53 random bits: the same draw on every platform (std::uniform_real_distribution is not).
    return pick(dist, static_cast<double>(rng_() >> 11) * 0x1.0p-53);
  }

  /// The token of `dist` (probabilities summing to 1) whose cumulative interval holds u in
  /// [0, 1). Where rounding leaves the sum under u, the last token with any probability: never
  /// one of probability 0 (a -inf logit, a masked token).
  static Index pick(const std::vector<std::pair<Index, double>>& dist, double u) {
    double acc = 0;
    for (const auto& [token, p] : dist) {
      acc += p;
      if (u < acc)
        return token;
    }
    auto last = dist.rbegin();
    while (last->second == 0 && std::next(last) != dist.rend())
      ++last;
    return last->first;
  }

 private:
  SamplingConfig c_;
  std::mt19937_64 rng_;
  std::vector<Index> order_;
};

struct GenerationResult {
  /// Per sequence, the new tokens only: max_new_tokens of them, or fewer ending with the stop
  /// token (SamplingConfig::stop_token_ids) that ended it.
  std::vector<std::vector<std::int64_t>> tokens;
  /// prefill_tokens: the prompts' tokens. decode_tokens: those fed through model steps, the
  /// batch's size per step, ended sequences' slots included (they are computed all the same).
  /// n rounds of new tokens take n - 1 steps (the prefill gives the first), so generation that
  /// stops early counts only the steps it ran.
  Index prefill_tokens = 0, decode_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

namespace detail {

/// generate()'s end-of-sequence bookkeeping, shared by its CPU and GPU loops: which sequences
/// have emitted one of the stop ids (checked against the vocabulary), and their tokens.
class StopTracker {
 public:
  StopTracker(const std::vector<std::int64_t>& stop_ids, Index batch, Index vocab)
      : stop_(stop_ids), ended_(static_cast<std::size_t>(batch), false), live_(batch) {
    for (std::size_t i = 0; i < stop_.size(); ++i)
      SSMKIT_CHECK(stop_[i] >= 0 && stop_[i] < vocab, "stop_token_ids",
                   ("element " + std::to_string(i)).c_str(),
                   "in [0, vocab_size = " + std::to_string(vocab) + ")", stop_[i]);
  }

  bool ended(Index b) const { return ended_[static_cast<std::size_t>(b)]; }
  bool all_ended() const { return live_ == 0; }

  /// Appends next[b] to tokens[b] for each sequence b not yet ended; a stop id ends it.
  void append(const std::vector<std::int64_t>& next,
              std::vector<std::vector<std::int64_t>>& tokens) {
    for (std::size_t b = 0; b < ended_.size(); ++b) {
      if (ended_[b])
        continue;
      tokens[b].push_back(next[b]);
      if (std::find(stop_.begin(), stop_.end(), next[b]) != stop_.end()) {
        ended_[b] = true;
        --live_;
      }
    }
  }

 private:
  std::vector<std::int64_t> stop_;
  std::vector<bool> ended_;
  Index live_;
};

}  // namespace detail

/// Continues each prompt by up to `max_new_tokens` tokens. `Model` is a language model with
/// make_cache(batch), prefill(ids, cache, first), step(ids, cache) and vocab_size() (as
/// MambaLM): prompts are prefilled (together when their lengths agree, else one by one into
/// their cache slots), then every sequence advances one token per step. A sequence that emits a
/// stop id (SamplingConfig::stop_token_ids) records no more tokens; its slot keeps stepping on
/// its last token until every sequence has ended, when generation stops. Ended slots still draw
/// from the sampler, so each sequence's tokens are a prefix of what it gets without stop ids.
/// `on_token(i)` runs after the i-th new token of every sequence still going is chosen.
template <class Model>
GenerationResult generate(const Model& model, const std::vector<std::vector<std::int64_t>>& prompts,
                          Index max_new_tokens, const SamplingConfig& sampling,
                          const std::function<void(Index)>& on_token = {}) {
  using Clock = std::chrono::steady_clock;
  const Index batch = static_cast<Index>(prompts.size());
  SSMKIT_CHECK(batch >= 1, "prompts", "count", ">= 1", batch);
  SSMKIT_CHECK(max_new_tokens >= 0, "max_new_tokens", "value", ">= 0", max_new_tokens);
  for (std::size_t b = 0; b < prompts.size(); ++b)
    SSMKIT_CHECK(!prompts[b].empty(), "prompts[" + std::to_string(b) + "]", "length", ">= 1", 0);
  Sampler sampler(sampling);
  detail::StopTracker stops(sampling.stop_token_ids, batch, model.vocab_size());
  GenerationResult r;
  r.tokens.resize(prompts.size());
  auto cache = model.make_cache(batch);

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
  const auto t1 = Clock::now();

  std::vector<std::int64_t> next(static_cast<std::size_t>(batch));
  for (Index i = 0; i < max_new_tokens; ++i) {
    const auto logits = cache.logits();
    for (Index b = 0; b < batch; ++b) {
      const Index token = sampler(logits[b]);
      if (!stops.ended(b))  // an ended slot is fed its last token again
        next[static_cast<std::size_t>(b)] = token;
    }
    stops.append(next, r.tokens);
    if (on_token)
      on_token(i);
    if (i + 1 == max_new_tokens || stops.all_ended())
      break;
    model.step(TensorView<const std::int64_t, 1>(next.data(), {batch}, "ids"), cache);
    r.decode_tokens += batch;
  }
  const auto t2 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  r.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  return r;
}

}  // namespace ssmkit::nn
