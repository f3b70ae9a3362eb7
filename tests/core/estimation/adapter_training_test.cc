#include "core/estimation/adapter_training.h"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_eval.h"
#include "core/estimation/adapter_model.h"
#include "core/estimation/similarity.h"
#include "core/formats/safetensors.h"
#include "core/util/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Questions in 6 topics; a topic's questions share a success rate (source 0) and look alike
// (a topic centre plus noise, with a shared offset and a large nuisance dimension, like mean-
// pooled LLM states). Source 1 labels the same questions with 1 - rate.
struct Synthetic {
  FloatMatrix embeddings;
  std::vector<float> rate;  // source 0's rate per row
};

Synthetic MakeSynthetic(int64_t n, int d, uint64_t seed) {
  constexpr int kTopics = 6;
  const float topic_rate[kTopics] = {0.05f, 0.2f, 0.4f, 0.6f, 0.8f, 0.95f};
  Rng rng(seed);
  auto normal = [&] {
    return static_cast<float>(std::sqrt(-2 * std::log(rng.UniformOpen())) *
                              std::cos(2 * M_PI * rng.UniformOpen()));
  };
  std::vector<float> centres(kTopics * d), offset(d);
  for (float& c : centres) c = normal();
  for (float& o : offset) o = 2 * normal();
  Synthetic s;
  s.embeddings = FloatMatrix(n, d);
  for (int64_t i = 0; i < n; ++i) {
    const int topic = static_cast<int>(rng.Below(kTopics));
    for (int c = 0; c < d; ++c) {
      s.embeddings.row(i)[c] = offset[c] + centres[topic * d + c] + 0.6f * normal();
    }
    s.embeddings.row(i)[0] *= 20;  // a nuisance dimension the input LayerNorm must live with
    s.rate.push_back(topic_rate[topic]);
  }
  return s;
}

std::vector<AdapterLabel> Labels(const Synthetic& s, int64_t begin, int64_t end, bool flipped) {
  std::vector<AdapterLabel> labels;
  for (int64_t i = begin; i < end; ++i) {
    labels.push_back({i, s.rate[i], 1.0f, 0});
    if (flipped) labels.push_back({i, 1.0f - s.rate[i], 1.0f, 1});
  }
  return labels;
}

AdapterTrainingOptions SmallOptions() {
  AdapterTrainingOptions o;
  o.epochs = 8;
  o.batch_size = 16;
  o.ref_size = 32;
  o.hidden_size = 24;
  o.num_layers = 2;
  o.learning_rate = 3e-3;
  return o;
}

std::string Bytes(const SafeTensorsFile& f) {
  absl::StatusOr<std::string> bytes = SerializeSafeTensors(f);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

TEST(LinearWarmupDecayTest, MatchesTheTransformersSchedule) {
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(1.0, 0, 1000, 100), 0.0);
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(1.0, 50, 1000, 100), 0.5);
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(1.0, 100, 1000, 100), 1.0);
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(1.0, 550, 1000, 100), 0.5);
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(1.0, 1000, 1000, 100), 0.0);
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(2.0, 0, 4, 0), 2.0);  // no warm-up: full rate at step 0
  EXPECT_DOUBLE_EQ(LinearWarmupDecay(2.0, 3, 4, 0), 0.5);
}

TEST(AdapterToTensorsTest, RoundTripsEveryHead) {
  for (CalibrationHead head : {CalibrationHead::kGroupLogitTemp, CalibrationHead::kPlatt,
                               CalibrationHead::kTemperature, CalibrationHead::kPlain}) {
    SafeTensorsFile file = MakeRandomAdapterTensors(12, 8, 3, head, 5);
    file.metadata["tau"] = "0.3";
    file.metadata["top_k"] = "4";
    file.metadata["label"] = "failure_rate";
    auto a = Adapter::FromTensors(file, "a");
    ASSERT_TRUE(a.ok()) << a.status();
    auto tensors = (*a)->ToTensors();
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    for (const auto& [name, t] : file.tensors) {
      const SafeTensor* back = tensors->Find(name);
      ASSERT_NE(back, nullptr) << name;
      EXPECT_EQ(back->shape, t.shape) << name;
      EXPECT_EQ(back->values, t.values) << name;
    }
    EXPECT_EQ(tensors->tensors.size(), file.tensors.size());
    auto b = Adapter::FromTensors(*tensors, "b");
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->tau(), 0.3f);
    EXPECT_EQ((*b)->top_k(), 4);
    EXPECT_TRUE((*b)->labels_are_failure_rate());
    EXPECT_EQ((*b)->head(), head);
    EXPECT_EQ((*b)->Calibrate(0.3, 0.4, 0.2), (*a)->Calibrate(0.3, 0.4, 0.2));
  }
  EXPECT_EQ(Adapter::Identity(4)->ToTensors().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The training forward pass (dropout off) and the inference path (SimilarityScorer + Calibrate)
// compute the same predictions: the BCE of the inference predictions equals the training loss.
TEST(TrainableAdapterTest, ForwardMatchesInference) {
  const Synthetic s = MakeSynthetic(60, 10, 3);
  auto model = TrainableAdapter::FromTensors(
      MakeRandomAdapterTensors(10, 16, 3, CalibrationHead::kGroupLogitTemp, 9), "m");
  ASSERT_TRUE(model.ok()) << model.status();
  AdapterBatch batch;
  batch.ref_sets = {{0, 3, 5, 8, 13, 21, 34, 55}};
  batch.contexts = {{0, {0.1f, 0.5f, 0.9f, 0.3f, 0.3f, 0.7f, 1.0f, 0.0f}}};
  for (int64_t q = 40; q < 50; ++q) {
    batch.query_rows.push_back(q);
    batch.targets.push_back(static_cast<float>(q % 5) / 4);
    batch.weights.push_back(1);
    batch.query_context.push_back(0);
  }
  std::vector<std::vector<float>> grads;
  auto loss = model->LossAndGradients(s.embeddings, batch, {}, &grads);
  ASSERT_TRUE(loss.ok()) << loss.status();

  auto adapter = Adapter::FromTensors(model->ToTensors(), "m");
  ASSERT_TRUE(adapter.ok());
  auto scorer = SimilarityScorer::Create(*adapter, s.embeddings);
  ASSERT_TRUE(scorer.ok());
  std::vector<float> base(10);
  ASSERT_TRUE((*scorer)
                  ->PredictSubset(batch.query_rows, batch.ref_sets[0], batch.contexts[0].labels,
                                  {.tau = 1.0f}, absl::MakeSpan(base))
                  .ok());
  const LabelStats stats = ComputeLabelStats(batch.contexts[0].labels);
  double bce = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double p = (*adapter)->Calibrate(base[i], stats.mean, stats.std);
    const double y = batch.targets[i];
    bce -= (y * std::log(p) + (1 - y) * std::log(1 - p)) / base.size();
  }
  EXPECT_NEAR(*loss, bce, 1e-5 * bce);
  EXPECT_EQ(grads.size(), model->parameters().size());
}

TEST(AdapterTrainingTest, LearnsAndWritesAFileThatLoadsAndPredictsTheSame) {
  const Synthetic s = MakeSynthetic(400, 16, 1);
  const std::vector<AdapterLabel> labels = Labels(s, 0, 300, false);
  std::vector<double> steps_seen;
  auto result = TrainAdapter(s.embeddings, labels, nullptr, SmallOptions(), 42,
                             [&](const AdapterTrainingProgress& p) {
                               steps_seen.push_back(static_cast<double>(p.step));
                               return true;
                             });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 8 * ((300 + 15) / 16));
  EXPECT_EQ(steps_seen.size(), static_cast<size_t>(result->steps));
  ASSERT_EQ(result->epoch_losses.size(), 8u);
  // The lowest reachable BCE is the labels' own entropy; training closes most of the gap.
  double entropy = 0;
  for (const AdapterLabel& l : labels) {
    entropy -= (l.rate * std::log(l.rate) + (1 - l.rate) * std::log(1 - l.rate)) / labels.size();
  }
  const double first = result->epoch_losses.front(), last = result->epoch_losses.back();
  EXPECT_LT(last - entropy, 0.5 * (first - entropy)) << first << " -> " << last;
  EXPECT_GT(result->flops, 0);

  // Held-out questions 300..399 by the paper protocol: the trained adapter beats the identity.
  HeldOutSet set{"held-out", {}, {}};
  for (int64_t i = 300; i < 400; ++i) {
    set.rows.push_back(i);
    set.rates.push_back(s.rate[i]);
  }
  PaperProtocolOptions eval;
  eval.ref_size = 32;
  auto trained = EvaluatePaperProtocol(result->adapter, s.embeddings, set, eval);
  auto identity = EvaluatePaperProtocol(Adapter::Identity(16), s.embeddings, set, eval);
  ASSERT_TRUE(trained.ok() && identity.ok());
  EXPECT_GT(trained->pearson, 0.9) << "identity: " << identity->pearson;
  EXPECT_GT(trained->pearson, identity->pearson);

  // The file: Adapter::Load reads it back to the same predictions, bit for bit.
  const std::string path = ::testing::TempDir() + "/trained.safetensors";
  ASSERT_TRUE(WriteSafeTensors(path, result->tensors).ok());
  auto loaded = Adapter::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->num_layers(), 2);
  EXPECT_EQ((*loaded)->output_dim(), 24);
  EXPECT_EQ((*loaded)->head(), CalibrationHead::kGroupLogitTemp);
  FloatMatrix a, b;
  result->adapter->ProjectQuery(s.embeddings, &a);
  (*loaded)->ProjectQuery(s.embeddings, &b);
  EXPECT_EQ(a.data, b.data);
  result->adapter->ProjectRef(s.embeddings, &a);
  (*loaded)->ProjectRef(s.embeddings, &b);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ((*loaded)->Calibrate(0.3, 0.5, 0.2), result->adapter->Calibrate(0.3, 0.5, 0.2));
  auto reread = ReadSafeTensors(path);
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(Bytes(*reread), Bytes(result->tensors));
  EXPECT_EQ(reread->metadata.at("scaling"), "group_logit_temp");
  EXPECT_EQ(reread->metadata.at("num_layers"), "2");
  EXPECT_EQ(reread->metadata.at("hidden_size"), "24");
  EXPECT_EQ(reread->metadata.at("label"), "success_rate");
  std::remove(path.c_str());
}

// Each query takes its references' labels from its own source: two sources with opposite
// labels on the same questions are learned as well as one.
TEST(AdapterTrainingTest, ReferencesComeFromTheQuerysSource) {
  const Synthetic s = MakeSynthetic(300, 16, 2);
  auto one = TrainAdapter(s.embeddings, Labels(s, 0, 300, false), nullptr, SmallOptions(), 7);
  auto two = TrainAdapter(s.embeddings, Labels(s, 0, 300, true), nullptr, SmallOptions(), 7);
  ASSERT_TRUE(one.ok() && two.ok());
  // Labels mixed across sources would leave the flipped source unpredictable: its BCE could
  // not fall below that of predicting 0.5, about 0.69 plus the label entropy (~0.4 here).
  EXPECT_LT(two->epoch_losses.back(), one->epoch_losses.back() + 0.05);
  EXPECT_LT(two->epoch_losses.back(), 0.55);
}

// Sizes large enough that OpenBLAS splits the GEMMs across threads.
TEST(AdapterTrainingTest, DeterministicForASeedAndAcrossThreadCounts) {
  const Synthetic s = MakeSynthetic(300, 128, 4);
  const std::vector<AdapterLabel> labels = Labels(s, 0, 300, true);
  AdapterTrainingOptions options = SmallOptions();
  options.epochs = 1;
  options.batch_size = 128;
  options.ref_size = 128;
  options.hidden_size = 256;
  options.threads = 1;
  auto a = TrainAdapter(s.embeddings, labels, nullptr, options, 11);
  options.threads = 2;
  auto b = TrainAdapter(s.embeddings, labels, nullptr, options, 11);
  auto c = TrainAdapter(s.embeddings, labels, nullptr, options, 12);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(Bytes(a->tensors), Bytes(b->tensors));
  EXPECT_EQ(a->mean_loss, b->mean_loss);
  EXPECT_NE(Bytes(a->tensors), Bytes(c->tensors));
}

TEST(AdapterTrainingTest, WarmStartKeepsArchitectureMetadataAndStartsFromTheWeights) {
  const Synthetic s = MakeSynthetic(100, 12, 5);
  SafeTensorsFile file = MakeRandomAdapterTensors(12, 8, 1, CalibrationHead::kGroupLogitTemp, 3);
  file.metadata["label"] = "failure_rate";
  file.metadata["tau"] = "0.5";
  auto start = Adapter::FromTensors(file, "start");
  ASSERT_TRUE(start.ok());
  const std::string before = Bytes(*(*start)->ToTensors());

  AdapterTrainingOptions options = SmallOptions();
  options.hidden_size.reset();
  options.num_layers.reset();
  options.epochs = 1;
  options.learning_rate = 0;  // Adam with lr 0 leaves every weight exactly where it was
  auto still = TrainAdapter(s.embeddings, Labels(s, 0, 100, false), *start, options, 1);
  ASSERT_TRUE(still.ok()) << still.status();
  for (const auto& [name, t] : file.tensors) {
    EXPECT_EQ(still->tensors.Find(name)->values, t.values) << name;
  }
  EXPECT_EQ(still->tensors.metadata.at("label"), "failure_rate");
  EXPECT_EQ(still->tensors.metadata.at("tau"), "0.5");
  EXPECT_EQ(still->tensors.metadata.at("num_layers"), "1");

  options.learning_rate = 1e-3;
  auto moved = TrainAdapter(s.embeddings, Labels(s, 0, 100, false), *start, options, 1);
  ASSERT_TRUE(moved.ok());
  EXPECT_NE(Bytes(moved->tensors), Bytes(still->tensors));
  EXPECT_EQ(Bytes(*(*start)->ToTensors()), before);  // the caller's adapter is untouched

  options.num_layers = 3;
  EXPECT_THAT(
      TrainAdapter(s.embeddings, Labels(s, 0, 100, false), *start, options, 1).status().message(),
      HasSubstr("num_layers: 3, but the start adapter has 1"));
}

TEST(AdapterTrainingTest, NonFiniteLossAbortsNamingTheStepAndLeavesTheStartAlone) {
  const Synthetic s = MakeSynthetic(100, 12, 6);
  SafeTensorsFile file = MakeRandomAdapterTensors(12, 8, 2, CalibrationHead::kGroupLogitTemp, 3);
  auto start = Adapter::FromTensors(file, "start");
  ASSERT_TRUE(start.ok());
  const std::string before = Bytes(*(*start)->ToTensors());
  AdapterTrainingOptions options = SmallOptions();
  options.hidden_size.reset();
  options.num_layers.reset();
  options.learning_rate = 1e38;  // the first update sends the weights to infinity
  options.lr_schedule = false;
  auto diverged = TrainAdapter(s.embeddings, Labels(s, 0, 100, false), *start, options, 1);
  ASSERT_FALSE(diverged.ok());
  EXPECT_EQ(diverged.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(diverged.status().message(),
              AllOf(HasSubstr("non-finite"), HasSubstr("at step 2 of"), HasSubstr("epoch 1")));
  EXPECT_EQ(Bytes(*(*start)->ToTensors()), before);
}

TEST(AdapterTrainingTest, CancelledByTheCallback) {
  const Synthetic s = MakeSynthetic(100, 12, 6);
  auto r = TrainAdapter(s.embeddings, Labels(s, 0, 100, false), nullptr, SmallOptions(), 1,
                        [](const AdapterTrainingProgress& p) { return p.step < 3; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.status().message(), HasSubstr("at step 3 of"));
}

TEST(AdapterTrainingTest, RejectsBadInputNamingIt) {
  const Synthetic s = MakeSynthetic(50, 8, 8);
  auto message = [&](std::vector<AdapterLabel> labels, AdapterTrainingOptions options = {},
                     std::shared_ptr<const Adapter> start = nullptr) {
    options.hidden_size = options.hidden_size.value_or(8);
    auto r = TrainAdapter(s.embeddings, labels, start, options, 1);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    return std::string(r.status().message());
  };
  const std::vector<AdapterLabel> good = Labels(s, 0, 10, false);
  auto with = [&](size_t i, AdapterLabel l) {
    std::vector<AdapterLabel> v = good;
    v[i] = l;
    return v;
  };
  EXPECT_THAT(message(with(3, {50, 0.5f, 1, 0})), HasSubstr("labels[3]: row 50 outside"));
  EXPECT_THAT(message(with(2, {2, std::nanf(""), 1, 0})), HasSubstr("labels[2]: rate nan"));
  EXPECT_THAT(message(with(2, {2, 1.5f, 1, 0})), HasSubstr("labels[2]: rate 1.5 outside [0, 1]"));
  EXPECT_THAT(message(with(4, {4, 0.5f, -1, 0})), HasSubstr("labels[4]: weight -1"));
  EXPECT_THAT(message(with(4, {4, 0.5f, 1, -2})), HasSubstr("labels[4]: source -2"));
  EXPECT_THAT(message(with(5, {3, 0.5f, 1, 0})), HasSubstr("row 3 is labeled twice by source 0"));
  EXPECT_THAT(message({{1, 0.5f, 1, 0}, {2, 0.5f, 1, 1}}), HasSubstr("nothing to train on"));
  std::vector<AdapterLabel> zero = good;
  for (AdapterLabel& l : zero) l.weight = 0;
  EXPECT_THAT(message(zero), HasSubstr("nothing to train on"));
  AdapterTrainingOptions bad;
  bad.batch_size = 0;
  EXPECT_THAT(message(good, bad), HasSubstr("batch_size: 0 is not >= 1"));
  bad = {};
  bad.dropout = 1;
  EXPECT_THAT(message(good, bad), HasSubstr("dropout: 1 is not in [0, 1)"));
  EXPECT_THAT(message(good, {}, Adapter::Identity(8)), HasSubstr("identity projection"));
  auto wide = Adapter::FromTensors(
      MakeRandomAdapterTensors(9, 8, 1, CalibrationHead::kGroupLogitTemp, 1), "wide");
  EXPECT_THAT(message(good, {}, *wide),
              HasSubstr("input dimension 9, the embeddings have dimension 8"));
  auto platt =
      Adapter::FromTensors(MakeRandomAdapterTensors(8, 8, 1, CalibrationHead::kPlatt, 1), "platt");
  EXPECT_THAT(message(good, {}, *platt), HasSubstr("only group_logit_temp"));
  FloatMatrix broken = s.embeddings;
  broken.row(4)[2] = std::nanf("");
  auto r = TrainAdapter(broken, good, nullptr, {}, 1);
  EXPECT_THAT(r.status().message(), HasSubstr("embeddings: row 4 column 2 is not finite"));
}

TEST(AdapterTrainingTest, SourcesWithOneLabelAreSkipped) {
  const Synthetic s = MakeSynthetic(60, 8, 9);
  std::vector<AdapterLabel> labels = Labels(s, 0, 40, false);
  labels.push_back({41, 0.5f, 1, 7});  // a source with a single label: no references possible
  AdapterTrainingOptions options = SmallOptions();
  options.epochs = 1;
  auto trainer = AdapterTrainer::Create(s.embeddings, labels, nullptr, options, 1);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->skipped_labels(), 1);
  EXPECT_EQ((*trainer)->examples_per_epoch(), 40);
  EXPECT_EQ((*trainer)->steps_per_epoch(), 3);
  ASSERT_TRUE((*trainer)->RunEpoch().ok());
  EXPECT_EQ((*trainer)->RunEpoch().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PredictionMetricsTest, IntervalPrecisionAndPearson) {
  // 8 questions: B = 4 predictions closest to 0.5 are the first four; truths 2 of 4 inside.
  const std::vector<double> pred = {0.5, 0.45, 0.6, 0.4, 0.9, 0.05, 0.99, 0.0};
  const std::vector<double> truth = {0.5, 0.0, 1.0, 0.125, 0.875, 0.3, 1.0, 0.0};
  const PredictionMetrics m = ComputePredictionMetrics(pred, truth);
  EXPECT_EQ(m.count, 8);
  EXPECT_DOUBLE_EQ(m.interval_precision, 0.5);
  EXPECT_DOUBLE_EQ(m.interval_base_rate, 4.0 / 8);
  EXPECT_NEAR(ComputePredictionMetrics(truth, truth).pearson, 1.0, 1e-12);
  EXPECT_EQ(ComputePredictionMetrics({0.5, 0.5, 0.5}, {0.1, 0.2, 0.3}).pearson, 0.0);
}

}  // namespace
}  // namespace dots
