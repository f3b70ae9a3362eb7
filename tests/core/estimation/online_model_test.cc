#include "core/estimation/online_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/estimation/estimator.h"
#include "core/formats/pool.h"
#include "core/util/random.h"

namespace dots {
namespace {

// A pool whose success rates follow a logistic model of its `dim`-dimensional embeddings, of
// which the first three dimensions raise the rate and the next three lower it.
struct World {
  Pool pool;
  std::vector<double> truth;
};

World MakeWorld(int64_t n, uint64_t seed, int dim = 6) {
  Rng rng(seed);
  World w;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> x(static_cast<size_t>(dim));
    double z = -0.2;
    for (int j = 0; j < dim; ++j) {
      x[j] = static_cast<float>(rng.UniformOpen() * 2 - 1);
      z += (j < 3 ? 2.5 : j < 6 ? -1.0 : 0.0) * x[j];
    }
    Question q;
    q.key = absl::StrCat("q", i);
    EXPECT_TRUE(w.pool.Add(q, x).ok());
    w.truth.push_back(1 / (1 + std::exp(-z)));
  }
  return w;
}

// Observes questions [begin, end) once at `version`, with round(8 p) successes.
void Observe(Estimator& e, const World& w, int64_t begin, int64_t end, int64_t version) {
  for (int64_t q = begin; q < end; ++q) {
    ASSERT_TRUE(e.Observe(q, std::round(8 * w.truth[q]), 8, version).ok());
  }
}

double Pearson(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= a.size();
  mb /= b.size();
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

TEST(OnlineModelTest, LearnsFromHistoriesAndKeepsOutOfFoldPredictions) {
  const World w = MakeWorld(2000, 3);
  auto e = Estimator::Create(w.pool, nullptr, EstimatorOptions());
  ASSERT_TRUE(e.ok());
  Observe(**e, w, 0, 600, 0);
  OnlineModelOptions options;
  absl::StatusOr<OnlineModel> model =
      TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 1, options, nullptr);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->version, 1);
  EXPECT_EQ(model->labels, 600);
  EXPECT_EQ(model->oof_questions.size(), 600u);
  EXPECT_TRUE(std::isnan(model->out_of_sample_pearson));  // no previous model
  // Unobserved questions: the probe predicts them well.
  std::vector<float> all(2000);
  ASSERT_TRUE(model->probe.PredictAll(w.pool.embeddings(), absl::MakeSpan(all)).ok());
  std::vector<double> predicted, truth;
  for (int64_t q = 600; q < 2000; ++q) {
    predicted.push_back(all[q]);
    truth.push_back(w.truth[q]);
  }
  EXPECT_GT(Pearson(predicted, truth), 0.95);
  // Out-of-fold predictions of the labels differ from the in-sample ones, yet track the truth.
  double differ = 0;
  std::vector<double> oof, oof_truth;
  for (size_t i = 0; i < model->oof_questions.size(); ++i) {
    const int64_t q = model->oof_questions[i];
    differ += std::abs(model->oof_predictions[i] - all[q]);
    EXPECT_EQ(model->StackFeature(q, all), model->oof_predictions[i]);
    oof.push_back(model->oof_predictions[i]);
    oof_truth.push_back(w.truth[q]);
  }
  EXPECT_GT(differ, 1e-3);
  EXPECT_GT(Pearson(oof, oof_truth), 0.9);
  EXPECT_EQ(model->StackFeature(1500, all), all[1500]);

  // The next training scores this model on what was observed since: out of sample.
  Observe(**e, w, 600, 900, 2);
  absl::StatusOr<OnlineModel> next =
      TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 3, options, &*model);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->version, 2);
  EXPECT_EQ(next->out_of_sample_labels, 300);
  EXPECT_GT(next->out_of_sample_pearson, 0.9);
}

TEST(OnlineModelTest, DeterministicAndBoundedToTheMostRecentLabels) {
  const World w = MakeWorld(500, 5);
  auto e = Estimator::Create(w.pool, nullptr, EstimatorOptions());
  ASSERT_TRUE(e.ok());
  Observe(**e, w, 0, 200, 0);
  Observe(**e, w, 200, 300, 4);
  OnlineModelOptions options;
  options.max_labels = 100;
  auto a = TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 5, options, nullptr);
  auto b = TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 5, options, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->probe.weights(), b->probe.weights());
  EXPECT_EQ(a->oof_predictions, b->oof_predictions);
  // Only the 100 observed at version 4.
  ASSERT_EQ(a->oof_questions.size(), 100u);
  EXPECT_EQ(a->oof_questions.front(), 200);
  EXPECT_EQ(a->oof_questions.back(), 299);
}

TEST(OnlineModelTest, TooFewLabelsAndBadOptionsAreErrors) {
  const World w = MakeWorld(100, 7);
  auto e = Estimator::Create(w.pool, nullptr, EstimatorOptions());
  ASSERT_TRUE(e.ok());
  Observe(**e, w, 0, 10, 0);
  OnlineModelOptions options;
  EXPECT_TRUE(absl::IsFailedPrecondition(
      TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 1, options, nullptr).status()));
  options.label_decay = 0;
  absl::Status bad =
      TrainOnlineModel(w.pool.embeddings(), (*e)->histories(), 1, options, nullptr).status();
  EXPECT_TRUE(absl::IsInvalidArgument(bad));
  EXPECT_NE(bad.message().find("estimator.model.label_decay"), std::string::npos);
}

TEST(OnlineModelTest, TheEstimatorStacksTheModelAndPredictsUnseenQuestionsBetter) {
  // 40 dimensions of which 6 matter: nearest neighbours by cosine are mostly noise, a probe is
  // not.
  const World w = MakeWorld(3000, 11, 40);
  auto without = Estimator::Create(w.pool, nullptr, EstimatorOptions());
  auto with = Estimator::Create(w.pool, nullptr, EstimatorOptions());
  ASSERT_TRUE(without.ok() && with.ok());
  Observe(**without, w, 0, 400, 0);
  Observe(**with, w, 0, 400, 0);
  auto model =
      TrainOnlineModel(w.pool.embeddings(), (*with)->histories(), 1, OnlineModelOptions(), nullptr);
  ASSERT_TRUE(model.ok());
  auto predictions = std::make_shared<std::vector<float>>(3000);
  ASSERT_TRUE(model->probe.PredictAll(w.pool.embeddings(), absl::MakeSpan(*predictions)).ok());
  ASSERT_TRUE(
      (*with)->SetOnlineModel(std::make_shared<const OnlineModel>(*model), predictions).ok());
  auto a = (*without)->Estimate(1);
  auto b = (*with)->Estimate(1);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<double> pa, pb, truth;
  for (int64_t q = 400; q < 3000; ++q) {
    pa.push_back(a->p_hat[q]);
    pb.push_back(b->p_hat[q]);
    truth.push_back(w.truth[q]);
  }
  EXPECT_GT(Pearson(pb, truth), Pearson(pa, truth) + 0.05);
  EXPECT_GT(Pearson(pb, truth), 0.85);
  // A model whose predictions do not cover the pool is refused and the old one kept.
  EXPECT_TRUE(absl::IsInvalidArgument((*with)->SetOnlineModel(
      std::make_shared<const OnlineModel>(*model), std::make_shared<std::vector<float>>(10))));
  EXPECT_NE((*with)->online_model(), nullptr);
}

}  // namespace
}  // namespace dots
