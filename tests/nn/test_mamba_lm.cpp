// MambaLM: logits and greedy continuations against transformers' MambaForCausalLM goldens, cached
// decoding against full recomputation, batches of unequal prompts, stop ids, and argument checks.
#include "nn_testing.hpp"

#include <ssmkit/nn/mamba_lm.hpp>
#include <ssmkit/nn/sampling.hpp>

#include <filesystem>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

class MambaLMGolden : public ::testing::TestWithParam<const char*> {};

template <class T>
void check_logits(const std::string& name) {
  const auto model = nn::MambaLM<T>::from_pretrained(mamba_data(name));
  const LMGolden g(name);
  HostTensor<T, 3> logits(g.logits.shape());
  poison(logits);
  model.forward(g.input_ids.view(), logits.view());
  // The golden is transformers in float64 with a few float32 intermediates, stored as float32:
  // measured 0.9-1.1e-7 in double and 2.5-4.9e-7 in float (AVX-512, AVX2 and portable paths).
  EXPECT_LE(rel_error(logits.data(), g.logits.data(), logits.numel()), 1e-5) << name;
}

TEST_P(MambaLMGolden, LogitsMatchTransformersFloat) {
  check_logits<float>(GetParam());
}
TEST_P(MambaLMGolden, LogitsMatchTransformersDouble) {
  check_logits<double>(GetParam());
}

TEST_P(MambaLMGolden, GreedyContinuationMatchesTransformers) {
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data(GetParam()));
  const LMGolden g(GetParam());
  const Index batch = g.input_ids.size(0), Lp = g.input_ids.size(1);
  const Index new_tokens = g.greedy.size(1) - Lp;
  std::vector<std::vector<std::int64_t>> prompts(static_cast<std::size_t>(batch));
  for (Index b = 0; b < batch; ++b)
    prompts[b].assign(&g.input_ids(b, 0), &g.input_ids(b, 0) + Lp);
  const auto r = nn::generate(model, prompts, new_tokens, {});
  for (Index b = 0; b < batch; ++b) {
    const std::vector<std::int64_t> want(&g.greedy(b, Lp), &g.greedy(b, Lp) + new_tokens);
    EXPECT_EQ(r.tokens[b], want) << "sequence " << b;
  }
}

TEST_P(MambaLMGolden, GreedyStopsAtStopIdsAsTransformersContinues) {
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data(GetParam()));
  const LMGolden g(GetParam());
  check_stop_ids(
      g.continuations(), {},
      [&](Index n, const nn::SamplingConfig& sampling, const std::function<void(Index)>& on_token) {
        return nn::generate(model, g.prompts(), n, sampling, on_token);
      });
}

INSTANTIATE_TEST_SUITE_P(Configs, MambaLMGolden,
                         ::testing::Values("tiny_tied", "tiny_untied_bias", "tiny_n64",
                                           "tiny_inner"));

TEST(MambaLM, CachedDecodeEqualsFullRecomputeAtEveryStep) {
  // Sampled tokens (not greedy ones) drive the decode, so every step sees a fresh context.
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data("tiny_untied_bias"));
  const Index V = model.vocab_size(), batch = 2, Lp = 5, steps = 12;
  std::vector<std::int64_t> seqs[2] = {{3, 141, 59, 26, 5}, {271, 82, 8, 18, 28}};
  auto cache = model.make_cache(batch);
  std::vector<std::int64_t> ids;
  for (auto& s : seqs)
    ids.insert(ids.end(), s.begin(), s.end());
  model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {batch, Lp}), cache);
  nn::Sampler sampler({1.0, 0, 1.0, 99});
  for (Index i = 0; i <= steps; ++i) {
    const Index L = Lp + i;
    std::vector<std::int64_t> all;
    for (auto& s : seqs)
      all.insert(all.end(), s.begin(), s.end());
    HostTensor<float, 3> full({batch, L, V});
    poison(full);
    model.forward(TensorView<const std::int64_t, 2>(all.data(), {batch, L}), full.view());
    for (Index b = 0; b < batch; ++b)
      EXPECT_LE(rel_error(cache.logits()[b].data(), &full(b, L - 1, 0), V), 1e-5)
          << "sequence " << b << " after " << L << " tokens";
    std::vector<std::int64_t> next;
    for (Index b = 0; b < batch; ++b) {
      next.push_back(sampler(cache.logits()[b]));
      seqs[b].push_back(next.back());
    }
    model.step(TensorView<const std::int64_t, 1>(next.data(), {batch}), cache);
  }
}

TEST(MambaLM, UnequalPromptsInOneBatchDecodeAsIfAlone) {
  const auto model = nn::MambaLM<double>::from_pretrained(mamba_data("tiny_n64"));
  const std::vector<std::vector<std::int64_t>> prompts = {{5, 6, 7}, {100}, {9, 8, 7, 6, 5, 4, 3}};
  const nn::SamplingConfig sampling{0.9, 40, 0.95, 7};
  const auto together = nn::generate(model, prompts, 10, {});
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto alone = nn::generate(model, {prompts[b]}, 10, {});
    EXPECT_EQ(together.tokens[b], alone.tokens[0]) << "sequence " << b;
  }
  // Sampling with a seed is reproducible.
  EXPECT_EQ(nn::generate(model, prompts, 10, sampling).tokens,
            nn::generate(model, prompts, 10, sampling).tokens);
}

TEST(MambaLM, SampledStopsArePrefixesOfTheRunWithoutStopIds) {
  // Ended slots still draw from the sampler, so the other sequence's draws do not move.
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data("tiny_untied_bias"));
  const auto prompts = LMGolden("tiny_untied_bias").prompts();
  const nn::SamplingConfig sampling{1.2, 50, 0.95, 11};
  check_stop_ids(
      nn::generate(model, prompts, 16, sampling).tokens, sampling,
      [&](Index n, const nn::SamplingConfig& s, const std::function<void(Index)>& on_token) {
        return nn::generate(model, prompts, n, s, on_token);
      });
}

TEST(MambaLM, AllPositionLogitsOfAChunkedPrefill) {
  // Two prefill calls of 7 and 5 tokens give the logits of one 12-token forward.
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data("tiny_tied"));
  const LMGolden g("tiny_tied");
  const Index batch = g.input_ids.size(0), L = g.input_ids.size(1), V = model.vocab_size();
  auto cache = model.make_cache(batch);
  HostTensor<float, 3> logits({batch, L, V});
  poison(logits);
  for (auto [t0, n] : {std::pair<Index, Index>{0, 7}, {7, 5}}) {
    const auto ids = TensorView<const std::int64_t, 2>(&g.input_ids(0, t0), {batch, n}, {L, 1});
    const auto out = TensorView<float, 3>(&logits(0, t0, 0), {batch, n, V}, {L * V, V, 1});
    model.prefill(ids, cache, 0, out);
  }
  // Measured 4.7-4.9e-7, as the one-pass float forward.
  EXPECT_LE(rel_error(logits.data(), g.logits.data(), logits.numel()), 1e-5);
}

TEST(MambaLM, RejectsBadInputs) {
  const auto model = nn::MambaLM<float>::from_pretrained(mamba_data("tiny_tied"));
  const Index V = model.vocab_size();
  std::vector<std::int64_t> ids = {1, 2, V, 3};
  HostTensor<float, 3> logits({1, 4, V});
  SSMKIT_EXPECT_ERROR(
      model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}), logits.view()), "ids",
      "element (0, 2)", "vocab_size");
  ids[2] = -1;
  SSMKIT_EXPECT_ERROR(
      model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}), logits.view()), "ids",
      "element (0, 2)");
  ids[2] = 4;
  HostTensor<float, 3> wrong({1, 4, V - 1});
  SSMKIT_EXPECT_ERROR(
      model.forward(TensorView<const std::int64_t, 2>(ids.data(), {1, 4}), wrong.view()), "logits",
      "shape");
  auto cache = model.make_cache(2);
  SSMKIT_EXPECT_ERROR(
      model.prefill(TensorView<const std::int64_t, 2>(ids.data(), {2, 2}), cache, 1), "first");
  SSMKIT_EXPECT_ERROR(model.step(TensorView<const std::int64_t, 1>(ids.data(), {3}), cache), "ids",
                      "shape");
  SSMKIT_EXPECT_ERROR(nn::MambaLM<float>::from_pretrained(mamba_data("no_such_model")),
                      "no_such_model");
  SSMKIT_EXPECT_ERROR(nn::generate(model, {{}}, 3, {}), "prompts[0]");
  nn::SamplingConfig stop;
  stop.stop_token_ids = {3, -1};
  SSMKIT_EXPECT_ERROR(nn::generate(model, {{1}}, 3, stop), "stop_token_ids", "element 1", ">= 0");
  stop.stop_token_ids = {V, 3};
  SSMKIT_EXPECT_ERROR(nn::generate(model, {{1}}, 3, stop), "stop_token_ids", "element 0",
                      "vocab_size = 300");
}

}  // namespace
