// A trainer as a user would write one, linked against the C++ client library alone (CMake:
// dots_client + GTest; no engine, no server library; tests/client/link_closure_test.sh checks
// the binary): it starts the real dots-server next to it, creates a run, uploads a pool and
// trains two rounds as two ranks, reporting rollouts with binary payloads, until replayed groups
// come back byte-identical; then it reads the run's stats and estimates.
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "client/cpp/client.h"
#include "gtest/gtest.h"
#include "tests/client/test_payload.h"
#include "tests/client/test_questions.h"
#include "tests/server/server_process.h"

namespace dots {
namespace {

constexpr char kRun[] = "trainer";
// B = 8 of G = 4, mu = 2 steps per round: round 1 (steps 2, 3) replays groups of round 0.
constexpr char kConfig[] =
    R"({"batch_size": 8, "group_size": 4, "reference_size": 2, "seed": 11,
        "estimator": {"mode": "history"}})";
constexpr int kWorld = 2;
constexpr int64_t kSteps = 4;

class TrainerProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "trainer-state-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    state_dir_ = pattern;
    server_ = std::make_unique<testing::ServerProcess>(
        std::vector<std::string>{"--state_dir=" + state_dir_});
    ASSERT_FALSE(server_->address().empty()) << "dots-server did not start";
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = server_->address(), .default_deadline = absl::Seconds(30)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }
  void TearDown() override {
    client_.reset();
    server_.reset();  // SIGKILL: the state directory goes anyway
    std::error_code ignored;
    std::filesystem::remove_all(state_dir_, ignored);
  }

  std::string state_dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(TrainerProgramTest, TrainsTwoRoundsAndGetsReplayedPayloadsBack) {
  ASSERT_TRUE(client_->CreateRun(kRun, kConfig).ok());
  absl::StatusOr<UpsertResult> pool =
      client_->UpsertQuestions(kRun, testing::MakeQuestions(60), testing::MakeEmbeddings(60, 8));
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_EQ(pool->added, 60);

  // What this trainer reported, by (key, step): replay must return exactly these bytes.
  std::map<std::pair<std::string, int64_t>, RolloutReport> reported;
  int64_t replayed = 0;
  for (int64_t step = 0; step < kSteps; ++step) {
    for (int rank = 0; rank < kWorld; ++rank) {
      absl::StatusOr<BatchSlice> batch = client_->NextBatch(kRun, step, rank, kWorld, step);
      ASSERT_TRUE(batch.ok()) << "step " << step << " rank " << rank << ": " << batch.status();
      EXPECT_EQ(batch->step, step);
      for (const ReplayGroup& group : batch->replay) {
        auto it = reported.find({group.key, group.step});
        ASSERT_NE(it, reported.end()) << group.key << " was never reported at " << group.step;
        EXPECT_LT(group.step, step);
        EXPECT_EQ(group.rewards, it->second.rewards);
        EXPECT_EQ(group.policy_version, it->second.policy_version);
        EXPECT_TRUE(group.payload == it->second.payload) << group.key << ": payload differs";
        ++replayed;
      }
      std::vector<RolloutReport> groups;
      for (size_t i = 0; i < batch->items.size(); ++i) {
        // Mixed rewards keep every group informative, so replayable; payloads of 4 to 32 KiB.
        const uint32_t seed = static_cast<uint32_t>(step * 100 + rank * 10 + i);
        groups.push_back({batch->items[i].key, {1, 0, 0, 1}, step, Pattern(4096 * (i + 1), seed)});
      }
      absl::StatusOr<ReportResult> result = client_->ReportRollouts(kRun, step, groups);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->accepted, static_cast<int64_t>(groups.size()));
      EXPECT_TRUE(result->rejected.empty());
      for (RolloutReport& g : groups) {
        std::pair<std::string, int64_t> key(g.key, step);
        reported.emplace(std::move(key), std::move(g));
      }
    }
  }
  EXPECT_GT(replayed, 0) << "round 1 replayed nothing";

  absl::StatusOr<RunStats> stats = client_->GetRunStats(kRun);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->step, kSteps - 1);
  EXPECT_EQ(stats->round, 1);
  EXPECT_EQ(stats->reported_groups, static_cast<int64_t>(reported.size()));
  EXPECT_EQ(stats->replayed_groups, replayed);
  absl::StatusOr<std::vector<QuestionEstimate>> estimates = client_->GetEstimates(kRun);
  ASSERT_TRUE(estimates.ok()) << estimates.status();
  EXPECT_EQ(estimates->size(), 60u);
}

}  // namespace
}  // namespace dots
