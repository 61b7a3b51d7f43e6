// nn::Sampler: greedy argmax, temperature, top-k and top-p supports and probabilities against an
// independent computation, seeded reproducibility, draw frequencies, and argument checks (stop
// ids included).
#include "nn_testing.hpp"

#include <ssmkit/nn/sampling.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

using namespace ssmkit;
using namespace ssmkit::testing;

namespace {

/// softmax(logits / temperature) in double, then the tokens sorted by decreasing probability.
std::vector<std::pair<Index, double>> sorted_softmax(const std::vector<float>& logits,
                                                     double temp) {
  double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<Index, double>> p;
  double s = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p.emplace_back(static_cast<Index>(i), std::exp((logits[i] - mx) / temp));
    s += p.back().second;
  }
  for (auto& kv : p)
    kv.second /= s;
  std::stable_sort(p.begin(), p.end(), [](auto& a, auto& b) { return a.second > b.second; });
  return p;
}

void expect_same_distribution(const std::vector<std::pair<Index, double>>& got,
                              const std::vector<std::pair<Index, double>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first) << i;
    EXPECT_NEAR(got[i].second, want[i].second, 1e-12) << i;
  }
}

std::vector<std::pair<Index, double>> renormalised(std::vector<std::pair<Index, double>> p,
                                                   std::size_t n) {
  p.resize(n);
  double s = 0;
  for (auto& kv : p)
    s += kv.second;
  for (auto& kv : p)
    kv.second /= s;
  return p;
}

TEST(Sampler, GreedyIsTheFirstArgmax) {
  auto logits = random_vector<float>(300, 1, -5, 5);
  logits[17] = 9;
  logits[123] = 9;
  nn::Sampler s({});
  const TensorView<const float, 1> v(logits.data(), {300});
  EXPECT_EQ(s(v), 17);
  const auto d = s.distribution(v);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].first, 17);
}

TEST(Sampler, TemperatureTopKTopPDistributions) {
  const auto logits = random_vector<float>(64, 2, -3, 3);
  const TensorView<const float, 1> v(logits.data(), {64});
  for (double temp : {0.5, 1.0, 1.7}) {
    const auto full = sorted_softmax(logits, temp);
    {
      nn::Sampler s({temp, 0, 1.0, 3});
      expect_same_distribution(s.distribution(v), full);
    }
    {
      nn::Sampler s({temp, 7, 1.0, 3});
      expect_same_distribution(s.distribution(v), renormalised(full, 7));
    }
    for (double p : {0.3, 0.75, 0.95}) {
      // Top-p applies to the top-k-renormalised distribution, as HF's warpers do in order.
      for (Index k : {Index{0}, Index{20}}) {
        const auto base = k ? renormalised(full, static_cast<std::size_t>(k)) : full;
        std::size_t n = 0;
        double mass = 0;
        while (n < base.size() && mass < p)
          mass += base[n++].second;
        nn::Sampler s({temp, k, p, 3});
        const auto got = s.distribution(v);
        expect_same_distribution(got, renormalised(base, n));
        EXPECT_GE(n, 1u);
      }
    }
  }
}

TEST(Sampler, TopKKeepsTiesWithTheKthToken) {
  std::vector<float> logits = {1, 4, 3, 3, 3, 0, 2};
  nn::Sampler s({1.0, 2, 1.0, 0});
  const auto d = s.distribution(TensorView<const float, 1>(logits.data(), {7}));
  ASSERT_EQ(d.size(), 4u);  // 4, then the three 3s
  EXPECT_EQ(d[0].first, 1);
  EXPECT_EQ(d[1].first, 2);
  EXPECT_EQ(d[2].first, 3);
  EXPECT_EQ(d[3].first, 4);
}

TEST(Sampler, DrawsStayInTheSupportWithTheRightFrequencies) {
  const auto logits = random_vector<float>(40, 4, -2, 2);
  const TensorView<const float, 1> v(logits.data(), {40});
  nn::Sampler s({0.8, 10, 0.9, 1234});
  const auto d = s.distribution(v);
  std::map<Index, double> p(d.begin(), d.end());
  const int draws = 40000;
  std::map<Index, int> count;
  for (int i = 0; i < draws; ++i) {
    const Index t = s(v);
    ASSERT_TRUE(p.count(t)) << "token " << t << " is outside the top-k/top-p support";
    ++count[t];
  }
  for (const auto& [t, prob] : p) {
    const double sigma = std::sqrt(prob * (1 - prob) / draws);
    EXPECT_NEAR(count[t] / double(draws), prob, 5 * sigma + 1e-9) << "token " << t;
  }
}

// Seven tokens of 1/7 sum to 1 - 2^-52 in double, under the largest draw 1 - 2^-53; the tokens
// after them have probability 0 (masked by a -inf logit, or underflowed). The draw used to fall
// back to the very last token, one of probability 0.
TEST(Sampler, ADrawPastTheRoundedSumTakesNoZeroProbabilityToken) {
  std::vector<std::pair<Index, double>> dist;
  for (Index t = 0; t < 7; ++t)
    dist.emplace_back(t, 1.0 / 7);
  dist.emplace_back(98, 0.0);
  dist.emplace_back(99, 0.0);
  double sum = 0;
  for (const auto& kv : dist)
    sum += kv.second;
  const double largest = 1 - 0x1.0p-53;
  ASSERT_LT(sum, largest);  // the case: rounding leaves the sum under the draw
  EXPECT_EQ(nn::Sampler::pick(dist, largest), 6);
  EXPECT_EQ(nn::Sampler::pick(dist, 0.1), 0);
  EXPECT_EQ(nn::Sampler::pick(dist, 0.9), 6);
}

TEST(Sampler, SeedMakesDrawsReproducible) {
  const auto logits = random_vector<float>(100, 5, -1, 1);
  const TensorView<const float, 1> v(logits.data(), {100});
  auto draws = [&](std::uint64_t seed) {
    nn::Sampler s({1.0, 0, 1.0, seed});
    std::vector<Index> out;
    for (int i = 0; i < 200; ++i)
      out.push_back(s(v));
    return out;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
}

// +inf logits (a forced token) share the probability evenly, whatever the temperature; a
// temperature so small that logit / temperature overflows still picks the argmax.
TEST(Sampler, InfiniteLogitsAndTinyTemperatures) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> forced = {5, inf, 1, -3, inf, -inf};
  const TensorView<const float, 1> v(forced.data(), {6});
  for (double temp : {0.5, 1e-310}) {
    nn::Sampler s({temp, 0, 1.0, 9});
    const auto d = s.distribution(v);
    ASSERT_EQ(d.size(), 6u);
    EXPECT_EQ(d[0], (std::pair<Index, double>{1, 0.5}));
    EXPECT_EQ(d[1], (std::pair<Index, double>{4, 0.5}));
    for (std::size_t i = 2; i < d.size(); ++i)
      EXPECT_EQ(d[i].second, 0.0) << "token " << d[i].first;
    std::map<Index, int> count;
    for (int i = 0; i < 2000; ++i)
      ++count[s(v)];
    EXPECT_EQ(count[1] + count[4], 2000);
    EXPECT_NEAR(count[1] / 2000.0, 0.5, 5 * std::sqrt(0.25 / 2000));
  }
  nn::Sampler top2({1.0, 2, 0.3, 0});
  expect_same_distribution(top2.distribution(v), {{1, 1.0}});
  std::vector<float> masked(4, -inf);
  nn::Sampler all({1.0, 0, 1.0, 0});
  expect_same_distribution(all.distribution(TensorView<const float, 1>(masked.data(), {4})),
                           {{0, 0.25}, {1, 0.25}, {2, 0.25}, {3, 0.25}});

  const std::vector<float> logits = {10, 9, 0};
  const TensorView<const float, 1> w(logits.data(), {3});
  nn::Sampler cold({1e-310, 0, 1.0, 0});
  expect_same_distribution(cold.distribution(w), sorted_softmax(logits, 1e-310));
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(cold(w), 0);
}

TEST(Sampler, RejectsBadSettingsAndLogits) {
  SSMKIT_EXPECT_ERROR(nn::Sampler({-1.0, 0, 1.0, 0}), "temperature");
  SSMKIT_EXPECT_ERROR(nn::Sampler({1.0, -2, 1.0, 0}), "top_k");
  SSMKIT_EXPECT_ERROR(nn::Sampler({1.0, 0, 0.0, 0}), "top_p");
  SSMKIT_EXPECT_ERROR(nn::Sampler({1.0, 0, 1.5, 0}), "top_p");
  nn::SamplingConfig stop;
  stop.stop_token_ids = {0, 7, -2};
  SSMKIT_EXPECT_ERROR(nn::Sampler{stop}, "stop_token_ids", "element 2", ">= 0", "-2");
  std::vector<float> logits = {1, NAN, 2};
  nn::Sampler s({1.0, 0, 1.0, 0});
  SSMKIT_EXPECT_ERROR(s(TensorView<const float, 1>(logits.data(), {3})), "logits", "element 1");
}

}  // namespace
