// dots::Client against a real in-process dots server (server/server.h on 127.0.0.1:0) over a
// real channel with default limits: every method, payload reassembly, rank slicing, deadlines
// and retries across a server that starts late or drains.
#include "client/cpp/client.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/formats/npy.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_payload.h"
#include "tests/client/test_questions.h"
#include "tests/server/test_server.h"

namespace dots {
namespace {

constexpr char kConfig[] =
    R"({"batch_size": 8, "group_size": 4, "reference_size": 2, "seed": 7,
        "estimator": {"mode": "history"}})";
constexpr int64_t kMiB = int64_t{1} << 20;

using testing::MakeEmbeddings;
using testing::MakeQuestions;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Server::Options options;
    options.listen_address = "127.0.0.1:0";
    options.state_dir = state_dir_.path();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client_ = MakeClient({});
  }
  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  std::unique_ptr<Client> MakeClient(Client::Options options) {
    options.target = server_->address();
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  // A run with a 60-question pool (embedded, dim 8).
  void CreatePopulatedRun(const std::string& run_id) {
    ASSERT_TRUE(client_->CreateRun(run_id, kConfig).ok());
    absl::StatusOr<UpsertResult> up =
        client_->UpsertQuestions(run_id, MakeQuestions(60), MakeEmbeddings(60, 8));
    ASSERT_TRUE(up.ok()) << up.status();
    ASSERT_EQ(up->added, 60);
  }

  // Reports every item of `slice` (step `step`); `informative` maps keys to the payload of a
  // group with mixed rewards, every other key gets all-ones rewards (not replayable).
  void ReportAll(const std::string& run_id, int64_t step, const BatchSlice& slice,
                 const std::map<std::string, std::string>& informative) {
    std::vector<RolloutReport> groups;
    for (const BatchItem& item : slice.items) {
      auto it = informative.find(item.key);
      if (it != informative.end()) {
        groups.push_back({item.key, {1, 0, 1, 0}, 0, it->second});
      } else {
        groups.push_back({item.key, {1, 1, 1, 1}, 0, "x"});
      }
    }
    absl::StatusOr<ReportResult> r = client_->ReportRollouts(run_id, step, groups);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->accepted, static_cast<int64_t>(groups.size()));
    ASSERT_TRUE(r->rejected.empty()) << r->rejected[0].second;
  }

  // Round 0 (steps 0 and 1; replay starts with round 1) with four informative groups carrying
  // payloads of `sizes` at step 0, everything else all-ones; then step 2's replay share (4 of 8)
  // must be exactly those four groups. Step 2 is fetched as `ranks` concurrent ranks whose
  // slices are concatenated in rank order.
  void ReplayRoundTrip(const std::vector<size_t>& sizes, int ranks) {
    CreatePopulatedRun("replay");
    absl::StatusOr<BatchSlice> step0 = client_->NextBatch("replay", 0, 0, 1, 0);
    ASSERT_TRUE(step0.ok()) << step0.status();
    ASSERT_EQ(step0->items.size(), 8u);
    std::map<std::string, std::string> payloads;
    for (size_t i = 0; i < sizes.size(); ++i) {
      payloads[step0->items[i].key] = Pattern(sizes[i], static_cast<uint32_t>(i + 1));
    }
    ReportAll("replay", 0, *step0, payloads);
    absl::StatusOr<BatchSlice> step1 = client_->NextBatch("replay", 1, 0, 1, 0);
    ASSERT_TRUE(step1.ok()) << step1.status();
    ReportAll("replay", 1, *step1, {});

    std::vector<absl::StatusOr<BatchSlice>> slices(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] { slices[r] = client_->NextBatch("replay", 2, r, ranks, 1); });
    }
    for (auto& t : threads) t.join();
    std::vector<ReplayGroup> replay;
    int64_t total_bytes = 0;
    for (int r = 0; r < ranks; ++r) {
      ASSERT_TRUE(slices[r].ok()) << "rank " << r << ": " << slices[r].status();
      for (ReplayGroup& g : slices[r]->replay) {
        total_bytes += static_cast<int64_t>(g.payload.size());
        replay.push_back(std::move(g));
      }
    }
    ASSERT_EQ(replay.size(), payloads.size());
    std::set<std::string> seen;
    for (const ReplayGroup& g : replay) {
      ASSERT_TRUE(payloads.count(g.key)) << g.key;
      EXPECT_TRUE(seen.insert(g.key).second) << g.key << " replayed twice";
      EXPECT_EQ(g.step, 0);
      EXPECT_EQ(g.rewards, (std::vector<float>{1, 0, 1, 0}));
      ASSERT_EQ(g.payload.size(), payloads[g.key].size()) << g.key;
      EXPECT_TRUE(g.payload == payloads[g.key]) << g.key << ": payload differs";
    }
    int64_t expected_bytes = 0;
    for (size_t s : sizes) expected_bytes += static_cast<int64_t>(s);
    EXPECT_EQ(total_bytes, expected_bytes);
  }

  testing::TempDir state_dir_{"client_test"};
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, RunsRoundTrip) {
  absl::StatusOr<RunInfo> created = client_->CreateRun("run-b", kConfig);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->run_id, "run-b");
  EXPECT_NE(created->config_json.find("\"batch_size\": 8"), std::string::npos);
  EXPECT_NE(created->config_json.find("\"fresh_fraction\""), std::string::npos);  // canonical
  ASSERT_TRUE(client_->CreateRun("run-a", "{}").ok());

  absl::StatusOr<RunInfo> got = client_->GetRun("run-b");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->config_json, created->config_json);
  EXPECT_EQ(got->pool_size, 0);
  EXPECT_GT(got->created_unix_seconds, 1600000000);

  absl::StatusOr<std::vector<RunInfo>> runs = client_->ListRuns();
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].run_id, "run-a");
  EXPECT_EQ((*runs)[1].run_id, "run-b");

  EXPECT_EQ(client_->CreateRun("run-b", "{}").status().code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<RunInfo> bad = client_->CreateRun("run-c", R"({"batch_size": -1})");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("batch_size"), std::string::npos)
      << bad.status();

  ASSERT_TRUE(client_->DeleteRun("run-b").ok());
  absl::StatusOr<RunInfo> gone = client_->GetRun("run-b");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(gone.status().message()).find("run-b"), std::string::npos);
  EXPECT_EQ(client_->DeleteRun("run-b").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->ListRuns()->size(), 1u);
}

TEST_F(ClientTest, UpsertQuestionsAddsUpdatesAndRejectsIndividually) {
  ASSERT_TRUE(client_->CreateRun("r", kConfig).ok());
  std::vector<std::pair<int64_t, int64_t>> progress;
  absl::StatusOr<UpsertResult> first = client_->UpsertQuestions(
      "r", MakeQuestions(50), MakeEmbeddings(50, 8),
      [&](int64_t sent, int64_t total) { progress.emplace_back(sent, total); });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->added, 50);
  EXPECT_EQ(first->updated, 0);
  EXPECT_TRUE(first->rejected.empty());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), std::make_pair(int64_t{50}, int64_t{50}));

  // 10 known keys (updated), 10 new ones, one with a prior outside [0, 1] at index 3.
  std::vector<Question> more = MakeQuestions(60);
  more.erase(more.begin(), more.begin() + 40);
  more[3].prior = 1.5;
  absl::StatusOr<UpsertResult> second = client_->UpsertQuestions("r", more, MakeEmbeddings(20, 8));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->added, 10);
  EXPECT_EQ(second->updated, 9);
  ASSERT_EQ(second->rejected.size(), 1u);
  EXPECT_EQ(second->rejected[0].index, 3);
  EXPECT_EQ(second->rejected[0].key, "q43");
  EXPECT_NE(second->rejected[0].error.find("prior"), std::string::npos);
  EXPECT_EQ(client_->GetRun("r")->pool_size, 60);

  EXPECT_EQ(client_->UpsertQuestions("nope", MakeQuestions(1), {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, ImportPoolStreamsProgress) {
  const std::string dir = ::testing::TempDir();
  const std::string jsonl = dir + "/client_test_pool.jsonl";
  const std::string npy = dir + "/client_test_pool.npy";
  {
    std::string text;
    for (const Question& q : MakeQuestions(40)) {
      absl::StrAppend(&text, "{\"key\": \"", q.key, "\", \"prompt\": \"", q.prompt, "\"}\n");
    }
    FILE* f = std::fopen(jsonl.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    ASSERT_TRUE(WriteNpy(npy, MakeEmbeddings(40, 8)).ok());
  }
  ASSERT_TRUE(client_->CreateRun("imp", kConfig).ok());
  int updates = 0;
  absl::StatusOr<ImportProgress> done =
      client_->ImportPool("imp", jsonl, npy, [&](const ImportProgress&) { ++updates; });
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->done);
  EXPECT_EQ(done->questions_read, 40);
  EXPECT_EQ(done->added, 40);
  EXPECT_GE(updates, 1);
  EXPECT_EQ(client_->GetRun("imp")->pool_size, 40);

  absl::StatusOr<ImportProgress> missing = client_->ImportPool("imp", dir + "/no-such.jsonl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

TEST_F(ClientTest, TrainingStepsReportsEstimatesAndStats) {
  CreatePopulatedRun("t");
  absl::StatusOr<BatchSlice> step0 = client_->NextBatch("t", 0, 0, 1, 0);
  ASSERT_TRUE(step0.ok()) << step0.status();
  EXPECT_EQ(step0->step, 0);
  EXPECT_EQ(step0->round, 0);
  EXPECT_EQ(step0->batch_size, 8);
  ASSERT_EQ(step0->items.size(), 8u);
  for (const BatchItem& item : step0->items) {
    const int i = std::stoi(item.key.substr(1));
    EXPECT_EQ(item.prompt, absl::StrCat("What is ", i, " + ", i, "?"));
    EXPECT_EQ(item.metadata_json, absl::StrCat("{\"answer\": ", 2 * i, "}"));
  }
  // The same step again (a retry or another rank) is the same batch.
  absl::StatusOr<BatchSlice> again = client_->NextBatch("t", 0, 0, 1, 0);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(again->items[i].key, step0->items[i].key);

  ReportAll("t", 0, *step0, {{step0->items[0].key, "p0"}});
  // Reporting again is idempotent: every group a duplicate.
  std::vector<RolloutReport> repeat = {{step0->items[0].key, {1, 0, 1, 0}, 0, "p0"},
                                       {"q-unknown", {1, 0, 1, 0}, 0, ""}};
  absl::StatusOr<ReportResult> dup = client_->ReportRollouts("t", 0, repeat);
  ASSERT_TRUE(dup.ok()) << dup.status();
  EXPECT_EQ(dup->accepted, 0);
  EXPECT_EQ(dup->duplicates, 1);
  ASSERT_EQ(dup->rejected.size(), 1u);
  EXPECT_EQ(dup->rejected[0].first, "q-unknown");

  absl::StatusOr<RunStats> stats = client_->GetRunStats("t");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->step, 0);
  EXPECT_EQ(stats->pool_size, 60);
  EXPECT_EQ(stats->reported_groups, 8);
  EXPECT_EQ(stats->duplicate_reports, 1);
  EXPECT_EQ(stats->leases_outstanding, 0);
  EXPECT_EQ(stats->effective_last_step_index, -1);  // not transmitted

  absl::StatusOr<std::vector<QuestionEstimate>> all = client_->GetEstimates("t");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 60u);
  EXPECT_EQ((*all)[0].key, "q0");
  EXPECT_EQ((*all)[59].key, "q59");
  const std::string reported = step0->items[1].key;
  absl::StatusOr<std::vector<QuestionEstimate>> some = client_->GetEstimates("t", {reported, "q0"});
  ASSERT_TRUE(some.ok()) << some.status();
  ASSERT_EQ(some->size(), 2u);
  EXPECT_EQ((*some)[0].key, reported);
  EXPECT_EQ((*some)[1].key, "q0");
  for (const QuestionEstimate& e : *some) {
    EXPECT_GE(e.p_hat, 0);
    EXPECT_LE(e.p_hat, 1);
  }
  EXPECT_EQ(client_->GetEstimates("t", {"nope"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->GetRunStats("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->NextBatch("t", 1, 2, 2, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, ReplayPayloadsOfZeroOneThreeAndNineMiBAreByteIdentical) {
  ReplayRoundTrip({0, 1, 3 * kMiB, 9 * kMiB}, /*ranks=*/1);
}

// Over 16 MiB of replay payload in one step with default channel limits (4 MiB receive), as
// two concurrent ranks of one client.
TEST_F(ClientTest, BatchOver16MiBWithDefaultLimits) {
  ReplayRoundTrip({5 * kMiB, 5 * kMiB, 5 * kMiB, 5 * kMiB}, /*ranks=*/2);
}

TEST_F(ClientTest, FourRanksConcurrentlyPartitionTheBatch) {
  CreatePopulatedRun("ranks");
  std::vector<absl::StatusOr<BatchSlice>> slices(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] { slices[r] = client_->NextBatch("ranks", 0, r, 4, 0); });
  }
  for (auto& t : threads) t.join();
  absl::StatusOr<BatchSlice> whole = client_->NextBatch("ranks", 0, 0, 1, 0);
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<std::string> concatenated;
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(slices[r].ok()) << slices[r].status();
    EXPECT_EQ(slices[r]->items.size(), 2u);  // 8 items, balanced
    EXPECT_EQ(slices[r]->batch_size, 8);
    for (const BatchItem& item : slices[r]->items) concatenated.push_back(item.key);
  }
  std::vector<std::string> expected;
  for (const BatchItem& item : whole->items) expected.push_back(item.key);
  EXPECT_EQ(concatenated, expected);
}

TEST_F(ClientTest, NextBatchWaitEndsAtTheDeadline) {
  CreatePopulatedRun("wait");
  absl::StatusOr<BatchSlice> step0 = client_->NextBatch("wait", 0, 0, 1, 0);
  ASSERT_TRUE(step0.ok());
  ReportAll("wait", 0, *step0, {});
  ASSERT_TRUE(client_->NextBatch("wait", 1, 0, 1, 0).ok());
  // Step 2 opens round 1, which needs step 1's reports: the call waits, then gives up.
  const absl::Time start = absl::Now();
  absl::StatusOr<BatchSlice> step2 =
      client_->NextBatch("wait", 2, 0, 1, 0, {.timeout = absl::Milliseconds(700)});
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(step2.ok());
  EXPECT_TRUE(step2.status().code() == absl::StatusCode::kDeadlineExceeded ||
              step2.status().code() == absl::StatusCode::kFailedPrecondition)
      << step2.status();
  EXPECT_GE(took, absl::Milliseconds(600));
  EXPECT_LT(took, absl::Milliseconds(700) + absl::Seconds(1));
}

TEST_F(ClientTest, DrainingServerIsRetriedThenReportedUnavailable) {
  std::unique_ptr<Client> client =
      MakeClient({.max_attempts = 3, .initial_backoff = absl::Milliseconds(10)});
  ASSERT_TRUE(client->CreateRun("d", kConfig).ok());
  server_->BeginDrain();
  int attempts = 0;
  absl::StatusOr<RunInfo> run = client->GetRun("d", {.attempts = &attempts});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable) << run.status();
  EXPECT_EQ(attempts, 3);
  attempts = 0;
  EXPECT_EQ(client->CreateRun("e", kConfig, {.attempts = &attempts}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 1);
}

// The client is created for an address nobody listens on yet; the server comes up there later.
// A Unix socket in this test's own directory is an address no other test can take in between
// (a TCP port picked in advance could be, under ctest -j).
TEST(ClientLateServerTest, RetriesUntilTheServerComesUp) {
  const testing::TempDir dir("late_server");
  const std::string address = absl::StrCat("unix:", dir.path(), "/dots.sock");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = address,
                      .max_attempts = 30,
                      .initial_backoff = absl::Milliseconds(50),
                      .max_backoff = absl::Milliseconds(200)});
  ASSERT_TRUE(client.ok());
  std::unique_ptr<Server> server;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(400));
    Server::Options options;
    options.listen_address = address;
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(options);
    ASSERT_TRUE(s.ok()) << s.status();
    server = std::move(*s);
  });
  int attempts = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<RunInfo>> runs =
      (*client)->ListRuns({.timeout = absl::Seconds(10), .attempts = &attempts});
  starter.join();
  EXPECT_TRUE(runs.ok()) << runs.status();
  EXPECT_GT(attempts, 1);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(350));
  EXPECT_EQ((*client)->total_retries(), attempts - 1);
  if (server != nullptr) server->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace dots
