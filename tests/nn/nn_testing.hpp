// Shared by the nn tests: golden-file paths, loading MambaMixer goldens into block weights,
// poisoning outputs before a module writes them, and generate()'s stop ids checked on either
// backend.
#pragma once

#include "testing.hpp"

#include <ssmkit/io/safetensors.hpp>
#include <ssmkit/nn/mamba_block.hpp>
#include <ssmkit/nn/sampling.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace ssmkit::testing {

inline std::string mamba_data(const std::string& name) {
  return std::string(SSMKIT_TEST_DATA_DIR) + "/mamba/" + name;
}

template <class T, int Rank>
void poison(HostTensor<T, Rank>& t) {
  t.fill(std::numeric_limits<T>::quiet_NaN());
}

/// A MambaMixer golden (tools/make_mamba_goldens.py): the block's weights in T, its config
/// inferred from the weight shapes, and the input and output in double.
template <class T>
struct MixerGolden {
  nn::MambaBlockConfig config;
  nn::MambaBlockWeights<T> weights;
  HostTensor<double, 3> x, out;

  explicit MixerGolden(const std::string& name) {
    const auto f = io::SafetensorsFile::open(mamba_data("mixer_" + name + ".safetensors"));
    auto& w = weights;
    w.in_proj_weight = f.read_as<T, 2>("in_proj.weight");
    w.x_proj_weight = f.read_as<T, 2>("x_proj.weight");
    w.dt_proj_weight = f.read_as<T, 2>("dt_proj.weight");
    w.dt_proj_bias = f.read_as<T, 1>("dt_proj.bias");
    w.A_log = f.read_as<T, 2>("A_log");
    w.D = f.read_as<T, 1>("D");
    w.out_proj_weight = f.read_as<T, 2>("out_proj.weight");
    const auto conv = f.read_as<T, 3>("conv1d.weight");  // (d_inner, 1, d_conv)
    w.conv1d_weight = HostTensor<T, 2>({conv.size(0), conv.size(2)});
    std::copy(conv.data(), conv.data() + conv.numel(), w.conv1d_weight.data());
    if (f.contains("conv1d.bias"))
      w.conv1d_bias = f.read_as<T, 1>("conv1d.bias");
    if (f.contains("in_proj.bias"))
      w.in_proj_bias = f.read_as<T, 1>("in_proj.bias");
    if (f.contains("out_proj.bias"))
      w.out_proj_bias = f.read_as<T, 1>("out_proj.bias");
    config.d_model = w.in_proj_weight.size(1);
    config.d_inner = w.A_log.size(0);
    config.d_state = w.A_log.size(1);
    config.d_conv = w.conv1d_weight.size(1);
    config.dt_rank = w.dt_proj_weight.size(1);
    x = f.read_as<double, 3>("x");
    out = f.read_as<double, 3>("out");
  }

  nn::MambaBlockWeights<T> copy_weights() const {
    const auto& w = weights;
    return {w.in_proj_weight.clone(),  w.in_proj_bias.clone(),  w.conv1d_weight.clone(),
            w.conv1d_bias.clone(),     w.x_proj_weight.clone(), w.dt_proj_weight.clone(),
            w.dt_proj_bias.clone(),    w.A_log.clone(),         w.D.clone(),
            w.out_proj_weight.clone(), w.out_proj_bias.clone()};
  }
};

template <class T, int Rank>
HostTensor<T, Rank> cast(const HostTensor<double, Rank>& t) {
  HostTensor<T, Rank> out(t.shape());
  for (Index i = 0; i < t.numel(); ++i)
    out.data()[i] = static_cast<T>(t.data()[i]);
  return out;
}

/// A golden LM checkpoint's ids, transformers' greedy continuation and its logits.
struct LMGolden {
  HostTensor<std::int64_t, 2> input_ids, greedy;
  HostTensor<float, 3> logits;

  explicit LMGolden(const std::string& name) {
    const auto f = io::SafetensorsFile::open(mamba_data(name + "/golden.safetensors"));
    input_ids = f.read_as<std::int64_t, 2>("input_ids");
    greedy = f.read_as<std::int64_t, 2>("greedy");
    logits = f.read_as<float, 3>("logits");
  }

  /// The prompts, as generate() takes them.
  std::vector<std::vector<std::int64_t>> prompts() const {
    const Index Lp = input_ids.size(1);
    std::vector<std::vector<std::int64_t>> p(static_cast<std::size_t>(input_ids.size(0)));
    for (Index b = 0; b < input_ids.size(0); ++b)
      p[static_cast<std::size_t>(b)].assign(&input_ids(b, 0), &input_ids(b, 0) + Lp);
    return p;
  }
  /// Each sequence's greedy continuation (the prompt left out).
  std::vector<std::vector<std::int64_t>> continuations() const {
    const Index Lp = input_ids.size(1), L = greedy.size(1);
    std::vector<std::vector<std::int64_t>> c(static_cast<std::size_t>(greedy.size(0)));
    for (Index b = 0; b < greedy.size(0); ++b)
      c[static_cast<std::size_t>(b)].assign(&greedy(b, Lp), &greedy(b, 0) + L);
    return c;
  }
};

/// `tokens` up to and including the first of `stops`; all of them without one.
inline std::vector<std::int64_t> up_to_stop(std::vector<std::int64_t> tokens,
                                            const std::vector<std::int64_t>& stops) {
  const auto it = std::find_first_of(tokens.begin(), tokens.end(), stops.begin(), stops.end());
  if (it != tokens.end())
    tokens.erase(it + 1, tokens.end());
  return tokens;
}

using GenerateFn = std::function<nn::GenerationResult(
    Index max_new_tokens, const nn::SamplingConfig&, const std::function<void(Index)>& on_token)>;

/// generate() with stop ids against its tokens without them, `want` (two sequences of
/// max_new_tokens each): `generate` runs a model's generate() on the prompts `want` continues,
/// with `base`'s sampling. Stop ids are taken from `want` (not hard-coded, so any golden works):
/// sequence 0's 4th token alone, sequence 1's 7th alone, then both. Each sequence must be its
/// `want` up to and including the first stop id; the run must end with the last sequence to
/// end (on_token once per round, no step after the last round).
inline void check_stop_ids(const std::vector<std::vector<std::int64_t>>& want,
                           const nn::SamplingConfig& base, const GenerateFn& generate) {
  ASSERT_EQ(want.size(), 2u);
  const std::size_t n = want[0].size();
  ASSERT_GE(n, 8u);
  const std::int64_t a = want[0][3], b = want[1][6];
  for (const std::vector<std::int64_t>& stops : {std::vector<std::int64_t>{a}, {b}, {a, b}}) {
    SCOPED_TRACE("stop ids " + std::to_string(stops[0]) +
                 (stops.size() > 1 ? ", " + std::to_string(stops[1]) : ""));
    nn::SamplingConfig sampling = base;
    sampling.stop_token_ids = stops;
    Index rounds = 0;
    const nn::GenerationResult r = generate(static_cast<Index>(n), sampling, [&](Index i) {
      EXPECT_EQ(i, rounds);
      ++rounds;
    });
    ASSERT_EQ(r.tokens.size(), 2u);
    std::size_t longest = 0;
    for (std::size_t s = 0; s < 2; ++s) {
      EXPECT_EQ(r.tokens[s], up_to_stop(want[s], stops)) << "sequence " << s;
      longest = std::max(longest, r.tokens[s].size());
    }
    // The sequence the stop id came from ends by then; the other goes on, for these goldens
    // beyond it, so one slot steps on after its sequence ended.
    if (stops.size() == 1) {
      const std::size_t s = stops[0] == a ? 0 : 1;
      EXPECT_LE(r.tokens[s].size(), s == 0 ? 4u : 7u);
      EXPECT_GT(r.tokens[1 - s].size(), r.tokens[s].size());
    } else {
      EXPECT_LT(longest, n) << "both ended: generation should end before max_new_tokens";
    }
    EXPECT_EQ(rounds, static_cast<Index>(longest));
    EXPECT_EQ(r.decode_tokens, 2 * (static_cast<Index>(longest) - 1));
  }
}

}  // namespace ssmkit::testing
