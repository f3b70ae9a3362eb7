#include "core/estimation/adapter_online.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_eval.h"
#include "core/util/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::HasSubstr;

QuestionHistory Observed(double successes, double failures, int64_t version, double last_rate) {
  QuestionHistory h;
  h.successes = successes;
  h.failures = failures;
  h.last_version = version;
  h.last_rate = last_rate;
  h.observations = 1;
  return h;
}

TEST(OnlineAdapterLabelsTest, MostRecentDecayedRatesWeightedByAge) {
  std::vector<QuestionHistory> histories(6);  // 0, 4: never observed
  histories[1] = Observed(2, 6, /*version=*/3, 0.25);
  histories[2] = Observed(0, 0, /*version=*/5, 0.5);  // counts decayed away: its latest rate
  histories[3] = Observed(6, 2, /*version=*/5, 0.75);
  histories[5] = Observed(1, 1, /*version=*/1, 0.5);
  AdapterOnlineOptions options;
  options.max_labels = 3;
  options.label_decay = 0.5;
  const std::vector<AdapterLabel> labels = OnlineAdapterLabels(histories, 5, options);
  ASSERT_EQ(labels.size(), 3u);  // question 5, the oldest, is left out
  EXPECT_EQ(labels[0].row, 1);
  EXPECT_FLOAT_EQ(labels[0].rate, 0.25f);
  EXPECT_FLOAT_EQ(labels[0].weight, 0.25f);  // two versions old
  EXPECT_EQ(labels[1].row, 2);
  EXPECT_FLOAT_EQ(labels[1].rate, 0.5f);
  EXPECT_FLOAT_EQ(labels[1].weight, 1.0f);
  EXPECT_EQ(labels[2].row, 3);
  EXPECT_FLOAT_EQ(labels[2].rate, 0.75f);
  for (const AdapterLabel& l : labels) EXPECT_EQ(l.source, 0);
}

TEST(AdapterOnlineOptionsTest, ValidateNamesTheField) {
  struct Case {
    void (*mutate)(AdapterOnlineOptions*);
    std::string field;
  };
  for (const Case& c :
       std::vector<Case>{{[](AdapterOnlineOptions* o) { o->epochs = 0; }, "epochs"},
                         {[](AdapterOnlineOptions* o) { o->learning_rate = NAN; }, "learning_rate"},
                         {[](AdapterOnlineOptions* o) { o->batch_size = 0; }, "batch_size"},
                         {[](AdapterOnlineOptions* o) { o->ref_size = 0; }, "ref_size"},
                         {[](AdapterOnlineOptions* o) { o->min_labels = 1; }, "min_labels"},
                         {[](AdapterOnlineOptions* o) { o->max_labels = 4; }, "max_labels"},
                         {[](AdapterOnlineOptions* o) { o->label_decay = 1.5; }, "label_decay"},
                         {[](AdapterOnlineOptions* o) { o->hidden_size = 0; }, "hidden_size"},
                         {[](AdapterOnlineOptions* o) { o->num_layers = 40; }, "num_layers"}}) {
    AdapterOnlineOptions options;
    c.mutate(&options);
    const absl::Status s = options.Validate();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.field;
    EXPECT_THAT(s.message(), HasSubstr("estimator.adapter_training." + c.field));
  }
  EXPECT_TRUE(AdapterOnlineOptions().Validate().ok());
}

// Questions of 4 topics that share a success rate and look alike; the first `observed` carry a
// history at version 2 with 8 rollouts of that rate.
struct Topics {
  FloatMatrix embeddings;
  std::vector<float> rate;
  std::vector<QuestionHistory> histories;
};

Topics MakeTopics(int64_t n, int d, int64_t observed) {
  const float topic_rate[4] = {0.125f, 0.375f, 0.625f, 0.875f};
  Rng rng(7);
  auto normal = [&] {
    return static_cast<float>(std::sqrt(-2 * std::log(rng.UniformOpen())) *
                              std::cos(2 * M_PI * rng.UniformOpen()));
  };
  std::vector<float> centres(4 * d);
  for (float& c : centres) c = normal();
  Topics t;
  t.embeddings = FloatMatrix(n, d);
  t.histories.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int topic = static_cast<int>(rng.Below(4));
    for (int c = 0; c < d; ++c) t.embeddings.row(i)[c] = centres[topic * d + c] + 0.5f * normal();
    t.rate.push_back(topic_rate[topic]);
    if (i < observed) {
      t.histories[i] =
          Observed(8 * topic_rate[topic], 8 * (1 - topic_rate[topic]), 2, topic_rate[topic]);
    }
  }
  return t;
}

AdapterOnlineOptions SmallOnline() {
  AdapterOnlineOptions o;
  o.enabled = true;
  o.epochs = 6;
  o.batch_size = 16;
  o.ref_size = 32;
  o.learning_rate = 3e-3;
  o.hidden_size = 24;
  o.num_layers = 2;
  return o;
}

TEST(TrainAdapterOnlineTest, LearnsFromTheRunsOutcomesAndPredictsUnseenQuestions) {
  const Topics t = MakeTopics(300, 12, 200);
  auto result = TrainAdapterOnline(t.embeddings, t.histories, 2, nullptr, SmallOnline(), 11);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->examples_per_epoch, 200);
  EXPECT_EQ(result->tensors.metadata.at("trained_online_at_policy_version"), "2");
  // Questions never observed (200..299), predicted as paper mode does.
  HeldOutSet unseen{"unseen", {}, {}};
  for (int64_t i = 200; i < 300; ++i) {
    unseen.rows.push_back(i);
    unseen.rates.push_back(t.rate[i]);
  }
  PaperProtocolOptions eval;
  eval.ref_size = 32;
  auto trained = EvaluatePaperProtocol(result->adapter, t.embeddings, unseen, eval);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_GT(trained->pearson, 0.8);

  // Deterministic for a seed; another seed gives other weights. An identity start is fresh
  // weights, like none.
  auto again =
      TrainAdapterOnline(t.embeddings, t.histories, 2, Adapter::Identity(12), SmallOnline(), 11);
  auto other = TrainAdapterOnline(t.embeddings, t.histories, 2, nullptr, SmallOnline(), 12);
  ASSERT_TRUE(again.ok() && other.ok());
  EXPECT_EQ(again->epoch_losses, result->epoch_losses);
  EXPECT_NE(other->epoch_losses, result->epoch_losses);

  // Fine-tuning from the result keeps its architecture and starts where it left off.
  AdapterOnlineOptions tune = SmallOnline();
  tune.epochs = 1;
  auto tuned = TrainAdapterOnline(t.embeddings, t.histories, 2, result->adapter, tune, 13);
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  EXPECT_EQ(tuned->adapter->output_dim(), 24);
  EXPECT_LT(tuned->epoch_losses.front(), result->epoch_losses.front());
}

TEST(TrainAdapterOnlineTest, TooFewLabelsOrBadOptionsChangeNothing) {
  const Topics t = MakeTopics(50, 8, 10);
  auto few = TrainAdapterOnline(t.embeddings, t.histories, 2, nullptr, SmallOnline(), 1);
  EXPECT_EQ(few.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(few.status().message(), HasSubstr("10 labelled questions, at least 16"));
  AdapterOnlineOptions bad = SmallOnline();
  bad.min_labels = 4;
  bad.epochs = 0;
  auto invalid = TrainAdapterOnline(t.embeddings, t.histories, 2, nullptr, bad, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(invalid.status()));
  // A start adapter of another dimension is refused by the trainer.
  bad = SmallOnline();
  bad.min_labels = 4;
  const Topics six = MakeTopics(50, 6, 40);
  auto small = TrainAdapterOnline(six.embeddings, six.histories, 2, nullptr, bad, 1);
  ASSERT_TRUE(small.ok()) << small.status();
  auto wrong_dim = TrainAdapterOnline(t.embeddings, t.histories, 2, small->adapter, bad, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(wrong_dim.status())) << wrong_dim.status();
}

}  // namespace
}  // namespace dots
