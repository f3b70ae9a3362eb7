#include "core/run/run.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "tests/core/run/run_test_util.h"

namespace dots {
namespace {

using testing::FakeClock;
using testing::MakeQuestions;
using testing::QuestionNumber;
using testing::SyntheticRewards;

const absl::Time kSoon = absl::InfiniteFuture();

RunConfig SmallConfig() {
  RunConfig c;
  c.batch_size = 8;
  c.group_size = 4;
  c.steps_per_round = 2;
  c.reference_size = 4;
  c.fresh_fraction = 0.5;
  c.seed = 3;
  c.lease_timeout_seconds = 60;
  c.replay.capacity_groups = 64;
  c.estimator.options.mode = EstimatorMode::kHistory;
  return c;
}

struct Harness {
  FakeClock clock;
  std::unique_ptr<Run> run;

  explicit Harness(RunConfig config, int64_t pool = 200, int dim = 8) {
    Run::Options options;
    options.clock = [this] { return clock.Now(); };
    options.background_planning = false;
    auto created = Run::Create("r", std::move(config), options);
    EXPECT_TRUE(created.ok()) << created.status();
    run = *std::move(created);
    std::vector<Question> questions;
    FloatMatrix embeddings;
    MakeQuestions(pool, dim, 1, &questions, &embeddings);
    auto up = run->UpsertQuestions(std::move(questions), embeddings);
    EXPECT_TRUE(up.ok()) << up.status();
  }

  BatchSlice Next(int64_t step, int rank = 0, int world = 1, int64_t version = 0) {
    auto slice = run->NextBatch(step, rank, world, version, kSoon);
    EXPECT_TRUE(slice.ok()) << slice.status();
    return slice.ok() ? *slice : BatchSlice();
  }

  ReportResult ReportAll(const BatchSlice& slice, int64_t version = 0) {
    std::vector<RolloutReport> groups;
    for (const BatchItem& item : slice.items) {
      groups.push_back(
          {item.key,
           SyntheticRewards(QuestionNumber(item.key), slice.step, run->config().group_size),
           version, absl::StrCat("payload-", item.key, "-", slice.step)});
    }
    auto r = run->ReportRollouts(slice.step, std::move(groups));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ReportResult();
  }
};

std::vector<std::string> Keys(const BatchSlice& s) {
  std::vector<std::string> keys;
  for (const BatchItem& i : s.items) keys.push_back(i.key);
  return keys;
}

TEST(RunTest, RanksPartitionTheBatchAndRetriesAreIdentical) {
  Harness h(SmallConfig());
  const BatchSlice whole = h.Next(0);
  ASSERT_EQ(whole.batch_size, 8);
  ASSERT_EQ(whole.items.size(), 8u);
  for (int world : {1, 2, 3, 5, 8, 11}) {
    std::vector<std::string> joined;
    size_t smallest = 100, largest = 0;
    for (int rank = 0; rank < world; ++rank) {
      const BatchSlice s = h.Next(0, rank, world);
      EXPECT_EQ(s.batch_size, 8);
      for (const std::string& k : Keys(s)) joined.push_back(k);
      smallest = std::min(smallest, s.items.size());
      largest = std::max(largest, s.items.size());
    }
    EXPECT_EQ(joined, Keys(whole)) << "world " << world;  // contiguous, in order, complete
    EXPECT_LE(largest - smallest, 1u);
  }
  EXPECT_EQ(Keys(h.Next(0)), Keys(whole));
  // Inline mode: round 0's batches carry round 1's reference questions (K = 4 over 2 steps).
  int refs = 0;
  for (const BatchItem& i : whole.items) refs += i.role == ItemRole::kReference;
  EXPECT_EQ(refs, 2);
}

TEST(RunTest, SameConfigSeedAndReportsGiveIdenticalBatches) {
  auto play = [] {
    Harness h(SmallConfig());
    std::vector<std::string> transcript;
    for (int64_t step = 0; step < 8; ++step) {
      const BatchSlice s = h.Next(step, 0, 1, step);
      for (const BatchItem& i : s.items) {
        transcript.push_back(
            absl::StrCat(step, ":", i.key, ":", std::string(ItemRoleName(i.role))));
      }
      for (const ReplayGroup& g : s.replay) {
        transcript.push_back(absl::StrCat(step, ":replay:", g.key, ":", g.step, ":", g.payload));
      }
      h.ReportAll(s, step);
    }
    return transcript;
  };
  const std::vector<std::string> a = play(), b = play();
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 8u * 6);
}

TEST(RunTest, ReportsAreIdempotentAndBadGroupsAreRejectedWithoutEffect) {
  Harness h(SmallConfig());
  const BatchSlice s = h.Next(0);
  const std::string key = s.items[0].key;
  const std::string other = s.items[1].key;
  const RunStats before = h.run->Stats();
  std::vector<RolloutReport> bad = {
      {"nope", {1, 0, 0, 0}, 0, ""},           // not in the pool
      {"q199", {1, 0, 0, 0}, 0, ""},           // in the pool, not handed out (likely)
      {key, {1, 0, 0}, 0, ""},                 // wrong count
      {key, {1, 0, 0, 1.5f}, 0, ""},           // out of range
      {key, {1, 0, 0, std::nanf("")}, 0, ""},  // NaN
      {key, {1, 0, 0, 0}, -1, ""},             // negative version
  };
  bool q199_handed_out = false;
  for (const BatchItem& i : s.items) q199_handed_out |= i.key == "q199";
  auto r = h.run->ReportRollouts(0, bad);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->accepted, q199_handed_out ? 1 : 0);
  EXPECT_EQ(r->rejected.size(), q199_handed_out ? 5u : 6u);
  for (const auto& [k, why] : r->rejected) EXPECT_FALSE(why.empty()) << k;
  if (!q199_handed_out) {
    const RunStats after = h.run->Stats();
    EXPECT_EQ(after.reported_groups, before.reported_groups);
    EXPECT_EQ(after.leases_outstanding, before.leases_outstanding);
  }
  // Accept once, then duplicates are counted and ignored.
  std::vector<RolloutReport> good = {{other, {1, 0, 1, 0}, 0, "x"}};
  EXPECT_EQ(h.run->ReportRollouts(0, good)->accepted, 1);
  auto dup = h.run->ReportRollouts(0, good);
  EXPECT_EQ(dup->accepted, 0);
  EXPECT_EQ(dup->duplicates, 1);
  EXPECT_EQ(h.run->Stats().duplicate_reports, 1);
  // A key handed out at step 0 is not accepted for step 1.
  const BatchSlice s1 = h.Next(1);
  auto wrong_step = h.run->ReportRollouts(1, {{other, {1, 0, 1, 0}, 0, ""}});
  EXPECT_EQ(wrong_step->accepted, 0);
  EXPECT_EQ(wrong_step->rejected.size(), 1u);
  EXPECT_EQ(h.run->ReportRollouts(-1, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunTest, StepsAheadAndIncompleteRoundsAreFailedPreconditions) {
  Harness h(SmallConfig());
  auto far = h.run->NextBatch(2, 0, 1, 0, kSoon);  // round 1 before anything is reported
  EXPECT_EQ(far.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(far.status().message().find("ahead"), absl::string_view::npos) << far.status();
  const BatchSlice s0 = h.Next(0);
  const BatchSlice s1 = h.Next(1);
  h.ReportAll(s0);
  // Step 2 is within one round of the last reported step, but round 0 is not fully reported.
  auto early = h.run->NextBatch(2, 0, 1, 0, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(early.status().message().find("neither reported nor expired"), absl::string_view::npos)
      << early.status();
  h.ReportAll(s1);
  EXPECT_TRUE(h.run->NextBatch(2, 0, 1, 0, kSoon).ok());
  EXPECT_EQ(h.run->NextBatch(0, 2, 2, 0, kSoon).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.run->NextBatch(-1, 0, 1, 0, kSoon).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RunTest, ExpiredLeasesFreeTheRoundAndLateReportsCountOnce) {
  Harness h(SmallConfig());
  const BatchSlice s0 = h.Next(0);
  const BatchSlice s1 = h.Next(1);
  h.ReportAll(s0);
  EXPECT_EQ(h.run->Stats().leases_outstanding, 8);
  h.clock.Advance(absl::Seconds(61));
  const RunStats stats = h.run->Stats();
  EXPECT_EQ(stats.leases_outstanding, 0);
  EXPECT_EQ(stats.leases_expired, 8);
  EXPECT_TRUE(h.run->NextBatch(2, 0, 1, 0, kSoon).ok());  // round 1 planned without step 1
  const ReportResult late = h.ReportAll(s1);
  EXPECT_EQ(late.accepted, 8);
  EXPECT_EQ(h.ReportAll(s1).duplicates, 8);
}

TEST(RunTest, ReplayKeepsBatchSizeAndNeverReplaysTheSameStep) {
  Harness h(SmallConfig());
  for (int64_t step = 0; step < 12; ++step) {
    const BatchSlice s = h.Next(step, 0, 1, step);
    EXPECT_EQ(s.batch_size, 8) << step;  // fill_fresh keeps B
    EXPECT_EQ(s.items.size() + s.replay.size(), 8u);
    for (const ReplayGroup& g : s.replay) {
      EXPECT_LT(g.step, step);
      EXPECT_EQ(g.payload, absl::StrCat("payload-", g.key, "-", g.step));  // byte-identical
      double mean = 0;
      for (float r : g.rewards) mean += r / g.rewards.size();
      EXPECT_GT(mean, 0);
      EXPECT_LT(mean, 1);
    }
    h.ReportAll(s, step);
  }
  EXPECT_GT(h.run->Stats().replayed_groups, 0);
}

TEST(RunTest, ShrinkUnderfillGivesSmallerBatchesWhenReplayIsShort) {
  RunConfig c = SmallConfig();
  c.underfill = ReplayUnderfill::kShrink;
  c.replay.max_replays = 1;
  Harness h(c);
  int64_t smaller = 0;
  for (int64_t step = 0; step < 10; ++step) {
    const BatchSlice s = h.Next(step, 0, 1, step);
    if (step >= 2) {
      EXPECT_EQ(s.items.size(), 4u) << step;  // delta * B fresh, whatever replay has
      smaller += s.batch_size < 8;
    }
    h.ReportAll(s, step);
  }
  EXPECT_GT(smaller, 0);
}

TEST(RunTest, PaperModeHandsOutTheReferenceBatchFirst) {
  RunConfig c = SmallConfig();
  c.reference_mode = ReferenceMode::kPaper;
  c.estimator.options.mode = EstimatorMode::kPaper;
  Harness h(c);
  const BatchSlice refs = h.Next(0);
  EXPECT_TRUE(refs.reference_batch);
  ASSERT_EQ(refs.items.size(), 4u);
  for (const BatchItem& i : refs.items) EXPECT_EQ(i.role, ItemRole::kReference);
  auto other = h.run->NextBatch(1, 0, 1, 0, kSoon);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("reference rollouts"), absl::string_view::npos);
  EXPECT_EQ(h.ReportAll(refs).accepted, 4);
  const BatchSlice train = h.Next(0);
  EXPECT_FALSE(train.reference_batch);
  EXPECT_EQ(train.items.size(), 8u);
  for (const BatchItem& i : train.items) {
    EXPECT_EQ(i.role, ItemRole::kFresh);
    for (const BatchItem& r : refs.items) EXPECT_NE(i.key, r.key);
  }
  EXPECT_EQ(h.run->Stats().replay_groups, 0);  // reference rollouts are not trained on
}

// docs/paper.md §7.2 items 7 and 8 through the protocol: N = 10,240, B = 512, mu = 2,
// delta = 0.5, K = 256, C in {256, 512}.
TEST(RunTest, PaperBudgetsAndBufferCapacity) {
  for (int64_t capacity : {256, 512}) {
    RunConfig c;
    c.seed = 11;
    c.replay.capacity_groups = capacity;
    c.estimator.options.mode = EstimatorMode::kHistory;
    Harness h(c, 10240, 4);
    int64_t fresh_round0 = 0;
    for (int64_t step = 0; step < 8; ++step) {
      const BatchSlice s = h.Next(step, 0, 1, step);
      EXPECT_EQ(s.batch_size, 512);
      if (step < 2) {
        fresh_round0 += s.items.size();
        EXPECT_TRUE(s.replay.empty() || step == 1);
      } else {
        // Later rounds: 256 fresh (inline references included) + 256 replayed, once the
        // store holds enough informative groups; fill_fresh otherwise.
        EXPECT_GE(s.items.size(), 256u);
        for (const ReplayGroup& g : s.replay) {
          if (capacity == 256) {
            EXPECT_EQ(g.step, step - 1);  // each insert of 256 fresh groups emptied older ones
          }
          EXPECT_LT(g.step, step);
        }
      }
      h.ReportAll(s, step);
      EXPECT_LE(h.run->Stats().replay_groups, capacity);
    }
    EXPECT_EQ(fresh_round0, 1024);  // round 0 draws 2 x 512 fresh
  }
}

TEST(RunTest, UpsertValidatesEverythingFirst) {
  Harness h(SmallConfig(), 10, 8);
  std::vector<Question> qs(2);
  qs[0].key = "new";
  qs[1].key = "new";  // duplicate in the upload
  FloatMatrix e(2, 8);
  auto r = h.run->UpsertQuestions(qs, e);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("questions[1]"), absl::string_view::npos) << r.status();
  EXPECT_EQ(h.run->Stats().pool_size, 10);
  FloatMatrix wrong_dim(1, 3);
  std::vector<Question> one(1);
  one[0].key = "new";
  EXPECT_FALSE(h.run->UpsertQuestions(one, wrong_dim).ok());
  FloatMatrix right(1, 8);
  auto ok = h.run->UpsertQuestions(one, right);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->added, 1);
  one[0].prompt = "changed";
  EXPECT_EQ(h.run->UpsertQuestions(one, right)->updated, 1);
  EXPECT_EQ(h.run->Stats().pool_size, 11);
}

TEST(RunTest, TooSmallPoolIsAFailedPrecondition) {
  RunConfig c = SmallConfig();
  Harness h(c, 10, 8);  // a round draws up to mu * B = 16 fresh + K = 4 references
  auto s = h.run->NextBatch(0, 0, 1, 0, kSoon);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
}

// The default estimator's online difficulty model is retrained before every plan once enough
// questions are observed, and its training shows in the run's stats; off, it never trains.
TEST(RunTest, OnlineModelTrainsBeforeEachPlanAndReportsItsMetrics) {
  for (const bool enabled : {true, false}) {
    RunConfig config = SmallConfig();
    config.estimator.options.mode = EstimatorMode::kDefault;
    config.estimator.options.model.enabled = enabled;
    config.estimator.options.model.min_labels = 8;
    Harness h(config, /*pool=*/200, /*dim=*/8);
    int64_t trainings_seen = 0;
    for (int64_t step = 0; step < 8; ++step) {
      h.ReportAll(h.Next(step, 0, 1, step), step);
      const RunStats stats = h.run->Stats();
      EXPECT_GE(stats.model_version, trainings_seen) << "step " << step;
      trainings_seen = stats.model_version;
    }
    const RunStats stats = h.run->Stats();
    SCOPED_TRACE(enabled ? "model on" : "model off");
    if (!enabled) {
      EXPECT_EQ(stats.model_version, 0);
      continue;
    }
    // Rounds 1-3 were planned after round 0's 16 reports (>= min_labels): one training each.
    EXPECT_EQ(stats.model_version, stats.rounds_planned - 1);
    EXPECT_GE(stats.model_labels, 16);
    EXPECT_LE(stats.model_labels, 48);  // at most rounds 0-2: 6 steps of 8 questions
    EXPECT_GT(stats.model_training_loss, 0);
    EXPECT_TRUE(std::isfinite(stats.model_training_loss));
    EXPECT_GE(stats.model_training_seconds, 0);
  }
}

// Paper mode with estimator.adapter_training online: the adapter is fine-tuned on the run's
// outcomes before each plan once enough questions are observed, and the estimates change;
// with it off, paper mode trains nothing.
TEST(RunTest, PaperModeFineTunesTheAdapterOnlineOnlyWhenAskedTo) {
  std::vector<std::vector<QuestionEstimate>> estimates;
  for (const bool online : {false, true}) {
    RunConfig config = SmallConfig();
    config.reference_mode = ReferenceMode::kPaper;
    config.estimator.options.mode = EstimatorMode::kPaper;
    AdapterOnlineOptions& a = config.estimator.options.adapter_training;
    a.enabled = online;
    a.min_labels = 12;
    a.batch_size = 16;
    a.ref_size = 16;
    a.hidden_size = 16;
    a.num_layers = 1;
    Harness h(config, /*pool=*/120, /*dim=*/8);
    for (int64_t step = 0; step < 8; ++step) {
      BatchSlice s = h.Next(step, 0, 1, step);
      if (s.reference_batch) {
        h.ReportAll(s, step);
        s = h.Next(step, 0, 1, step);
      }
      h.ReportAll(s, step);
    }
    const RunStats stats = h.run->Stats();
    SCOPED_TRACE(online ? "online" : "off");
    if (!online) {
      EXPECT_EQ(stats.model_version, 0);
    } else {
      // Round 0 observed 4 references + 16 fresh questions (>= 12): rounds 1-3 trained.
      EXPECT_EQ(stats.model_version, stats.rounds_planned - 1);
      EXPECT_GE(stats.model_labels, 12);
      EXPECT_GT(stats.model_training_loss, 0);
      EXPECT_TRUE(std::isnan(stats.model_out_of_sample_pearson));
    }
    std::vector<std::string> keys;
    for (int i = 0; i < 120; ++i) keys.push_back(absl::StrCat("q", i));
    auto est = h.run->GetEstimates(keys);
    ASSERT_TRUE(est.ok()) << est.status();
    estimates.push_back(*std::move(est));
  }
  int differ = 0;
  for (size_t i = 0; i < estimates[0].size(); ++i) {
    differ += estimates[0][i].p_hat != estimates[1][i].p_hat;
  }
  EXPECT_GT(differ, 60);
}

TEST(RunTest, BackgroundPlanningServesTheNextRound) {
  Run::Options options;  // real clock, planner thread
  auto run = Run::Create("bg", SmallConfig(), options);
  ASSERT_TRUE(run.ok());
  std::vector<Question> questions;
  FloatMatrix embeddings;
  MakeQuestions(100, 4, 2, &questions, &embeddings);
  ASSERT_TRUE((*run)->UpsertQuestions(questions, embeddings).ok());
  for (int64_t step = 0; step < 6; ++step) {
    auto s = (*run)->NextBatch(step, 0, 1, step, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(s.ok()) << s.status();
    std::vector<RolloutReport> groups;
    for (const BatchItem& i : s->items) {
      groups.push_back({i.key, SyntheticRewards(QuestionNumber(i.key), step, 4), step, ""});
    }
    ASSERT_EQ((*run)->ReportRollouts(step, groups)->accepted,
              static_cast<int64_t>(s->items.size()));
  }
  // Rounds 0-2 were served; the planner may already have planned round 3 ahead of its request.
  const int64_t planned = (*run)->Stats().rounds_planned;
  EXPECT_GE(planned, 3);
  EXPECT_LE(planned, 4);
  auto est = (*run)->GetEstimates({"q1", "q2"});
  ASSERT_TRUE(est.ok());
  EXPECT_EQ((*est)[0].key, "q1");
  EXPECT_EQ((*run)->GetEstimates({"missing"}).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dots

namespace dots {
namespace {

TEST(RunUpsertTest, RejectIndividuallyAppliesTheValidQuestions) {
  auto run = Run::Create("u", SmallConfig());
  ASSERT_TRUE(run.ok());
  std::vector<Question> qs(4);
  qs[0].key = "a";
  qs[1].key = "";   // empty key
  qs[2].key = "a";  // duplicate within the upload
  qs[3].key = "b";
  qs[3].prior = 1.5;  // out of range
  FloatMatrix e(4, 2);
  e.row(0)[0] = 1;
  auto r = (*run)->UpsertQuestions(qs, e, /*reject_individually=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->added, 1);
  ASSERT_EQ(r->rejected.size(), 3u);
  EXPECT_EQ(r->rejected[0].index, 1);
  EXPECT_EQ(r->rejected[1].index, 2);
  EXPECT_EQ(r->rejected[2].index, 3);
  EXPECT_NE(r->rejected[2].error.find("prior"), std::string::npos) << r->rejected[2].error;
  // A later upload with another dimension is rejected per question, not applied.
  std::vector<Question> more(1);
  more[0].key = "c";
  auto r2 = (*run)->UpsertQuestions(more, FloatMatrix(1, 3), true);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->added, 0);
  ASSERT_EQ(r2->rejected.size(), 1u);
  EXPECT_NE(r2->rejected[0].error.find("dimension"), std::string::npos);
  EXPECT_EQ((*run)->Stats().pool_size, 1);
}

}  // namespace
}  // namespace dots
