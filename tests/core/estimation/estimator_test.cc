#include "core/estimation/estimator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/estimation/estimator_config.h"
#include "core/selection/reference_set.h"
#include "core/util/json.h"

namespace dots {
namespace {

// A pool of `n` questions in two clusters of embeddings (dimension 4): even indices point along
// e0, odd along e1, each with a small distinct perturbation.
Pool ClusteredPool(int n, bool with_priors) {
  Pool pool;
  for (int i = 0; i < n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrCat("question ", i);
    if (with_priors && i % 3 != 0) q.prior = (i % 2 == 0) ? 0.8 : 0.2;
    std::vector<float> e = {i % 2 == 0 ? 1.0f : 0.0f, i % 2 == 1 ? 1.0f : 0.0f,
                            0.01f * static_cast<float>(i % 7), 0.02f};
    EXPECT_TRUE(pool.Add(q, e).ok());
  }
  return pool;
}

EstimatorOptions Options(EstimatorMode mode) {
  EstimatorOptions o;
  o.mode = mode;
  return o;
}

// docs/paper.md §7.2 item 1: rewards [1,0,1,1,0,0,0,0] -> success rate 0.375 (difficulty
// 0.625); all ones -> 1; all zeros -> 0. With a negligible prior the posterior mean is the
// observed rate.
TEST(EstimatorTest, ObservedRateIsTheMeanReward) {
  Pool pool = ClusteredPool(3, false);
  EstimatorOptions o = Options(EstimatorMode::kHistory);
  o.prior_strength = 1e-9;
  auto est = Estimator::Create(pool, nullptr, o);
  ASSERT_TRUE(est.ok()) << est.status();
  const std::vector<int> rewards = {1, 0, 1, 1, 0, 0, 0, 0};
  double successes = 0;
  for (int r : rewards) successes += r;
  ASSERT_TRUE((*est)->Observe(0, successes, 8, 0).ok());
  ASSERT_TRUE((*est)->Observe(1, 8, 8, 0).ok());
  ASSERT_TRUE((*est)->Observe(2, 0, 8, 0).ok());
  auto e = (*est)->Estimate(0);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->p_hat[0], 0.375, 1e-6);
  EXPECT_NEAR(1.0 - e->p_hat[0], 0.625, 1e-6);
  EXPECT_NEAR(e->p_hat[1], 1.0, 1e-6);
  EXPECT_NEAR(e->p_hat[2], 0.0, 1e-6);
}

TEST(EstimatorTest, HistoryPosteriorAndDecay) {
  Pool pool = ClusteredPool(4, true);  // q1 has prior 0.2
  EstimatorOptions o = Options(EstimatorMode::kHistory);
  o.prior_strength = 2;
  o.decay = 0.5;
  auto est = Estimator::Create(pool, nullptr, o);
  ASSERT_TRUE(est.ok());
  ASSERT_TRUE((*est)->Observe(1, 3, 8, 0).ok());
  auto e0 = (*est)->Estimate(0);
  ASSERT_TRUE(e0.ok());
  EXPECT_NEAR(e0->p_hat[1], (2 * 0.2 + 3) / (2 + 8), 1e-6);
  EXPECT_NEAR(e0->beta_a[1], 2 * 0.2 + 3, 1e-5);
  EXPECT_NEAR(e0->beta_b[1], 2 * 0.8 + 5, 1e-5);
  // Two versions later the counts weigh 0.25 as much against the same prior.
  auto e2 = (*est)->Estimate(2);
  ASSERT_TRUE(e2.ok());
  EXPECT_NEAR(e2->p_hat[1], (2 * 0.2 + 0.75) / (2 + 2), 1e-6);
  // A new observation at version 2 decays the old counts first: a = 0.75 + 8, b = 1.25 + 0.
  ASSERT_TRUE((*est)->Observe(1, 8, 8, 2).ok());
  auto e3 = (*est)->Estimate(2);
  ASSERT_TRUE(e3.ok());
  EXPECT_NEAR(e3->p_hat[1], (2 * 0.2 + 8.75) / (2 + 10), 1e-6);
}

TEST(EstimatorTest, ColdStartUsesPriorThenPoolMeanThenHalf) {
  Pool with = ClusteredPool(6, true);
  auto est = Estimator::Create(with, nullptr, Options(EstimatorMode::kDefault));
  ASSERT_TRUE(est.ok()) << est.status();
  auto e = (*est)->Estimate(0);
  ASSERT_TRUE(e.ok());
  // q0 and q3 have no prior: pool mean of {0.2, 0.8, 0.2, 0.8} = 0.5; q1 = 0.2, q2 = 0.8.
  EXPECT_NEAR(e->p_hat[1], 0.2, 1e-6);
  EXPECT_NEAR(e->p_hat[2], 0.8, 1e-6);
  EXPECT_NEAR(e->p_hat[0], 0.5, 1e-6);

  EstimatorOptions no_prior = Options(EstimatorMode::kDefault);
  no_prior.use_priors = false;
  auto est2 = Estimator::Create(with, nullptr, no_prior);
  ASSERT_TRUE(est2.ok());
  auto e2 = (*est2)->Estimate(0);
  ASSERT_TRUE(e2.ok());
  for (float p : e2->p_hat) EXPECT_EQ(p, 0.5f);
}

TEST(EstimatorTest, BadObservationsAreRejectedAndChangeNothing) {
  Pool pool = ClusteredPool(4, false);
  auto est = Estimator::Create(pool, nullptr, Options(EstimatorMode::kHistory));
  ASSERT_TRUE(est.ok());
  ASSERT_TRUE((*est)->Observe(0, 4, 8, 1).ok());
  const std::vector<float> before = (*est)->Estimate(1)->p_hat;
  EXPECT_EQ((*est)->Observe(-1, 1, 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(4, 1, 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(0, 9, 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(0, -1, 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(0, std::nan(""), 8, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(0, 1, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->Observe(0, 1, 8, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*est)->observations(0), 1);
  EXPECT_EQ((*est)->Estimate(1)->p_hat, before);
  EXPECT_EQ((*est)->Estimate(1, std::vector<int64_t>{7}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EstimatorTest, ModesNeedingSimilarityRequireEmbeddings) {
  Pool pool;
  ASSERT_TRUE(pool.Add(Question{"a", "text", "{}", std::nullopt}).ok());
  auto est = Estimator::Create(pool, nullptr, Options(EstimatorMode::kPaper));
  EXPECT_EQ(est.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Estimator::Create(pool, nullptr, Options(EstimatorMode::kHistory)).ok());
  ASSERT_TRUE(EnsureEmbeddings(&pool, 32).ok());
  EXPECT_EQ(pool.dim(), 32);
  EXPECT_TRUE(Estimator::Create(pool, nullptr, Options(EstimatorMode::kPaper)).ok());
}

// Paper mode: only the current reference set matters; the OLS fitted on the references' own
// predictions (with self-attention) has residuals summing to zero, so the mean prediction over
// the references equals the mean label; history outside the reference set is ignored.
TEST(EstimatorTest, PaperModeUsesOnlyTheReferenceSet) {
  Pool pool = ClusteredPool(20, false);
  auto est = Estimator::Create(pool, nullptr, Options(EstimatorMode::kPaper));
  ASSERT_TRUE(est.ok());
  const std::vector<int64_t> refs = {0, 1, 2, 3, 4, 5};
  const double labels[] = {0.875, 0.125, 0.75, 0.25, 1.0, 0.0};
  for (size_t i = 0; i < refs.size(); ++i) {
    ASSERT_TRUE((*est)->Observe(refs[i], labels[i] * 8, 8, 0).ok());
  }
  auto e = (*est)->Estimate(0, refs);
  ASSERT_TRUE(e.ok());
  double mean_pred = 0, mean_label = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    mean_pred += e->p_hat[refs[i]] / refs.size();
    mean_label += labels[i] / refs.size();
  }
  EXPECT_NEAR(mean_pred, mean_label, 1e-5);
  // Even questions (cluster e0) carry high labels, odd ones low.
  EXPECT_GT(e->p_hat[10], e->p_hat[11]);
  EXPECT_TRUE(e->beta_a.empty());
  // Observing a question outside the reference set changes nothing in paper mode.
  ASSERT_TRUE((*est)->Observe(12, 0, 8, 0).ok());
  auto again = (*est)->Estimate(0, refs);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->p_hat, e->p_hat);
  // Without an observed reference: cold start.
  auto cold = (*est)->Estimate(0, std::vector<int64_t>{15});
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(cold->p_hat[3], 0.5f);
}

// Default mode: an unobserved question is predicted from its similar labeled neighbours, and a
// labeled question's similarity prior does not see its own label (leave-one-out).
TEST(EstimatorTest, DefaultModePropagatesLabelsBySimilarity) {
  Pool pool = ClusteredPool(40, false);
  EstimatorOptions o = Options(EstimatorMode::kDefault);
  o.recalibration_window = 0;
  auto est = Estimator::Create(pool, nullptr, o);
  ASSERT_TRUE(est.ok());
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE((*est)->Observe(i, i % 2 == 0 ? 7 : 1, 8, 0).ok());
  }
  auto e = (*est)->Estimate(0);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->labeled, 30);
  for (int i = 30; i < 40; ++i) {
    if (i % 2 == 0) {
      EXPECT_GT(e->p_hat[i], 0.8) << i;
    } else {
      EXPECT_LT(e->p_hat[i], 0.2) << i;
    }
    EXPECT_GE(e->p_hat[i], 0.0f);
    EXPECT_LE(e->p_hat[i], 1.0f);
  }
  // Leave-one-out: a lone question in a third direction gets no information from its own label;
  // its similarity prior is what its (dissimilar) neighbours say.
  Pool lone = ClusteredPool(30, false);
  ASSERT_TRUE(lone.Add(Question{"lone", "", "{}", std::nullopt}, {0, 0, 0, 1}).ok());
  auto est2 = Estimator::Create(lone, nullptr, o);
  ASSERT_TRUE(est2.ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE((*est2)->Observe(i, 4, 8, 0).ok());
  ASSERT_TRUE((*est2)->Observe(30, 8, 8, 0).ok());
  auto e2 = (*est2)->Estimate(0);
  ASSERT_TRUE(e2.ok());
  // beta_a = n0 * p_sim + 8 with n0 = 1: p_sim comes from the others (about 0.5); had the lone
  // question attended to itself it would be 1.
  EXPECT_NEAR(e2->p_hat[30], e2->beta_a[30] / (e2->beta_a[30] + e2->beta_b[30]), 1e-5);
  EXPECT_LT(e2->beta_a[30] - 8, 0.75);
  EXPECT_GT(e2->beta_a[30] - 8, 0.25);
}

TEST(LeastSquaresTest, MatchesSklearnSemantics) {
  // Exact line.
  std::vector<double> x = {0, 1, 2, 3}, y = {1, 3, 5, 7};
  LinearFit fit = FitLeastSquares(x, 4, 1, y);
  EXPECT_NEAR(fit.weights[0], 2, 1e-9);
  EXPECT_NEAR(fit.intercept, 1, 1e-9);
  // Constant feature: slope 0, intercept mean(y).
  std::vector<double> c = {0.3, 0.3, 0.3}, cy = {0.1, 0.5, 0.9};
  fit = FitLeastSquares(c, 3, 1, cy);
  EXPECT_NEAR(fit.weights[0], 0, 1e-12);
  EXPECT_NEAR(fit.intercept, 0.5, 1e-12);
  // Two identical columns share the weight (minimum norm).
  std::vector<double> x2 = {0, 0, 1, 1, 2, 2, 3, 3};
  fit = FitLeastSquares(x2, 4, 2, y);
  EXPECT_NEAR(fit.weights[0], 1, 1e-9);
  EXPECT_NEAR(fit.weights[1], 1, 1e-9);
}

TEST(EstimatorConfigTest, ParsesAndNamesBadKeys) {
  auto json = ParseJson(R"({"mode": "history", "decay": 0.9, "prior_strength": 2,
                            "top_k": 16, "attention_tau": 0.1, "label_window": 4})");
  ASSERT_TRUE(json.ok());
  EstimatorConfig config;
  ASSERT_TRUE(ParseEstimatorConfig(*json, &config).ok());
  EXPECT_EQ(config.options.mode, EstimatorMode::kHistory);
  EXPECT_EQ(config.options.decay, 0.9);
  EXPECT_EQ(config.options.prior_strength, 2);
  EXPECT_EQ(*config.options.top_k, 16);
  EXPECT_EQ(config.options.label_window, 4);
  for (const char* bad :
       {R"({"decay": 1.5})", R"({"decay": "x"})", R"({"mode": "fast"})", R"({"top_k": -1})",
        R"({"top_k": 1.5})", R"({"colour": 1})", R"({"prior_strength": 0})", R"([1])"}) {
    auto v = ParseJson(bad);
    ASSERT_TRUE(v.ok());
    EstimatorConfig c;
    absl::Status s = ParseEstimatorConfig(*v, &c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("estimator"), absl::string_view::npos) << s;
  }
}

TEST(ReferenceSetTest, InformativeProbabilityMatchesClosedForm) {
  // Beta(1, 1), G = 2: E[p^2] = 1/3, so P(0 < successes < 2) = 1 - 2/3.
  EXPECT_NEAR(InformativeProbability(1, 1, 2), 1.0 / 3, 1e-12);
  // A near-certain p = 0.5 with G = 8: 1 - 2 * 0.5^8.
  EXPECT_NEAR(InformativeProbability(5e6, 5e6, 8), 1 - 2 * std::pow(0.5, 8), 1e-5);
  EXPECT_NEAR(InformativeProbability(1e-6, 1e6, 8), 0, 1e-5);
}

TEST(ReferenceSetTest, UniformAndInformativeDrawDistinctEligibleQuestions) {
  Pool pool = ClusteredPool(200, false);
  auto est = Estimator::Create(pool, nullptr, Options(EstimatorMode::kHistory));
  ASSERT_TRUE(est.ok());
  // Questions 0..99 observed: even ones at 4/8 repeatedly (informative), odd at 0/8.
  for (int rep = 0; rep < 5; ++rep) {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE((*est)->Observe(i, i % 2 == 0 ? 4 : 0, 8, 3).ok());
  }
  auto e = (*est)->Estimate(3);
  ASSERT_TRUE(e.ok());
  std::vector<uint8_t> excluded(200, 0);
  excluded[150] = 1;
  for (ReferenceSampling s : {ReferenceSampling::kUniform, ReferenceSampling::kInformative}) {
    ReferenceSamplingOptions o;
    o.strategy = s;
    auto refs = SampleReferenceSet(**est, *e, 40, o, excluded, 7);
    ASSERT_TRUE(refs.ok());
    ASSERT_EQ(refs->size(), 40u);
    std::vector<int64_t> sorted = *refs;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
    for (int64_t q : *refs) EXPECT_NE(q, 150);
    auto again = SampleReferenceSet(**est, *e, 40, o, excluded, 7);
    EXPECT_EQ(*again, *refs);  // deterministic per seed
  }
  // Informative: the coverage quarter (10) goes to never-observed questions (index >= 100); the
  // rest favours the informative even questions over the all-fail odd ones.
  ReferenceSamplingOptions o;
  auto refs = SampleReferenceSet(**est, *e, 40, o, excluded, 11);
  ASSERT_TRUE(refs.ok());
  for (int i = 0; i < 10; ++i) EXPECT_GE((*refs)[i], 100);
  int even_observed = 0, odd_observed = 0;
  for (int64_t q : *refs) {
    if (q < 100) (q % 2 == 0 ? even_observed : odd_observed)++;
  }
  EXPECT_GT(even_observed, 3 * odd_observed + 3);
  // Bad arguments.
  EXPECT_FALSE(SampleReferenceSet(**est, *e, -1, o, {}, 1).ok());
  EXPECT_FALSE(SampleReferenceSet(**est, *e, 4, o, std::vector<uint8_t>(3, 0), 1).ok());
}

}  // namespace
}  // namespace dots
