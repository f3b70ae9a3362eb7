#include "core/selection/selector.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "core/util/random.h"

namespace dots {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

SelectorOptions DotsOptions(double tau, double alpha = 0.5) {
  SelectorOptions options;
  options.strategy = SelectorStrategy::kDots;
  options.tau = tau;
  options.alpha = alpha;
  return options;
}

SelectorOptions StrategyOptions(SelectorStrategy strategy) {
  SelectorOptions options;
  options.strategy = strategy;
  return options;
}

std::vector<int64_t> Select(const std::vector<float>& p_hat, int64_t budget,
                            const SelectorOptions& options, uint64_t seed,
                            const std::vector<uint8_t>& excluded = {}) {
  SelectorInput input;
  input.p_hat = p_hat;
  input.excluded = excluded;
  absl::StatusOr<std::vector<int64_t>> result = SelectQuestions(input, budget, options, seed);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : std::vector<int64_t>();
}

// Fraction of `draws` seeds for which a budget-1 draw picks index `target`.
double WinRate(const std::vector<float>& p_hat, const SelectorOptions& options, int64_t target,
               int draws) {
  int wins = 0;
  for (int seed = 0; seed < draws; ++seed) {
    const std::vector<int64_t> picked = Select(p_hat, 1, options, seed);
    if (!picked.empty() && picked[0] == target) ++wins;
  }
  return static_cast<double>(wins) / draws;
}

std::vector<float> RandomPool(int64_t n, uint64_t seed, float lo = 0.0f, float hi = 1.0f) {
  Rng rng(seed);
  std::vector<float> p(n);
  for (float& x : p) x = static_cast<float>(lo + (hi - lo) * rng.UniformOpen());
  return p;
}

TEST(SelectorStrategyTest, ParseAndNameRoundTrip) {
  for (SelectorStrategy s :
       {SelectorStrategy::kDots, SelectorStrategy::kUniform, SelectorStrategy::kGreedy,
        SelectorStrategy::kBand, SelectorStrategy::kThompson, SelectorStrategy::kPosterior}) {
    absl::StatusOr<SelectorStrategy> parsed = ParseSelectorStrategy(SelectorStrategyName(s));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(SelectorStrategyName(SelectorStrategy::kDots), "dots");
  EXPECT_EQ(ParseSelectorStrategy("Dots").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSelectorStrategy("").status().code(), absl::StatusCode::kInvalidArgument);
}

// Two questions, budget 1: Gumbel-top-1 picks i with probability softmax(logits)_i, so the
// closer question wins with probability 1 / (1 + e^{-delta/tau}).
TEST(SelectorDotsTest, TwoItemWinRateMatchesExpOfDistanceGapOverTau) {
  const std::vector<float> p_hat = {0.5f, 0.52f};
  const double gap = std::fabs(double{p_hat[1]} - 0.5) - std::fabs(double{p_hat[0]} - 0.5);
  constexpr int kDraws = 20000;
  for (double ratio_exponent : {0.5, 1.0, 3.0}) {
    const double tau = gap / ratio_exponent;
    const double expected_far = 1.0 / (1.0 + std::exp(ratio_exponent));
    const double far = WinRate(p_hat, DotsOptions(tau), 1, kDraws);
    const double sigma = std::sqrt(expected_far * (1 - expected_far) / kDraws);
    EXPECT_NEAR(far, expected_far, 5 * sigma) << "tau=" << tau;
  }
}

// The paper's setting (docs/paper.md §7.2 item 6): tau = 1e-3, p_hat 0.50 vs 0.51, a ratio of
// e^10 = 22026.47. Over 10^6 seeds the farther question should win ~45 times (Poisson).
TEST(SelectorDotsTest, PaperTemperatureGivesRatioEToTheTen) {
  const std::vector<float> p_hat = {0.51f, 0.50f};
  const double gap = std::fabs(double{p_hat[0]} - 0.5) - std::fabs(double{p_hat[1]} - 0.5);
  const double expected_rate = 1.0 / (1.0 + std::exp(gap / 1e-3));
  EXPECT_NEAR(std::exp(gap / 1e-3), 22026.47, 22026.47 * 2e-5);  // float 0.51f is not 0.51.
  constexpr int kDraws = 1000000;
  SelectorInput input;
  input.p_hat = p_hat;
  int far_wins = 0;
  for (int seed = 0; seed < kDraws; ++seed) {
    absl::StatusOr<std::vector<int64_t>> picked =
        SelectQuestions(input, 1, DotsOptions(1e-3), seed);
    ASSERT_TRUE(picked.ok());
    if ((*picked)[0] == 0) ++far_wins;
  }
  const double expected = expected_rate * kDraws;  // ~45.4
  EXPECT_GT(far_wins, expected - 5 * std::sqrt(expected));
  EXPECT_LT(far_wins, expected + 5 * std::sqrt(expected));
}

TEST(SelectorDotsTest, NoOverflowOutsideUnitIntervalOrAtTinyTau) {
  const std::vector<float> p_hat = {-0.3f, 1.4f, 0.5f, 0.45f, -7.0f, 3e30f, -3e38f};
  for (double tau : {1e-3, 1e-12, 1e-300, 5e-324, 1.0, 1e300}) {
    const std::vector<int64_t> all = Select(p_hat, 7, DotsOptions(tau), 3);
    ASSERT_EQ(all.size(), 7u) << tau;
    EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 7u) << tau;
    if (tau <= 1e-3) {
      // Distances 0.8, 0.9, 0, 0.05, 7.5, 3e30, 3e38: every gap / tau >= 50, so the draw is
      // sorted by distance with certainty.
      EXPECT_THAT(all, ElementsAre(2, 3, 0, 1, 4, 5, 6)) << tau;
    }
  }
  // Exactly two out-of-range questions at the paper's tau: -0.3 (distance 0.8) always beats 1.4.
  for (uint64_t seed = 0; seed < 100; ++seed) {
    EXPECT_THAT(Select({1.4f, -0.3f}, 1, DotsOptions(1e-3), seed), ElementsAre(1));
  }
}

TEST(SelectorDotsTest, DrawsAreUniqueAndInRange) {
  const std::vector<float> p_hat = RandomPool(5000, 1, -0.2f, 1.2f);
  for (double tau : {1e-3, 0.1, 10.0}) {
    for (int64_t budget : {1, 100, 4999, 5000, 6000}) {
      const std::vector<int64_t> picked = Select(p_hat, budget, DotsOptions(tau), 11);
      ASSERT_EQ(picked.size(), static_cast<size_t>(std::min<int64_t>(budget, 5000)));
      std::set<int64_t> unique(picked.begin(), picked.end());
      EXPECT_EQ(unique.size(), picked.size());
      EXPECT_GE(*unique.begin(), 0);
      EXPECT_LT(*unique.rbegin(), 5000);
    }
  }
}

std::vector<int64_t> ClosestToTarget(const std::vector<float>& p_hat, size_t count, double alpha) {
  std::vector<int64_t> order(p_hat.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::fabs(double{p_hat[a]} - alpha) < std::fabs(double{p_hat[b]} - alpha);
  });
  order.resize(count);
  return order;
}

TEST(SelectorDotsTest, VanishingTauSelectsTheClosestInOrder) {
  const std::vector<float> p_hat = RandomPool(3000, 2);  // Distinct distances (checked below).
  const std::vector<int64_t> expected = ClosestToTarget(p_hat, 201, 0.5);
  for (int i = 0; i < 200; ++i) {  // Distinct distances: no tie can reorder the expectation.
    ASSERT_LT(std::fabs(double{p_hat[expected[i]]} - 0.5),
              std::fabs(double{p_hat[expected[i + 1]]} - 0.5));
  }
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<int64_t> top200(expected.begin(), expected.begin() + 200);
    EXPECT_EQ(Select(p_hat, 200, DotsOptions(1e-9), seed), top200);
    EXPECT_EQ(Select(p_hat, 200, StrategyOptions(SelectorStrategy::kGreedy), seed), top200);
  }
}

// |0.3f - 0.5| == |0.7f - 0.5| exactly in binary, so the two must be equally likely, also when
// tau is so small that tau * Gumbel vanishes next to the distance and only the tie-break on the
// Gumbel noise is left.
TEST(SelectorDotsTest, SymmetricQuestionsAreEquallyLikely) {
  const std::vector<float> p_hat = {0.3f, 0.7f};
  ASSERT_EQ(0.5 - double{p_hat[0]}, double{p_hat[1]} - 0.5);
  constexpr int kDraws = 20000;
  const double sigma = std::sqrt(0.25 / kDraws);
  for (double tau : {1e-3, 0.05, 1e-300}) {
    EXPECT_NEAR(WinRate(p_hat, DotsOptions(tau), 0, kDraws), 0.5, 5 * sigma) << tau;
  }
  EXPECT_NEAR(WinRate(p_hat, StrategyOptions(SelectorStrategy::kGreedy), 0, kDraws), 0.5,
              5 * sigma);
}

TEST(SelectorDotsTest, ExclusionsAreNeverSelected) {
  const std::vector<float> p_hat = RandomPool(2000, 4);
  std::vector<uint8_t> excluded(p_hat.size(), 0);
  // Exclude the 100 best questions: the greedy-like draw must move on to the next ones.
  const std::vector<int64_t> closest = ClosestToTarget(p_hat, 151, 0.5);
  for (int i = 100; i < 150; ++i) {  // Distinct distances: the greedy order is fixed.
    ASSERT_LT(std::fabs(double{p_hat[closest[i]]} - 0.5),
              std::fabs(double{p_hat[closest[i + 1]]} - 0.5));
  }
  for (int i = 0; i < 100; ++i) excluded[closest[i]] = 1;
  for (SelectorStrategy strategy :
       {SelectorStrategy::kDots, SelectorStrategy::kUniform, SelectorStrategy::kGreedy,
        SelectorStrategy::kBand, SelectorStrategy::kThompson, SelectorStrategy::kPosterior}) {
    const std::vector<int64_t> picked = Select(p_hat, 300, StrategyOptions(strategy), 5, excluded);
    ASSERT_EQ(picked.size(), 300u);
    for (int64_t i : picked) EXPECT_EQ(excluded[i], 0) << SelectorStrategyName(strategy);
  }
  const std::vector<int64_t> greedy =
      Select(p_hat, 50, StrategyOptions(SelectorStrategy::kGreedy), 5, excluded);
  EXPECT_EQ(greedy, std::vector<int64_t>(closest.begin() + 100, closest.begin() + 150));
}

TEST(SelectorDotsTest, FewerEligibleThanBudgetReturnsAllEligible) {
  const std::vector<float> p_hat = RandomPool(10, 5);
  const std::vector<uint8_t> excluded = {1, 0, 0, 1, 0, 1, 0, 0, 1, 1};
  for (SelectorStrategy strategy :
       {SelectorStrategy::kDots, SelectorStrategy::kUniform, SelectorStrategy::kGreedy,
        SelectorStrategy::kBand, SelectorStrategy::kThompson, SelectorStrategy::kPosterior}) {
    EXPECT_THAT(Select(p_hat, 100, StrategyOptions(strategy), 6, excluded),
                UnorderedElementsAre(1, 2, 4, 6, 7));
  }
  const std::vector<uint8_t> all_excluded(10, 1);
  EXPECT_TRUE(Select(p_hat, 5, DotsOptions(1e-3), 6, all_excluded).empty());
  EXPECT_TRUE(Select({}, 5, DotsOptions(1e-3), 6).empty());
  EXPECT_TRUE(Select(p_hat, 0, DotsOptions(1e-3), 6).empty());
}

TEST(SelectorDotsTest, DeterministicPerSeed) {
  const std::vector<float> p_hat = RandomPool(20000, 7);
  for (SelectorStrategy strategy :
       {SelectorStrategy::kDots, SelectorStrategy::kUniform, SelectorStrategy::kGreedy,
        SelectorStrategy::kBand, SelectorStrategy::kThompson, SelectorStrategy::kPosterior}) {
    SelectorOptions options = StrategyOptions(strategy);
    options.tau = 0.05;
    const std::vector<int64_t> first = Select(p_hat, 500, options, 42);
    EXPECT_EQ(Select(p_hat, 500, options, 42), first) << SelectorStrategyName(strategy);
    // Greedy has no randomness left on distinct distances; every other strategy must change.
    if (strategy == SelectorStrategy::kGreedy) continue;
    EXPECT_NE(Select(p_hat, 500, options, 43), first) << SelectorStrategyName(strategy);
  }
}

// A question's random numbers depend only on (seed, index), so excluding a question that was not
// drawn leaves the draw unchanged, and the thread count never matters.
TEST(SelectorDotsTest, IndependentOfUnrelatedExclusionsAndThreadCount) {
  const std::vector<float> p_hat = RandomPool(40000, 8);
  for (SelectorStrategy strategy :
       {SelectorStrategy::kDots, SelectorStrategy::kUniform, SelectorStrategy::kGreedy,
        SelectorStrategy::kBand, SelectorStrategy::kThompson, SelectorStrategy::kPosterior}) {
    SelectorOptions options = StrategyOptions(strategy);
    options.tau = 0.02;
    const std::vector<int64_t> base = Select(p_hat, 300, options, 9);
    std::vector<uint8_t> excluded(p_hat.size(), 1);
    for (int64_t i : base) excluded[i] = 0;
    for (size_t i = 0; i < excluded.size(); i += 3) excluded[i] = 0;
    EXPECT_EQ(Select(p_hat, 300, options, 9, excluded), base) << SelectorStrategyName(strategy);

    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const std::vector<int64_t> one_thread = Select(p_hat, 300, options, 9);
    omp_set_num_threads(3);
    const std::vector<int64_t> three_threads = Select(p_hat, 300, options, 9);
    omp_set_num_threads(saved_threads);
    EXPECT_EQ(one_thread, base) << SelectorStrategyName(strategy);
    EXPECT_EQ(three_threads, base) << SelectorStrategyName(strategy);
  }
}

// Top-k by fixed keys: the budget-16 draw must be the first 16 of the budget-4096 draw. The two
// budgets prune at very different thresholds, so this catches pruning that drops a winner, also on
// pools sorted by difficulty (the worst case for a running threshold).
TEST(SelectorDotsTest, SmallBudgetIsPrefixOfLargeBudget) {
  std::vector<float> p_hat = RandomPool(300000, 10, -0.1f, 1.1f);
  for (int order = 0; order < 3; ++order) {
    if (order == 1) std::sort(p_hat.begin(), p_hat.end());
    if (order == 2) std::reverse(p_hat.begin(), p_hat.end());
    for (SelectorStrategy strategy : {SelectorStrategy::kDots, SelectorStrategy::kUniform,
                                      SelectorStrategy::kGreedy, SelectorStrategy::kBand}) {
      for (double tau : {1e-3, 0.05, 2.0}) {
        SelectorOptions options = StrategyOptions(strategy);
        options.tau = tau;
        const std::vector<int64_t> large = Select(p_hat, 4096, options, 12);
        const std::vector<int64_t> small = Select(p_hat, 16, options, 12);
        ASSERT_EQ(large.size(), 4096u);
        EXPECT_EQ(small, std::vector<int64_t>(large.begin(), large.begin() + 16))
            << SelectorStrategyName(strategy) << " tau=" << tau << " order=" << order;
        if (strategy != SelectorStrategy::kDots) break;  // tau only matters to kDots.
      }
    }
  }
}

// Probability of the ordered outcome `draw` under sequential sampling without replacement with
// weights w: prod_t w[d_t] / (W - sum of the weights drawn before t).
double SequentialProbability(const std::vector<double>& weights, const std::vector<int>& draw) {
  double remaining = std::accumulate(weights.begin(), weights.end(), 0.0);
  double probability = 1.0;
  for (int i : draw) {
    probability *= weights[i] / remaining;
    remaining -= weights[i];
  }
  return probability;
}

// Pearson chi-square statistic of Select's ordered outcomes against sequential sampling without
// replacement, over all n!/(n-budget)! ordered outcomes.
double OrderedOutcomeChiSquare(const std::vector<float>& p_hat, const std::vector<double>& weights,
                               int budget, const SelectorOptions& options, int draws,
                               const std::vector<uint8_t>& excluded = {}) {
  std::vector<int> eligible;
  for (int i = 0; i < static_cast<int>(p_hat.size()); ++i) {
    if (excluded.empty() || excluded[i] == 0) eligible.push_back(i);
  }
  std::map<std::vector<int64_t>, int> counts;
  for (int seed = 0; seed < draws; ++seed) {
    ++counts[Select(p_hat, budget, options, 1000003ULL * seed + 17, excluded)];
  }
  // Enumerate every ordered outcome of `budget` distinct eligible indices.
  double chi_square = 0.0;
  int outcomes = 0;
  std::vector<int> draw;
  auto visit = [&](auto&& self) -> void {
    if (static_cast<int>(draw.size()) == budget) {
      const double expected = draws * SequentialProbability(weights, draw);
      const auto it = counts.find(std::vector<int64_t>(draw.begin(), draw.end()));
      const double observed = it == counts.end() ? 0.0 : it->second;
      chi_square += (observed - expected) * (observed - expected) / expected;
      ++outcomes;
      return;
    }
    for (int i : eligible) {
      if (std::find(draw.begin(), draw.end(), i) != draw.end()) continue;
      draw.push_back(i);
      self(self);
      draw.pop_back();
    }
  };
  visit(visit);
  int observed_outcomes = 0;
  for (const auto& [outcome, count] : counts) observed_outcomes += count;
  EXPECT_EQ(observed_outcomes, draws);
  return chi_square;
}

TEST(SelectorDotsTest, ChiSquareMatchesSequentialSamplingWithoutReplacement) {
  // Weights 1:2:3:4:5 via p = 0.5 + tau ln(5 / w); the exact weights are recomputed from the float
  // values actually passed. Smallest ordered-outcome probability (1,2,3 of 5, budget 3) is ~0.0024,
  // i.e. >= 240 expected counts per cell at 10^5 draws.
  const double tau = 0.1;
  std::vector<float> p_hat;
  for (double w : {1.0, 2.0, 3.0, 4.0, 5.0}) {
    p_hat.push_back(static_cast<float>(0.5 + tau * std::log(5.0 / w)));
  }
  std::vector<double> weights;
  for (float p : p_hat) weights.push_back(std::exp(-std::fabs(double{p} - 0.5) / tau));
  // 0.999 quantiles of chi-square: 59 degrees of freedom (60 ordered outcomes) 98.3242;
  // 19 (20 outcomes) 43.8202 (scipy.stats.chi2.ppf(0.999, df)).
  EXPECT_LT(OrderedOutcomeChiSquare(p_hat, weights, 3, DotsOptions(tau), 100000), 98.3242);
  EXPECT_LT(OrderedOutcomeChiSquare(p_hat, weights, 2, DotsOptions(tau), 100000), 43.8202);
}

TEST(SelectorUniformTest, ChiSquareMatchesUniformSamplingWithoutReplacement) {
  const std::vector<float> p_hat = {0.1f, 0.5f, 0.5f, 0.9f, 2.0f};  // p_hat must not matter.
  const std::vector<double> weights(5, 1.0);
  const SelectorOptions options = StrategyOptions(SelectorStrategy::kUniform);
  EXPECT_LT(OrderedOutcomeChiSquare(p_hat, weights, 3, options, 100000), 98.3242);
  EXPECT_LT(OrderedOutcomeChiSquare(p_hat, weights, 2, options, 100000), 43.8202);
}

// The same chi-square check with the five eligible questions spread over different blocks of
// 4096 (different random streams) of a larger pool, every other question excluded.
TEST(SelectorDotsTest, ChiSquareAcrossRandomStreamBlocks) {
  const double tau = 0.1;
  std::vector<float> p_hat(4 * 4096 + 10, 0.5f);
  std::vector<uint8_t> excluded(p_hat.size(), 1);
  const int64_t positions[] = {3, 4100, 8192, 12300, 16390};
  const double raw_weights[] = {1.0, 2.0, 3.0, 4.0, 5.0};
  std::vector<double> weights(p_hat.size(), 0.0);
  for (int j = 0; j < 5; ++j) {
    const int64_t i = positions[j];
    p_hat[i] = static_cast<float>(0.5 - tau * std::log(5.0 / raw_weights[j]));
    excluded[i] = 0;
    weights[i] = std::exp(-std::fabs(double{p_hat[i]} - 0.5) / tau);
  }
  EXPECT_LT(OrderedOutcomeChiSquare(p_hat, weights, 2, DotsOptions(tau), 20000, excluded), 43.8202);
}

TEST(SelectorUniformTest, IgnoresPHat) {
  std::vector<float> p_hat(1000, 0.5f);
  for (int i = 0; i < 500; ++i) p_hat[i] = 0.0f;  // The first half is far from alpha.
  int first_half = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    for (int64_t i : Select(p_hat, 100, StrategyOptions(SelectorStrategy::kUniform), seed)) {
      first_half += i < 500;
    }
  }
  // 2000 draws, each in the first half with probability 1/2: sigma ~ 22.
  EXPECT_NEAR(first_half, 1000, 120);
}

TEST(SelectorGreedyTest, OrdersByDistanceAndBreaksTiesAtRandom) {
  const std::vector<float> p_hat = {0.9f, 0.45f, 0.5f, 0.55f, 0.1f, 0.5f};
  std::set<int64_t> first_seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const std::vector<int64_t> picked =
        Select(p_hat, 6, StrategyOptions(SelectorStrategy::kGreedy), seed);
    ASSERT_EQ(picked.size(), 6u);
    EXPECT_THAT(std::vector<int64_t>(picked.begin(), picked.begin() + 2),
                UnorderedElementsAre(2, 5));
    EXPECT_THAT(std::vector<int64_t>(picked.begin() + 2, picked.begin() + 4),
                UnorderedElementsAre(1, 3));
    EXPECT_THAT(std::vector<int64_t>(picked.begin() + 4, picked.end()), UnorderedElementsAre(0, 4));
    first_seen.insert(picked[0]);
  }
  EXPECT_EQ(first_seen.size(), 2u);  // Both tied questions come first sometimes.
}

TEST(SelectorBandTest, InBandFirstAndUniformWithinTheBand) {
  //                             in     in     out    in     out    in
  const std::vector<float> p_hat = {0.2f, 0.5f, 0.95f, 0.8f, 0.05f, 0.33f};
  SelectorOptions options = StrategyOptions(SelectorStrategy::kBand);
  options.band_lo = 0.2;
  options.band_hi = 0.8;
  constexpr int kDraws = 40000;
  std::vector<int> first_counts(6, 0);
  for (uint64_t seed = 0; seed < kDraws; ++seed) {
    const std::vector<int64_t> picked = Select(p_hat, 6, options, seed);
    ASSERT_EQ(picked.size(), 6u);
    // The four in-band questions in some order, then the closest out-of-band (0.95 is 0.15 away,
    // 0.05 is 0.15 away from 0.2 too: equal in real numbers but not in float; either order is
    // allowed as long as both come last).
    EXPECT_THAT(std::vector<int64_t>(picked.begin(), picked.begin() + 4),
                UnorderedElementsAre(0, 1, 3, 5));
    EXPECT_THAT(std::vector<int64_t>(picked.begin() + 4, picked.end()), UnorderedElementsAre(2, 4));
    ++first_counts[picked[0]];
  }
  // Uniform within the band: each in-band question comes first with probability 1/4.
  // Chi-square with 3 degrees of freedom; 0.999 quantile 16.2662.
  double chi_square = 0.0;
  for (int i : {0, 1, 3, 5}) {
    const double expected = kDraws / 4.0;
    chi_square += (first_counts[i] - expected) * (first_counts[i] - expected) / expected;
  }
  EXPECT_LT(chi_square, 16.2662);
}

TEST(SelectorBandTest, FillsWithClosestToBandWhenBandIsShort) {
  const std::vector<float> p_hat = {0.0f, 0.1f, 0.3f, 0.97f, 0.6f, 0.85f, 1.3f};
  SelectorOptions options = StrategyOptions(SelectorStrategy::kBand);
  options.band_lo = 0.25;
  options.band_hi = 0.65;
  const std::vector<int64_t> picked = Select(p_hat, 5, options, 3);
  ASSERT_EQ(picked.size(), 5u);
  EXPECT_THAT(std::vector<int64_t>(picked.begin(), picked.begin() + 2), UnorderedElementsAre(2, 4));
  // Then by distance to the band: 0.85 (0.2), 0.1 (0.15 below lo) ... sorted: 1 (0.15), 5 (0.2),
  // 0 (0.25).
  EXPECT_THAT(std::vector<int64_t>(picked.begin() + 2, picked.end()), ElementsAre(1, 5, 0));
}

// Thompson with alpha = 0 is "smallest sampled p first". Against a question whose posterior is
// concentrated at c (Beta(3e6, 7e6), sd 1.4e-4), question 0 wins with probability
// P(Beta(a, b) < c), the Beta CDF: this checks the Gamma/Beta sampler itself, including the
// shape < 1 path.
TEST(SelectorThompsonTest, BetaSamplesFollowTheBetaCdf) {
  struct Case {
    float a, b;
    double cdf_at_0_3;  // scipy.stats.beta.cdf(0.3, a, b)
  };
  const Case cases[] = {
      {2, 5, 0.579825}, {0.5f, 0.5f, 0.369010}, {3, 7, 0.537169}, {0.2f, 3, 0.942260}};
  constexpr int kDraws = 20000;
  for (const Case& c : cases) {
    const std::vector<float> p_hat = {0.5f, 0.5f};
    const std::vector<float> beta_a = {c.a, 3e6f};
    const std::vector<float> beta_b = {c.b, 7e6f};
    SelectorInput input;
    input.p_hat = p_hat;
    input.beta_a = beta_a;
    input.beta_b = beta_b;
    SelectorOptions options = StrategyOptions(SelectorStrategy::kThompson);
    options.alpha = 0.0;
    int wins = 0;
    for (uint64_t seed = 0; seed < kDraws; ++seed) {
      absl::StatusOr<std::vector<int64_t>> picked = SelectQuestions(input, 1, options, seed);
      ASSERT_TRUE(picked.ok()) << picked.status();
      wins += (*picked)[0] == 0;
    }
    const double sigma = std::sqrt(c.cdf_at_0_3 * (1 - c.cdf_at_0_3) / kDraws);
    EXPECT_NEAR(static_cast<double>(wins) / kDraws, c.cdf_at_0_3, 5 * sigma)
        << "Beta(" << c.a << ", " << c.b << ")";
  }
}

TEST(SelectorThompsonTest, DefaultPosteriorIsEightPseudoCountsOnClampedPHat) {
  const std::vector<float> p_hat = RandomPool(500, 13, -0.3f, 1.3f);
  std::vector<float> beta_a, beta_b;
  for (float p : p_hat) {
    const float clamped = std::clamp(p, 0.0f, 1.0f);
    beta_a.push_back(1.0f + 8.0f * clamped);
    beta_b.push_back(1.0f + 8.0f * (1.0f - clamped));
  }
  SelectorInput explicit_input;
  explicit_input.p_hat = p_hat;
  explicit_input.beta_a = beta_a;
  explicit_input.beta_b = beta_b;
  const SelectorOptions options = StrategyOptions(SelectorStrategy::kThompson);
  for (uint64_t seed : {1, 2, 3}) {
    absl::StatusOr<std::vector<int64_t>> with_posterior =
        SelectQuestions(explicit_input, 100, options, seed);
    ASSERT_TRUE(with_posterior.ok());
    EXPECT_EQ(Select(p_hat, 100, options, seed), *with_posterior);
  }
}

TEST(SelectorThompsonTest, ConfidentPosteriorsNearTargetWinAndUncertainOnesExplore) {
  // 0: confidently at 0.5; 1: confidently at 0.1; 2: no information (Beta(1, 1)).
  const std::vector<float> p_hat = {0.5f, 0.1f, 0.5f};
  const std::vector<float> beta_a = {5000, 1000, 1};
  const std::vector<float> beta_b = {5000, 9000, 1};
  SelectorInput input;
  input.p_hat = p_hat;
  input.beta_a = beta_a;
  input.beta_b = beta_b;
  const SelectorOptions options = StrategyOptions(SelectorStrategy::kThompson);
  int uncertain_before_confident_far = 0;
  constexpr int kDraws = 4000;
  for (uint64_t seed = 0; seed < kDraws; ++seed) {
    absl::StatusOr<std::vector<int64_t>> picked = SelectQuestions(input, 3, options, seed);
    ASSERT_TRUE(picked.ok());
    ASSERT_EQ(picked->size(), 3u);
    // Question 2 is not last exactly when it beats question 1 (it then beats 0 too, or comes
    // second behind it).
    uncertain_before_confident_far += (*picked)[1] == 2 || (*picked)[0] == 2;
  }
  // Question 2 beats question 1 (|p - 0.5| = 0.4 +- 0.003) when U(0, 1) lands in (0.1, 0.9): 80%.
  EXPECT_NEAR(static_cast<double>(uncertain_before_confident_far) / kDraws, 0.8, 0.035);
}

std::vector<int64_t> SelectWithPosterior(const std::vector<float>& p_hat,
                                         const std::vector<float>& beta_a,
                                         const std::vector<float>& beta_b, int64_t budget,
                                         const SelectorOptions& options, uint64_t seed) {
  SelectorInput input;
  input.p_hat = p_hat;
  input.beta_a = beta_a;
  input.beta_b = beta_b;
  absl::StatusOr<std::vector<int64_t>> result = SelectQuestions(input, budget, options, seed);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : std::vector<int64_t>();
}

// With certain posteriors (huge concentration) or none, kPosterior draws exactly what kDots
// draws for the same seed (it shares kDots's random stream).
TEST(SelectorPosteriorTest, IsDotsWhenEveryRateIsKnownOrNoPosteriorIsGiven) {
  const std::vector<float> p_hat = RandomPool(5000, 3);
  const std::vector<float> certain(5000, 1e30f);
  SelectorOptions posterior = DotsOptions(0.05);
  posterior.strategy = SelectorStrategy::kPosterior;
  for (uint64_t seed : {1u, 2u, 3u}) {
    const std::vector<int64_t> dots = Select(p_hat, 300, DotsOptions(0.05), seed);
    EXPECT_EQ(Select(p_hat, 300, posterior, seed), dots);
    EXPECT_EQ(SelectWithPosterior(p_hat, certain, certain, 300, posterior, seed), dots);
  }
}

// Two questions predicted at the target: the one whose rate is known (8 rollouts) beats the one
// predicted from little evidence, with the two-item softmax probability of their distances.
TEST(SelectorPosteriorTest, PrefersKnownRatesToUncertainPredictionsByTheirPosteriorSpread) {
  const std::vector<float> p_hat = {0.5f, 0.5f};
  const std::vector<float> a = {0.5f, 4.5f}, b = {0.5f, 4.5f};  // kappa 1 and 9
  const double d_uncertain = std::sqrt(0.25 / 2.0), d_known = std::sqrt(0.25 / 10.0);
  SelectorOptions options;
  options.strategy = SelectorStrategy::kPosterior;
  options.tau = 0.2;
  constexpr int kDraws = 20000;
  int uncertain_wins = 0;
  for (int seed = 0; seed < kDraws; ++seed) {
    uncertain_wins += SelectWithPosterior(p_hat, a, b, 1, options, seed)[0] == 0;
  }
  const double expected = 1.0 / (1.0 + std::exp((d_uncertain - d_known) / options.tau));
  const double sigma = std::sqrt(expected * (1 - expected) / kDraws);
  EXPECT_NEAR(static_cast<double>(uncertain_wins) / kDraws, expected, 5 * sigma);
  // At the paper's tau the known one always wins, and alpha still targets: a known rate at 0.3
  // beats a known 0.5 when alpha = 0.3.
  options.tau = 1e-3;
  EXPECT_EQ(SelectWithPosterior(p_hat, a, b, 1, options, 7)[0], 1);
  options.alpha = 0.3;
  EXPECT_EQ(SelectWithPosterior({0.5f, 0.3f}, {40, 30}, {40, 70}, 1, options, 7)[0], 1);
}

TEST(SelectorPosteriorTest, RejectsInvalidPosteriors) {
  SelectorInput input;
  const std::vector<float> p_hat = {0.5f, 0.4f}, good = {1, 1}, bad = {1, -1};
  input.p_hat = p_hat;
  input.beta_a = good;
  input.beta_b = bad;
  absl::StatusOr<std::vector<int64_t>> r =
      SelectQuestions(input, 1, StrategyOptions(SelectorStrategy::kPosterior), 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("beta_b[1]"), std::string::npos);
}

TEST(SelectorErrorTest, RejectsInvalidArguments) {
  const std::vector<float> p_hat = {0.1f, 0.5f, 0.9f};
  const std::vector<uint8_t> short_flags = {0, 1};
  const std::vector<float> two = {1.0f, 1.0f};
  const std::vector<float> three = {1.0f, 1.0f, 1.0f};
  const std::vector<float> bad_beta = {1.0f, 0.0f, 1.0f};
  SelectorInput input;
  input.p_hat = p_hat;
  const SelectorOptions ok_options;
  auto code = [](const SelectorInput& in, int64_t budget, const SelectorOptions& options) {
    return SelectQuestions(in, budget, options, 1).status().code();
  };
  EXPECT_EQ(code(input, 2, ok_options), absl::StatusCode::kOk);
  EXPECT_EQ(code(input, -1, ok_options), absl::StatusCode::kInvalidArgument);

  SelectorInput bad = input;
  bad.excluded = short_flags;
  EXPECT_EQ(code(bad, 2, ok_options), absl::StatusCode::kInvalidArgument);
  bad = input;
  bad.beta_a = three;
  EXPECT_EQ(code(bad, 2, ok_options), absl::StatusCode::kInvalidArgument);  // beta_b missing.
  bad.beta_b = two;
  EXPECT_EQ(code(bad, 2, ok_options), absl::StatusCode::kInvalidArgument);
  bad.beta_a = two;
  EXPECT_EQ(code(bad, 2, ok_options), absl::StatusCode::kInvalidArgument);  // N mismatch.

  SelectorOptions thompson = StrategyOptions(SelectorStrategy::kThompson);
  bad = input;
  bad.beta_a = three;
  bad.beta_b = bad_beta;
  EXPECT_EQ(code(bad, 2, thompson), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(bad, 2, ok_options), absl::StatusCode::kOk);  // Values unused by kDots.

  for (float value : {std::nanf(""), INFINITY, -INFINITY}) {
    const std::vector<float> with_bad = {0.1f, value, 0.9f};
    bad = input;
    bad.p_hat = with_bad;
    const absl::Status status = SelectQuestions(bad, 2, ok_options, 1).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("p_hat[1]"));
  }

  for (double tau : {0.0, -1e-3, std::nan(""), std::numeric_limits<double>::infinity()}) {
    SelectorOptions options;
    options.tau = tau;
    EXPECT_EQ(code(input, 2, options), absl::StatusCode::kInvalidArgument) << tau;
  }
  SelectorOptions band = StrategyOptions(SelectorStrategy::kBand);
  band.band_lo = 0.7;
  band.band_hi = 0.3;
  EXPECT_EQ(code(input, 2, band), absl::StatusCode::kInvalidArgument);
  band.band_lo = band.band_hi = 0.3;  // A degenerate band is allowed.
  EXPECT_EQ(code(input, 2, band), absl::StatusCode::kOk);
  SelectorOptions bogus_strategy;
  bogus_strategy.strategy = static_cast<SelectorStrategy>(17);
  EXPECT_EQ(code(input, 2, bogus_strategy), absl::StatusCode::kInvalidArgument);
  SelectorOptions nan_alpha;
  nan_alpha.alpha = std::nan("");
  EXPECT_EQ(code(input, 2, nan_alpha), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dots
