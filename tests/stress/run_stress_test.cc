// Concurrency stress test of core::Run: 16 threads issue NextBatch and ReportRollouts for every
// step, with random ranks, duplicate reports, unreported groups whose leases expire, and
// background planning; after every step the test checks the protocol's invariants. Built and
// run under ThreadSanitizer by `make test` (scripts/tsan.sh).
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/run/run.h"
#include "core/util/mutex.h"
#include "tests/core/run/run_test_util.h"

namespace dots {
namespace {

constexpr int kThreads = 16;

int64_t StepsFromEnv() {
  const char* v = std::getenv("DOTS_STRESS_STEPS");
  return v != nullptr ? std::atoll(v) : 10000;
}

TEST(RunStressTest, ConcurrentTrainersKeepTheInvariants) {
  const int64_t steps = StepsFromEnv();
  RunConfig config;
  config.batch_size = 16;
  config.group_size = 4;
  config.steps_per_round = 2;
  config.reference_size = 4;
  config.fresh_fraction = 0.5;
  config.lease_timeout_seconds = 30;
  config.seed = 5;
  config.replay.capacity_groups = 48;
  config.replay.max_replays = 3;
  config.estimator.options.mode = EstimatorMode::kHistory;
  testing::FakeClock clock;
  dots::Run::Options options;
  options.clock = [&clock] { return clock.Now(); };
  options.background_planning = true;
  auto created = dots::Run::Create("stress", config, options);
  ASSERT_TRUE(created.ok()) << created.status();
  dots::Run& run = **created;
  std::vector<Question> questions;
  FloatMatrix embeddings;
  testing::MakeQuestions(400, 4, 9, &questions, &embeddings);
  ASSERT_TRUE(run.UpsertQuestions(questions, embeddings).ok());

  // Shared between the trainer threads and the checker (under mu).
  Mutex mu;
  std::map<int64_t, std::vector<BatchSlice>> slices;  // per step, as seen by the threads
  std::set<std::pair<int64_t, std::string>> accepted;
  int64_t accepted_count = 0, duplicate_count = 0, errors = 0;
  std::string first_error;

  std::atomic<int64_t> current_step{0};
  std::barrier sync(kThreads + 1);
  auto trainer = [&](int t) {
    Rng rng(MixSeed(1234, t));
    while (true) {
      sync.arrive_and_wait();  // step start
      const int64_t step = current_step.load();
      if (step >= steps) return;
      const int world = 1 + static_cast<int>(rng.Below(4));
      const int rank = static_cast<int>(rng.Below(world));
      absl::StatusOr<BatchSlice> slice =
          run.NextBatch(step, rank, world, step, absl::Now() + absl::Seconds(60));
      if (!slice.ok()) {
        MutexLock lock(&mu);
        if (errors++ == 0) first_error = std::string(slice.status().message());
      } else {
        std::vector<RolloutReport> groups;
        for (const BatchItem& item : slice->items) {
          // Some groups are never reported by anyone (their leases expire at the round's
          // end), and each thread skips a few more at random.
          if ((testing::QuestionNumber(item.key) + step) % 13 == 0) continue;
          if (rng.Below(10) == 0) continue;
          groups.push_back({item.key,
                            testing::SyntheticRewards(testing::QuestionNumber(item.key), step,
                                                      config.group_size),
                            step, absl::StrCat(item.key, "@", step)});
          if (rng.Below(8) == 0) groups.push_back(groups.back());  // duplicate in one call
        }
        absl::StatusOr<ReportResult> r = run.ReportRollouts(step, groups);
        MutexLock lock(&mu);
        if (!r.ok() || !r->rejected.empty()) {
          if (errors++ == 0) {
            first_error = r.ok() ? r->rejected[0].second : std::string(r.status().message());
          }
        } else {
          accepted_count += r->accepted;
          duplicate_count += r->duplicates;
        }
        slices[step].push_back(*slice);
      }
      sync.arrive_and_wait();  // step end
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(trainer, t);

  std::map<int64_t, std::set<std::string>> round_keys;  // fresh/reference keys per round
  for (int64_t step = 0; step < steps; ++step) {
    current_step.store(step);
    sync.arrive_and_wait();  // let the threads run the step
    sync.arrive_and_wait();  // wait for them to finish it
    // Every group no thread reported expires before the next round is needed.
    if (step % config.steps_per_round == config.steps_per_round - 1) {
      clock.Advance(absl::Seconds(31));
    }
    MutexLock lock(&mu);
    ASSERT_EQ(errors, 0) << "step " << step << ": " << first_error;
    const std::vector<BatchSlice>& seen = slices[step];
    ASSERT_EQ(seen.size(), static_cast<size_t>(kThreads));
    const int64_t batch_size = seen[0].batch_size;
    ASSERT_EQ(batch_size, config.batch_size) << "fill_fresh keeps B, step " << step;
    std::set<std::string> keys_this_step;
    for (const BatchSlice& s : seen) {
      ASSERT_EQ(s.batch_size, batch_size);
      for (const BatchItem& item : s.items) keys_this_step.insert(item.key);
      for (const ReplayGroup& g : s.replay) {
        ASSERT_LT(g.step, step) << "a group was replayed in the step that produced it";
        ASSERT_EQ(g.payload, absl::StrCat(g.key, "@", g.step));
      }
    }
    std::set<std::string>& in_round = round_keys[step / config.steps_per_round];
    for (const std::string& k : keys_this_step) {
      ASSERT_TRUE(in_round.insert(k).second) << k << " leased twice within a round, step " << step;
    }
    round_keys.erase(step / config.steps_per_round - 2);
    slices.erase(step);
    const RunStats stats = run.Stats();
    ASSERT_EQ(stats.reported_groups, accepted_count) << "every group counted once";
    ASSERT_EQ(stats.duplicate_reports, duplicate_count);
  }
  current_step.store(steps);
  sync.arrive_and_wait();
  for (std::thread& t : threads) t.join();
  const RunStats stats = run.Stats();
  EXPECT_GT(stats.leases_expired, 0);
  EXPECT_GT(stats.replayed_groups, 0);
  EXPECT_GT(stats.duplicate_reports, 0);
  // The planner plans a round as soon as the previous one is settled, so the round after the
  // last step may be planned too.
  EXPECT_GE(stats.rounds_planned, steps / config.steps_per_round);
  EXPECT_LE(stats.rounds_planned, steps / config.steps_per_round + 1);
}

}  // namespace
}  // namespace dots
