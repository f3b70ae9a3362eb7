// Health, reflection and draining: the health service follows the server's state, reflection
// lists dots.v1.Dots, a drain under load loses no acknowledged report, and the dots-server
// binary drains and exits 0 on SIGTERM.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "client/cpp/client.h"
#include "core/util/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

constexpr int kServing = 1, kNotServing = 2;

class DrainTest : public ServerTest {};

TEST_F(DrainTest, HealthIsServingAfterStartAndNotServingOnceDrainBegins) {
  EXPECT_EQ(HealthCheck(""), kServing);
  EXPECT_EQ(HealthCheck("dots.v1.Dots"), kServing);
  grpc::Status status;
  EXPECT_EQ(HealthCheck("no.such.Service", &status), -1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  server_->BeginDrain();
  // Still listening, so probes and load balancers see the change.
  EXPECT_EQ(HealthCheck(""), kNotServing);
  EXPECT_EQ(HealthCheck("dots.v1.Dots"), kNotServing);
  server_->Shutdown(absl::Seconds(1));
  EXPECT_EQ(HealthCheck("", &status), -1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(DrainTest, ReflectionListsTheDotsService) {
  grpc::Status status;
  const std::vector<std::string> services = ReflectionServices(&status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(services, ::testing::Contains("dots.v1.Dots"));
  EXPECT_THAT(services, ::testing::Contains("grpc.health.v1.Health"));
}

TEST_F(DrainTest, WaitingNextBatchEndsWithUnavailableWhenTheServerDrains) {
  CreateRunWithPool("wait");
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("wait", 0, 0, 1, &batch).ok());
  ASSERT_TRUE(ReportItems("wait", 0, batch).ok());
  ASSERT_TRUE(NextBatch("wait", 1, 0, 1, &batch).ok());
  // Step 2 opens round 1, which waits for step 1's reports: the call waits.
  grpc::Status waited;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    waited = NextBatch("wait", 2, 0, 1, &batch, 0, absl::Seconds(30));
    returned = true;
  });
  // The call is open on the server, and still open three wait slices (100 ms each) later: it is
  // waiting, slice after slice, not failing fast.
  EXPECT_TRUE(PollUntil([&] { return server_->service().streams_open() == 1; }));
  const absl::Time open_since = absl::Now();
  EXPECT_FALSE(PollUntil([&] { return returned || server_->service().streams_open() != 1; },
                         absl::Milliseconds(300)))
      << "the NextBatch of step 2 ended before the drain: " << waited.error_message();
  EXPECT_GE(absl::Now() - open_since, absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Seconds(20));
  waiter.join();
  // The wait noticed the drain within a slice; the drain did not sit out its grace period.
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(waited.error_code(), grpc::StatusCode::UNAVAILABLE) << waited.error_message();
  // Said by the wait loop itself, not by the check that refuses calls arriving during a drain.
  EXPECT_THAT(waited.error_message(), ::testing::StartsWith("NextBatch: the server is draining"));
}

// Four ranks train in lockstep (NextBatch, report, next step) while the server drains. Every
// report the server acknowledged must be in the run afterwards: re-reporting it in-process is a
// duplicate.
TEST_F(DrainTest, DrainUnderLoadLosesNoAcknowledgedReport) {
  CreateRunWithPool("load", 64,
                    R"({"batch_size": 16, "group_size": 4, "steps_per_round": 1,
                        "reference_size": 4, "estimator": {"mode": "history"}})");
  constexpr int kWorld = 4;
  Mutex mu;
  std::map<int64_t, std::vector<RolloutReport>> acknowledged;  // by step
  int64_t acknowledged_groups = 0;
  std::vector<grpc::Status> last(kWorld);
  std::vector<int64_t> steps_done(kWorld, 0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.emplace_back([&, r] {
      for (int64_t step = 0;; ++step) {
        ReceivedBatch batch;
        grpc::Status status = NextBatch("load", step, r, kWorld, &batch, 0, absl::Seconds(10));
        if (!status.ok()) {
          last[r] = status;
          return;
        }
        std::vector<GroupToReport> groups;
        for (const pb::BatchItem& item : batch.items) {
          groups.push_back({item.key(), MixedRewards(), step, std::string(2000, 'r')});
        }
        pb::ReportRolloutsResponse response;
        status = Report("load", step, groups, &response);
        if (!status.ok()) {
          last[r] = status;
          return;
        }
        MutexLock lock(&mu);
        EXPECT_EQ(response.accepted(), static_cast<int64_t>(groups.size()));
        for (const GroupToReport& g : groups) {
          acknowledged[step].push_back({g.key, g.rewards, g.policy_version, g.payload});
        }
        acknowledged_groups += response.accepted();
        steps_done[r] = step + 1;
      }
    });
  }
  // Every rank has acknowledged reports of two steps before the drain starts.
  const bool progressed = PollUntil(
      [&] {
        MutexLock lock(&mu);
        return std::all_of(steps_done.begin(), steps_done.end(), [](int64_t s) { return s >= 2; });
      },
      absl::Seconds(30));
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Seconds(5));
  for (std::thread& t : ranks) t.join();
  ASSERT_TRUE(progressed) << "the ranks made too little progress to test anything";
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  for (int r = 0; r < kWorld; ++r) {
    // Every rank stopped because the server went away, not for another reason.
    EXPECT_THAT(last[r].error_code(),
                ::testing::AnyOf(grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::CANCELLED))
        << "rank " << r << ": " << last[r].error_message();
  }

  absl::StatusOr<RunEntry> run = server_->registry().Get("load");
  ASSERT_TRUE(run.ok());
  const RunStats stats = run->run->Stats();
  EXPECT_GE(stats.reported_groups, acknowledged_groups);
  ASSERT_GT(acknowledged_groups, 0);
  for (auto& [step, groups] : acknowledged) {
    // Steps older than the run's retention are retired; their repeats are rejected instead.
    if (step < stats.step - (Run::kRetainedRounds - 1) * run->run->config().steps_per_round) {
      continue;
    }
    const size_t n = groups.size();
    absl::StatusOr<ReportResult> again = run->run->ReportRollouts(step, std::move(groups));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->accepted, 0) << "step " << step;
    EXPECT_EQ(again->duplicates, static_cast<int64_t>(n)) << "step " << step;
  }
}

// The real binary: prints its address, drains on SIGTERM (a waiting NextBatch is released with
// UNAVAILABLE) and exits 0.
TEST(ServerBinaryTest, SigtermDrainsAndExitsZero) {
  const std::filesystem::path binary =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / "dots-server";
  ASSERT_TRUE(std::filesystem::exists(binary)) << binary << " is not built";
  const testing::TempDir state("drain_binary");
  testing::ServerProcess server({"--drain_seconds=20", "--wait_slice_ms=100",
                                 "--state_dir=" + state.path(), "--metrics_listen=127.0.0.1:0"});
  const std::string& address = server.address();
  ASSERT_THAT(address, ::testing::StartsWith("127.0.0.1:"));
  EXPECT_NE(address, "127.0.0.1:0");
  ASSERT_GT(server.metrics_port(), 0);

  // No retries: the waiting call's own answer is what this test is about.
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = address, .max_attempts = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CreateRun("bin", kSmallConfig).ok());
  ASSERT_TRUE((*client)->UpsertQuestions("bin", MakeQuestions(64), MakeEmbeddings(64, 8)).ok());
  absl::StatusOr<BatchSlice> step0 = (*client)->NextBatch("bin", 0, 0, 1, 0);
  ASSERT_TRUE(step0.ok()) << step0.status();
  std::vector<RolloutReport> groups;
  for (const BatchItem& item : step0->items) groups.push_back({item.key, {1, 0, 0, 0}, 0, ""});
  absl::StatusOr<ReportResult> reported = (*client)->ReportRollouts("bin", 0, groups);
  ASSERT_TRUE(reported.ok()) << reported.status();
  ASSERT_EQ(reported->accepted, static_cast<int64_t>(groups.size()));
  ASSERT_TRUE((*client)->NextBatch("bin", 1, 0, 1, 0).ok());

  // Step 2 opens round 1, which waits for step 1's reports: this call waits. The server says so
  // on /metrics: one stream open, still open three wait slices later.
  absl::Status waited;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    waited = (*client)->NextBatch("bin", 2, 0, 1, 0, {.timeout = absl::Seconds(30)}).status();
    returned = true;
  });
  auto streams_open = [&] {
    return ScrapeValue(server.metrics_port(), "dots_streams_open").value_or(-1);
  };
  EXPECT_TRUE(PollUntil([&] { return streams_open() == 1; }))
      << "dots_streams_open is " << streams_open();
  EXPECT_FALSE(PollUntil([&] { return returned || streams_open() != 1; }, absl::Milliseconds(300)))
      << "the NextBatch of step 2 ended before the drain (returned: " << returned
      << ", dots_streams_open " << streams_open() << ")";
  const absl::Time start = absl::Now();
  server.Signal(SIGTERM);
  const int wstatus = server.Wait();
  waiter.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_TRUE(WIFEXITED(wstatus)) << "status " << wstatus;
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(waited.code(), absl::StatusCode::kUnavailable) << waited;
  EXPECT_THAT(std::string(waited.message()),
              ::testing::StartsWith("NextBatch: the server is draining"));
}

}  // namespace
}  // namespace dots::testing
