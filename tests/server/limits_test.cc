// Per-server and per-run limits (Server::Options::run_options.limits, max_concurrent_streams):
// over a limit a call is RESOURCE_EXHAUSTED naming the limit, and nothing is written.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "core/storage/state_store.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/service.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

constexpr char kConfig[] = R"({"batch_size": 8, "group_size": 4, "steps_per_round": 1,
  "reference_size": 2, "replay": {"capacity_bytes": 1048576}})";

void ExpectExhausted(const absl::Status& status, const std::string& limit) {
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), limit)) << status;
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Server::Options options = TestOptions();
    options.state_dir = state_.path();
    options.run_options.limits.max_runs = 2;
    options.run_options.limits.max_questions_per_run = 100;
    options.run_options.limits.max_embedding_dim = 16;
    options.run_options.limits.max_replay_bytes_per_run = 1 << 20;
    options.max_concurrent_streams = MaxStreams();
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    Client::Options client_options;
    client_options.target = server_->address();
    client_ = *Client::Create(client_options);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
  }
  // Generous except where the stream limit is under test: the server counts a stream until its
  // reactor is done, which may be a moment after the client saw the call's status, so strictly
  // sequential streaming calls may briefly overlap on the server.
  virtual int MaxStreams() const { return 64; }

  // The pool sizes of every run, e.g. "a:64 b:0".
  std::string Runs() {
    auto runs = client_->ListRuns();
    EXPECT_TRUE(runs.ok()) << runs.status();
    std::string out;
    for (const RunInfo& r : runs.ok() ? *runs : std::vector<RunInfo>()) {
      absl::StrAppend(&out, out.empty() ? "" : " ", r.run_id, ":", r.pool_size);
    }
    return out;
  }

  TempDir state_{"limits_test"};
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(LimitsTest, RunsPerServer) {
  ASSERT_TRUE(client_->CreateRun("a", kConfig).ok());
  ASSERT_TRUE(client_->CreateRun("b", kConfig).ok());
  ExpectExhausted(client_->CreateRun("c", kConfig).status(), "max_runs");
  EXPECT_EQ(Runs(), "a:0 b:0");
  // An import is refused the same way, before anything is written.
  const std::string archive = state_.path() + "/../limits_a.dotsrun";
  ASSERT_TRUE(client_->ExportRun("a", archive).ok());
  ExpectExhausted(client_->ImportRun(archive, "c").status(), "max_runs");
  EXPECT_EQ(Runs(), "a:0 b:0");
  std::filesystem::remove(archive);
  // Room again after a deletion.
  ASSERT_TRUE(client_->DeleteRun("a").ok());
  EXPECT_TRUE(client_->CreateRun("c", kConfig).ok());
  EXPECT_EQ(Runs(), "b:0 c:0");
}

TEST_F(LimitsTest, QuestionsPerRunCountOnlyNewKeys) {
  ASSERT_TRUE(client_->CreateRun("a", kConfig).ok());
  ASSERT_TRUE(client_->UpsertQuestions("a", MakeQuestions(64), FloatMatrix()).ok());
  // 64 + 40 new > 100: refused whole, even the questions that would fit.
  ExpectExhausted(client_->UpsertQuestions("a", MakeQuestions(40, 64), FloatMatrix()).status(),
                  "max_questions_per_run");
  EXPECT_EQ(Runs(), "a:64");
  // 4 updates + 36 new = exactly 100.
  auto upserted = client_->UpsertQuestions("a", MakeQuestions(40, 60), FloatMatrix());
  ASSERT_TRUE(upserted.ok()) << upserted.status();
  EXPECT_EQ(upserted->added, 36);
  EXPECT_EQ(upserted->updated, 4);
  ExpectExhausted(client_->UpsertQuestions("a", MakeQuestions(1, 100), FloatMatrix()).status(),
                  "max_questions_per_run");
  EXPECT_EQ(Runs(), "a:100");
}

// A run over a per-run limit cannot be imported either, and its records do not stay behind.
TEST_F(LimitsTest, ImportOfARunOverALimit) {
  TempDir other_state("limits_other");
  Server::Options options = TestOptions();
  options.state_dir = other_state.path();
  std::unique_ptr<Server> other = StartTestServer(options);
  ASSERT_NE(other, nullptr);
  Client::Options client_options;
  client_options.target = other->address();
  std::unique_ptr<Client> other_client = *Client::Create(client_options);
  ASSERT_TRUE(other_client->CreateRun("big", kConfig).ok());
  ASSERT_TRUE(other_client->UpsertQuestions("big", MakeQuestions(120), FloatMatrix()).ok());
  const std::string archive = other_state.path() + "/big.dotsrun";
  ASSERT_TRUE(other_client->ExportRun("big", archive).ok());
  other->Shutdown(absl::ZeroDuration());

  ExpectExhausted(client_->ImportRun(archive).status(), "max_questions_per_run");
  EXPECT_EQ(Runs(), "");
  auto stored = server_->registry().store()->ListRuns();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(stored->empty()) << (*stored)[0];
}

TEST_F(LimitsTest, EmbeddingDimension) {
  ASSERT_TRUE(client_->CreateRun("a", kConfig).ok());
  ExpectExhausted(client_->UpsertQuestions("a", MakeQuestions(8), MakeEmbeddings(8, 17)).status(),
                  "max_embedding_dim");
  EXPECT_EQ(Runs(), "a:0");
  EXPECT_TRUE(client_->UpsertQuestions("a", MakeQuestions(8), MakeEmbeddings(8, 16)).ok());
  EXPECT_EQ(Runs(), "a:8");
}

TEST_F(LimitsTest, ReplayBytesPerRun) {
  // The default replay capacity (1 GiB) is over this server's 1 MiB.
  ExpectExhausted(client_->CreateRun("a", R"({"batch_size": 8, "reference_size": 2})").status(),
                  "max_replay_bytes_per_run");
  ExpectExhausted(
      client_
          ->CreateRun(
              "a",
              R"({"batch_size": 8, "reference_size": 2, "replay": {"capacity_bytes": 1048577}})")
          .status(),
      "replay.capacity_bytes = 1048577");
  EXPECT_EQ(Runs(), "");
  EXPECT_TRUE(client_->CreateRun("a", kConfig).ok());
}

class StreamLimitTest : public LimitsTest {
 protected:
  int MaxStreams() const override { return 2; }
};

// Two client streams held open: a third streaming call of any kind is refused, unary calls are
// not; once the streams end, streaming calls work again.
TEST_F(StreamLimitTest, ConcurrentStreams) {
  ASSERT_TRUE(client_->CreateRun("a", kConfig).ok());
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = pb::Dots::NewStub(channel);
  grpc::ClientContext c1, c2;
  pb::UpsertQuestionsResponse r1;
  pb::ReportRolloutsResponse r2;
  auto w1 = stub->UpsertQuestions(&c1, &r1);
  auto w2 = stub->ReportRollouts(&c2, &r2);
  pb::UpsertQuestionsRequest first;
  first.set_run_id("a");
  ASSERT_TRUE(w1->Write(first));
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (server_->service().streams_open() < 2 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(server_->service().streams_open(), 2);
  ExpectExhausted(client_->UpsertQuestions("a", MakeQuestions(4), FloatMatrix()).status(),
                  "max_concurrent_streams");
  ExpectExhausted(client_->NextBatch("a", 0, 0, 1, 0).status(), "max_concurrent_streams");
  EXPECT_TRUE(client_->GetRunStats("a").ok());  // unary calls are not streams
  EXPECT_EQ(Runs(), "a:0");
  w1->WritesDone();
  EXPECT_TRUE(w1->Finish().ok());
  c2.TryCancel();
  EXPECT_EQ(w2->Finish().error_code(), grpc::StatusCode::CANCELLED);
  while (server_->service().streams_open() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server_->service().streams_open(), 0);
  EXPECT_TRUE(client_->UpsertQuestions("a", MakeQuestions(4), FloatMatrix()).ok());
}

}  // namespace
}  // namespace dots::testing
