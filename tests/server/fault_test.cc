// Faults around the real server: a full disk under the state directory (a small tmpfs), a
// trainer worker that dies in the middle of a step, clients that vanish in the middle of a stream.
#include <sys/mount.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/service.h"
#include "tests/server/server_process.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

std::unique_ptr<Client> Connect(const std::string& address) {
  Client::Options options;
  options.target = address;
  options.max_attempts = 1;
  options.default_deadline = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// A tmpfs of `megabytes` mounted on a fresh temporary directory, unmounted at the end.
class SmallDisk {
 public:
  explicit SmallDisk(int megabytes) : dir_("fault_disk") {
    const std::string options = absl::StrCat("size=", megabytes, "m");
    if (mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (mounted_) umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }

  // Writes `name` in 256 KiB pieces until the disk is full; returns the bytes written.
  int64_t Fill(const std::string& name) {
    FILE* f = std::fopen(path(name).c_str(), "wb");
    if (f == nullptr) return 0;
    const std::string piece(256 << 10, 'x');
    int64_t written = 0;
    while (true) {
      const size_t n = std::fwrite(piece.data(), 1, piece.size(), f);
      written += static_cast<int64_t>(n);
      if (n < piece.size() || std::fflush(f) != 0) break;
    }
    std::fclose(f);
    return written;
  }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string error_;
};

constexpr char kRun[] = "disk";
constexpr char kDiskConfig[] = R"({"batch_size": 8, "group_size": 4, "steps_per_round": 2,
  "reference_size": 2, "fresh_fraction": 0.5, "seed": 3, "lease_timeout_seconds": 600,
  "replay": {"capacity_groups": 64}, "estimator": {"mode": "history"}})";

// A full state directory: writes fail with UNAVAILABLE naming state_dir, the server stays up and
// keeps answering reads, and once space is freed writes succeed again; after a restart every
// acknowledged report is there exactly once.
TEST(FaultTest, FullDiskFailsWritesCleanlyAndRecoversWhenSpaceReturns) {
  // RocksDB preallocates its write-ahead log (about one 64 MiB write buffer) and resumes after a
  // full disk only once that much is free again, so the disk is a few of those.
  SmallDisk disk(256);
  ASSERT_TRUE(disk.mounted()) << "mounting a tmpfs failed (" << disk.error()
                              << "); this test needs root, as make test has on its machines";
  const std::vector<std::string> flags = {"--state_dir=" + disk.path("state")};
  auto server = std::make_unique<ServerProcess>(flags);
  ASSERT_FALSE(server->address().empty()) << "dots-server did not start";
  std::unique_ptr<Client> client = Connect(server->address());
  ASSERT_TRUE(client->CreateRun(kRun, kDiskConfig).ok());
  ASSERT_TRUE(client->UpsertQuestions(kRun, MakeQuestions(64), FloatMatrix()).ok());
  ASSERT_GT(disk.Fill("ballast"), 0);

  std::mt19937_64 rng(11);
  std::map<std::string, int64_t> acked_per_key, sent_per_key;
  int64_t step = 0, failures = 0, acked_after_failure = 0;
  std::string first_failure;
  bool freed = false;
  const absl::Time give_up = absl::Now() + absl::Seconds(90);
  while (absl::Now() < give_up && acked_after_failure < 8) {
    auto batch = client->NextBatch(kRun, step, 0, 1, 0);
    if (!batch.ok()) {
      ASSERT_EQ(batch.status().code(), absl::StatusCode::kUnavailable) << batch.status();
      EXPECT_TRUE(absl::StrContains(batch.status().message(), "state_dir")) << batch.status();
      ++failures;
      if (first_failure.empty()) first_failure = std::string(batch.status().message());
    } else {
      std::vector<RolloutReport> groups;
      for (const BatchItem& item : batch->items) {
        std::string payload(512 << 10, '\0');
        for (char& c : payload) c = static_cast<char>(rng());
        groups.push_back({item.key, {1, 0, 0, 1}, 0, std::move(payload)});
      }
      for (const RolloutReport& g : groups) ++sent_per_key[g.key];
      auto reported = client->ReportRollouts(kRun, step, groups);
      if (reported.ok()) {
        EXPECT_TRUE(reported->rejected.empty());
        for (const RolloutReport& g : groups) ++acked_per_key[g.key];
        if (freed) ++acked_after_failure;
        ++step;
      } else {
        ASSERT_EQ(reported.status().code(), absl::StatusCode::kUnavailable) << reported.status();
        EXPECT_TRUE(absl::StrContains(reported.status().message(), "state_dir"))
            << reported.status();
        ++failures;
        if (first_failure.empty()) first_failure = std::string(reported.status().message());
      }
    }
    ASSERT_TRUE(server->Alive()) << "dots-server died after " << failures << " failed writes";
    // Reads keep working while the disk is full.
    auto stats = client->GetRunStats(kRun);
    ASSERT_TRUE(stats.ok()) << stats.status();
    // A few failures in a row, then space returns.
    if (failures >= 5 && !freed) {
      std::filesystem::remove(disk.path("ballast"));
      freed = true;
    }
  }
  std::printf("full disk: %lld steps acknowledged, %lld failed calls, first: %s\n",
              static_cast<long long>(step), static_cast<long long>(failures),
              first_failure.c_str());
  ASSERT_TRUE(freed) << "the disk never filled up";
  ASSERT_GE(acked_after_failure, 8) << "writes did not recover once space returned";

  // Restart on the same directory: every acknowledged report once, none beyond what was sent.
  client.reset();
  server->Kill();
  server = std::make_unique<ServerProcess>(flags);
  ASSERT_FALSE(server->address().empty()) << "dots-server did not restart";
  client = Connect(server->address());
  auto estimates = client->GetEstimates(kRun);
  ASSERT_TRUE(estimates.ok()) << estimates.status();
  for (const QuestionEstimate& e : *estimates) {
    EXPECT_GE(e.observations, acked_per_key[e.key]) << e.key << ": an acknowledged report lost";
    EXPECT_LE(e.observations, sent_per_key[e.key]) << e.key << ": a report applied twice";
  }
}

// An in-process durable server, for the faults of trainer workers and clients.
class ClientFaultTest : public ServerTest {
 protected:
  void SetUp() override {
    Server::Options options = TestOptions();
    options.state_dir = state_.path();
    Start(options);
  }

  pb::RunStats Stats(const std::string& run_id) {
    grpc::ClientContext context;
    pb::GetRunStatsRequest request;
    request.set_run_id(run_id);
    pb::RunStats stats;
    EXPECT_TRUE(stub_->GetRunStats(&context, request, &stats).ok());
    return stats;
  }
  // Observations per question key.
  std::map<std::string, int64_t> Observations(const std::string& run_id) {
    grpc::ClientContext context;
    pb::GetEstimatesRequest request;
    request.set_run_id(run_id);
    pb::GetEstimatesResponse response;
    EXPECT_TRUE(stub_->GetEstimates(&context, request, &response).ok());
    std::map<std::string, int64_t> out;
    for (const pb::QuestionEstimate& e : response.estimates()) out[e.key()] = e.observations();
    return out;
  }
  // Waits until every streaming call has ended on the server (their reactors are gone).
  void ExpectNoOpenStreams() {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (server_->service().streams_open() > 0 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(server_->service().streams_open(), 0);
  }

  TempDir state_{"client_fault"};
};

// Every question of the pool is in every batch (pool = batch size, no reference questions), one
// step per round, short
// leases: a worker that dies holding half of a step only delays the next round by the lease.
constexpr char kLeaseConfig[] = R"({"batch_size": 8, "group_size": 4, "steps_per_round": 1,
  "reference_mode": "none", "seed": 4, "lease_timeout_seconds": 1, "replay": {"enabled": false},
  "estimator": {"mode": "history"}})";

TEST_F(ClientFaultTest, WorkerThatDiesMidStepHasItsQuestionsServedAgain) {
  CreateRunWithPool("lease", 8, kLeaseConfig);
  ReceivedBatch rank0, rank1;
  grpc::Status first = NextBatch("lease", 0, 0, 2, &rank0);
  ASSERT_TRUE(first.ok()) << first.error_message();
  ASSERT_TRUE(NextBatch("lease", 0, 1, 2, &rank1).ok());  // rank 1 then dies, reporting nothing
  ASSERT_EQ(rank0.items.size(), 4u);
  ASSERT_EQ(rank1.items.size(), 4u);
  ASSERT_TRUE(ReportItems("lease", 0, rank0).ok());
  EXPECT_EQ(Stats("lease").leases_outstanding(), 4);

  // Round 1 waits for the dead worker's leases, then is served to the survivor and to the
  // dead worker's replacement.
  const absl::Time start = absl::Now();
  ReceivedBatch next0, next1;
  ASSERT_TRUE(NextBatch("lease", 1, 0, 2, &next0, 0, absl::Seconds(20)).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));  // it did wait for the expiry
  ASSERT_TRUE(NextBatch("lease", 1, 1, 2, &next1, 0, absl::Seconds(20)).ok());
  const pb::RunStats after = Stats("lease");
  EXPECT_EQ(after.leases_expired(), 4);
  EXPECT_EQ(after.reported_groups(), 4);  // the survivor's reports are all kept
  std::set<std::string> served_again;
  for (const ReceivedBatch* b : {&next0, &next1}) {
    for (const pb::BatchItem& item : b->items) served_again.insert(item.key());
  }
  std::map<std::string, int64_t> observed = Observations("lease");
  for (const pb::BatchItem& item : rank1.items) {
    EXPECT_TRUE(served_again.contains(item.key())) << item.key() << " was not served again";
    EXPECT_EQ(observed[item.key()], 0) << item.key();
  }
  for (const pb::BatchItem& item : rank0.items) EXPECT_EQ(observed[item.key()], 1) << item.key();

  // The replacement reports step 1, and the dead worker, back from the dead, reports step 0
  // late: both count once, a repeat of either is a duplicate.
  ASSERT_TRUE(ReportItems("lease", 1, next0).ok());
  ASSERT_TRUE(ReportItems("lease", 1, next1).ok());
  pb::ReportRolloutsResponse late, again;
  ASSERT_TRUE(ReportItems("lease", 0, rank1, 16, &late).ok());
  EXPECT_EQ(late.accepted(), 4);
  ASSERT_TRUE(ReportItems("lease", 0, rank1, 16, &again).ok());
  EXPECT_EQ(again.duplicates(), 4);
  observed = Observations("lease");
  for (const pb::BatchItem& item : rank1.items) EXPECT_EQ(observed[item.key()], 2) << item.key();
  EXPECT_EQ(Stats("lease").reported_groups(), 16);
}

// Clients that vanish in the middle of each kind of stream: nothing of the broken call is
// applied, no stream stays open on the server, and the same call made whole afterwards works as
// if the broken one never happened.
TEST_F(ClientFaultTest, ClientsDisconnectingMidStreamLeaveNothingBehind) {
  CreateRunWithPool("gone", 64);
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("gone", 0, 0, 1, &batch).ok());
  const pb::RunStats before = Stats("gone");
  for (int attempt = 0; attempt < 20; ++attempt) {
    // A report cut after the first fragment of a 1 MiB payload.
    {
      grpc::ClientContext context;
      pb::ReportRolloutsResponse response;
      auto writer = stub_->ReportRollouts(&context, &response);
      pb::ReportRolloutsRequest request;
      request.set_run_id("gone");
      request.set_step(0);
      pb::RolloutFragment* f = request.add_groups();
      f->set_key(batch.items[0].key());
      for (float r : {1.0f, 0.0f, 1.0f, 0.0f}) f->add_rewards(r);
      f->set_payload_size(1 << 20);
      f->set_data(std::string(64 << 10, 'p'));
      ASSERT_TRUE(writer->Write(request));
      context.TryCancel();
      EXPECT_FALSE(writer->Finish().ok());
    }
    // An upload cut after two of its messages.
    {
      grpc::ClientContext context;
      pb::UpsertQuestionsResponse response;
      auto writer = stub_->UpsertQuestions(&context, &response);
      pb::UpsertQuestionsRequest request;
      request.set_run_id("gone");
      for (const pb::Question& q : WireQuestions(16, 8)) {
        pb::Question renamed = q;
        renamed.set_key("new-" + q.key());
        *request.add_questions() = renamed;
      }
      ASSERT_TRUE(writer->Write(request));
      request.clear_run_id();
      ASSERT_TRUE(writer->Write(request));
      context.TryCancel();
      EXPECT_FALSE(writer->Finish().ok());
    }
    // A batch read in part: one chunk of a multi-chunk answer.
    {
      grpc::ClientContext context;
      pb::NextBatchRequest request;
      request.set_run_id("gone");
      request.set_step(0);
      request.set_max_chunk_bytes(1024);
      auto reader = stub_->NextBatch(&context, request);
      pb::NextBatchChunk chunk;
      ASSERT_TRUE(reader->Read(&chunk));
      context.TryCancel();
      reader->Finish().ok();
    }
    ExpectNoOpenStreams();
  }
  const pb::RunStats after = Stats("gone");
  EXPECT_EQ(after.pool_size(), before.pool_size());
  EXPECT_EQ(after.reported_groups(), before.reported_groups());
  EXPECT_EQ(after.replay_bytes(), before.replay_bytes());
  EXPECT_EQ(after.duplicate_reports(), before.duplicate_reports());
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (server_->service().calls_in_flight() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(server_->service().calls_in_flight(), 0);
  // The whole report of the group that was cut 20 times is its first: accepted, not a duplicate.
  pb::ReportRolloutsResponse response;
  ASSERT_TRUE(ReportItems("gone", 0, batch, 1 << 20, &response).ok());
  EXPECT_EQ(response.accepted(), static_cast<int64_t>(batch.items.size()));
  EXPECT_EQ(response.duplicates(), 0);
  ReceivedBatch again;
  ASSERT_TRUE(NextBatch("gone", 0, 0, 1, &again).ok());
  ASSERT_EQ(again.items.size(), batch.items.size());
  for (size_t i = 0; i < batch.items.size(); ++i) {
    EXPECT_EQ(again.items[i].key(), batch.items[i].key());
  }
}

}  // namespace
}  // namespace dots::testing
