#include "core/estimation/probe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/util/random.h"

namespace dots {
namespace {

// N x D standard normal features whose true success rate is sigmoid(w . x + b).
struct Synthetic {
  FloatMatrix x;
  std::vector<float> truth;
};

Synthetic MakeSynthetic(int64_t n, int64_t d, uint64_t seed) {
  Rng rng(seed);
  Synthetic s{FloatMatrix(n, d), {}};
  std::vector<double> w(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) w[j] = (j % 3 == 0) ? 1.0 : (j % 3 == 1 ? -0.5 : 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double z = 0.3;
    for (int64_t j = 0; j < d; ++j) {
      // Box-Muller from two uniforms.
      const double u1 = rng.UniformOpen(), u2 = rng.UniformOpen();
      const double v = std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      s.x.row(i)[j] = static_cast<float>(2.0 * v + 5.0);  // off-centre, scaled: standardised away
      z += w[j] * v;
    }
    s.truth.push_back(static_cast<float>(1 / (1 + std::exp(-z))));
  }
  return s;
}

ProbeLabels AllLabels(const Synthetic& s) {
  ProbeLabels labels;
  for (int64_t i = 0; i < s.x.rows; ++i) {
    labels.questions.push_back(i);
    labels.rates.push_back(s.truth[i]);
    labels.weights.push_back(1.0f);
  }
  return labels;
}

double Pearson(const std::vector<float>& a, const std::vector<float>& b) {
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

TEST(ProbeTest, RecoversALogisticModelAndGeneralisesToUnlabelledRows) {
  const Synthetic s = MakeSynthetic(3000, 12, 7);
  ProbeLabels labels = AllLabels(s);
  // Train on the first 2000, predict the last 1000.
  labels.questions.resize(2000);
  labels.rates.resize(2000);
  labels.weights.resize(2000);
  ProbeOptions options;
  options.l2 = 1e-4;
  absl::StatusOr<Probe> probe = Probe::Train(s.x, Standardize(s.x), labels, options);
  ASSERT_TRUE(probe.ok()) << probe.status();
  std::vector<int64_t> held_out;
  std::vector<float> truth;
  for (int64_t i = 2000; i < 3000; ++i) {
    held_out.push_back(i);
    truth.push_back(s.truth[i]);
  }
  std::vector<float> predicted(held_out.size());
  ASSERT_TRUE(probe->Predict(s.x, held_out, absl::MakeSpan(predicted)).ok());
  EXPECT_GT(Pearson(predicted, truth), 0.995);
  double max_error = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    max_error = std::max(max_error, double{std::abs(predicted[i] - truth[i])});
  }
  EXPECT_LT(max_error, 0.03);
  EXPECT_GT(probe->training_loss(), 0.0);
}

TEST(ProbeTest, TrainingIsDeterministic) {
  const Synthetic s = MakeSynthetic(500, 8, 3);
  const Standardization z = Standardize(s.x);
  absl::StatusOr<Probe> a = Probe::Train(s.x, z, AllLabels(s), ProbeOptions());
  absl::StatusOr<Probe> b = Probe::Train(s.x, z, AllLabels(s), ProbeOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->weights(), b->weights());
  EXPECT_EQ(a->bias(), b->bias());
}

TEST(ProbeTest, ZeroWeightLabelsAreIgnoredAndWeightsScaleNothing) {
  const Synthetic s = MakeSynthetic(400, 6, 5);
  const Standardization z = Standardize(s.x);
  ProbeLabels half = AllLabels(s);
  half.questions.resize(200);
  half.rates.resize(200);
  half.weights.resize(200);
  ProbeLabels padded = half;
  for (int64_t i = 200; i < 400; ++i) {
    padded.questions.push_back(i);
    padded.rates.push_back(1.0f - s.truth[i]);  // contradicting labels, weight 0
    padded.weights.push_back(0.0f);
  }
  ProbeLabels scaled = half;
  for (float& w : scaled.weights) w = 3.0f;  // the objective divides by the total weight
  absl::StatusOr<Probe> a = Probe::Train(s.x, z, half, ProbeOptions());
  absl::StatusOr<Probe> b = Probe::Train(s.x, z, padded, ProbeOptions());
  absl::StatusOr<Probe> c = Probe::Train(s.x, z, scaled, ProbeOptions());
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (int j = 0; j < a->dim(); ++j) {
    EXPECT_NEAR(a->weights()[j], b->weights()[j], 1e-4);
    EXPECT_NEAR(a->weights()[j], c->weights()[j], 1e-4);
  }
}

TEST(ProbeTest, WarmStartFromTheOptimumStaysThere) {
  const Synthetic s = MakeSynthetic(600, 6, 11);
  const Standardization z = Standardize(s.x);
  ProbeOptions options;
  options.max_iterations = 200;
  absl::StatusOr<Probe> cold = Probe::Train(s.x, z, AllLabels(s), options);
  ASSERT_TRUE(cold.ok());
  options.max_iterations = 3;
  absl::StatusOr<Probe> warm = Probe::Train(s.x, z, AllLabels(s), options, &*cold);
  ASSERT_TRUE(warm.ok());
  for (int j = 0; j < cold->dim(); ++j) EXPECT_NEAR(warm->weights()[j], cold->weights()[j], 1e-4);
  // A cold start with 3 iterations is far from it: the warm start is what carried the fit.
  absl::StatusOr<Probe> short_cold = Probe::Train(s.x, z, AllLabels(s), options);
  ASSERT_TRUE(short_cold.ok());
  double gap = 0;
  for (int j = 0; j < cold->dim(); ++j) {
    gap = std::max(gap, double{std::abs(short_cold->weights()[j] - cold->weights()[j])});
  }
  EXPECT_GT(gap, 1e-3);
}

TEST(ProbeTest, AConstantDimensionIsIgnored) {
  Synthetic s = MakeSynthetic(300, 4, 13);
  FloatMatrix wide(300, 5);
  for (int64_t i = 0; i < 300; ++i) {
    for (int j = 0; j < 4; ++j) wide.row(i)[j] = s.x.row(i)[j];
    wide.row(i)[4] = 42.0f;
  }
  const Standardization z = Standardize(wide);
  EXPECT_EQ(z.inv_std[4], 0.0f);
  absl::StatusOr<Probe> probe = Probe::Train(wide, z, AllLabels(s), ProbeOptions());
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(probe->weights()[4], 0.0f);
}

TEST(ProbeTest, BadLabelsAndOptionsAreRejected) {
  const Synthetic s = MakeSynthetic(50, 3, 17);
  const Standardization z = Standardize(s.x);
  auto train = [&](ProbeLabels labels, ProbeOptions options = ProbeOptions()) {
    return Probe::Train(s.x, z, labels, options).status();
  };
  ProbeLabels bad = AllLabels(s);
  bad.rates[3] = 1.5f;
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  EXPECT_NE(train(bad).message().find("labels[3]"), std::string::npos);
  bad = AllLabels(s);
  bad.rates[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  bad = AllLabels(s);
  bad.questions[0] = 50;
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  bad = AllLabels(s);
  bad.weights[1] = -1;
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  bad = AllLabels(s);
  for (float& w : bad.weights) w = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  bad = AllLabels(s);
  bad.weights.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(train(bad)));
  ProbeOptions options;
  options.l2 = -1;
  EXPECT_TRUE(absl::IsInvalidArgument(train(AllLabels(s), options)));
  EXPECT_NE(train(AllLabels(s), options).message().find("estimator.model.l2"), std::string::npos);
  options = ProbeOptions();
  options.max_iterations = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(train(AllLabels(s), options)));
}

TEST(ProbeTest, FromParametersValidatesAndPredictsLikeTheTrainedProbe) {
  const Synthetic s = MakeSynthetic(200, 5, 19);
  absl::StatusOr<Probe> trained = Probe::Train(s.x, Standardize(s.x), AllLabels(s), ProbeOptions());
  ASSERT_TRUE(trained.ok());
  absl::StatusOr<Probe> copy =
      Probe::FromParameters(trained->standardization(), trained->weights(), trained->bias());
  ASSERT_TRUE(copy.ok());
  std::vector<float> a(200), b(200);
  ASSERT_TRUE(trained->PredictAll(s.x, absl::MakeSpan(a)).ok());
  ASSERT_TRUE(copy->PredictAll(s.x, absl::MakeSpan(b)).ok());
  EXPECT_EQ(a, b);
  std::vector<float> weights = trained->weights();
  weights[0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(absl::IsInvalidArgument(
      Probe::FromParameters(trained->standardization(), weights, 0).status()));
  weights.pop_back();
  EXPECT_TRUE(absl::IsInvalidArgument(
      Probe::FromParameters(trained->standardization(), weights, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Probe().PredictAll(s.x, absl::MakeSpan(a))));
}

}  // namespace
}  // namespace dots
