// dots::Client against a scripted in-process fake of dots.v1.Dots (sync gRPC API on
// 127.0.0.1:0, real channel): retries and their count, deadlines, status mapping, metadata, the
// request framing (message sizes, fragments) and the defences against malformed response
// streams — behaviour a correct server cannot be made to show on demand.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cpp/client.h"
#include "core/util/mutex.h"
#include "dots/v1/dots.grpc.pb.h"
#include "gtest/gtest.h"
#include "proto/convert.h"
#include "proto/payload_codec.h"
#include "tests/client/test_payload.h"
#include "tests/proto/broken_batches.h"

namespace dots {
namespace {

namespace pb = ::dots::v1;

// Each RPC's behaviour is a lambda the test sets; counters record attempts.
class FakeDots final : public pb::Dots::Service {
 public:
  std::atomic<int> get_run_calls{0};
  std::atomic<int> create_run_calls{0};
  std::atomic<int> next_batch_calls{0};
  std::atomic<int> report_calls{0};
  std::atomic<int> upsert_calls{0};
  std::atomic<int> stats_calls{0};
  std::atomic<int> estimates_calls{0};

  std::function<grpc::Status(grpc::ServerContext*, const std::string& run_id, int call)> get_run;
  std::function<grpc::Status(int call)> create_run;
  std::function<grpc::Status(grpc::ServerWriter<pb::NextBatchChunk>*, int call)> next_batch;
  std::function<grpc::Status(const pb::GetEstimatesRequest&, pb::GetEstimatesResponse*)> estimates;
  std::function<grpc::Status(grpc::ServerContext*)> stats;
  int fail_reports_first = 0;  // ReportRollouts: UNAVAILABLE for the first n calls

  Mutex mu;
  std::vector<pb::ReportRolloutsRequest> report_messages;  // of the last call
  std::vector<pb::UpsertQuestionsRequest> upsert_messages;

  grpc::Status GetRun(grpc::ServerContext* context, const pb::GetRunRequest* request,
                      pb::RunInfo* response) override {
    const int call = ++get_run_calls;
    grpc::Status s = get_run ? get_run(context, request->run_id(), call) : grpc::Status::OK;
    if (s.ok()) {
      response->set_run_id(request->run_id());
      response->set_config_json("{}");
      response->set_pool_size(42);
      response->set_created_unix_seconds(1700000000);
    }
    return s;
  }

  grpc::Status CreateRun(grpc::ServerContext*, const pb::CreateRunRequest* request,
                         pb::RunInfo* response) override {
    const int call = ++create_run_calls;
    grpc::Status s = create_run ? create_run(call) : grpc::Status::OK;
    if (s.ok()) response->set_run_id(request->run_id());
    return s;
  }

  grpc::Status NextBatch(grpc::ServerContext*, const pb::NextBatchRequest*,
                         grpc::ServerWriter<pb::NextBatchChunk>* writer) override {
    const int call = ++next_batch_calls;
    return next_batch(writer, call);
  }

  grpc::Status ReportRollouts(grpc::ServerContext*,
                              grpc::ServerReader<pb::ReportRolloutsRequest>* reader,
                              pb::ReportRolloutsResponse* response) override {
    const int call = ++report_calls;
    std::vector<pb::ReportRolloutsRequest> messages;
    pb::ReportRolloutsRequest m;
    while (reader->Read(&m)) messages.push_back(m);
    if (call <= fail_reports_first) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
    int64_t groups = 0;
    for (const auto& msg : messages) {
      for (const auto& f : msg.groups()) groups += f.offset() == 0 ? 1 : 0;
    }
    response->set_accepted(groups);
    MutexLock lock(&mu);
    report_messages = std::move(messages);
    return grpc::Status::OK;
  }

  grpc::Status UpsertQuestions(grpc::ServerContext*,
                               grpc::ServerReader<pb::UpsertQuestionsRequest>* reader,
                               pb::UpsertQuestionsResponse* response) override {
    ++upsert_calls;
    std::vector<pb::UpsertQuestionsRequest> messages;
    pb::UpsertQuestionsRequest m;
    int64_t n = 0;
    while (reader->Read(&m)) {
      n += m.questions_size();
      messages.push_back(m);
    }
    response->set_added(n);
    pb::RejectedQuestion* r = response->add_rejected();
    r->set_index(n - 1);
    r->set_key("last");
    r->set_error("field \"prior\": test rejection");
    MutexLock lock(&mu);
    upsert_messages = std::move(messages);
    return grpc::Status::OK;
  }

  grpc::Status GetEstimates(grpc::ServerContext*, const pb::GetEstimatesRequest* request,
                            pb::GetEstimatesResponse* response) override {
    ++estimates_calls;
    return estimates(*request, response);
  }

  grpc::Status GetRunStats(grpc::ServerContext* context, const pb::GetRunStatsRequest*,
                           pb::RunStats* response) override {
    ++stats_calls;
    response->set_step(7);
    response->set_replay_bytes(123);
    return stats ? stats(context) : grpc::Status::OK;
  }
};

class ClientProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    target_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  std::unique_ptr<Client> MakeClient(Client::Options options = {}) {
    options.target = target_;
    options.initial_backoff = absl::Milliseconds(5);
    options.max_backoff = absl::Milliseconds(40);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(*client);
  }

  FakeDots fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

TEST_F(ClientProtocolTest, RetriesUnavailableUntilSuccessAndCountsAttempts) {
  fake_.get_run = [](grpc::ServerContext*, const std::string&, int call) {
    return call <= 2 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting") : grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  int attempts = 0;
  absl::StatusOr<RunInfo> run = client->GetRun("r1", {.attempts = &attempts});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->run_id, "r1");
  EXPECT_EQ(run->pool_size, 42);
  EXPECT_EQ(run->created_unix_seconds, 1700000000);
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(fake_.get_run_calls.load(), 3);
  EXPECT_EQ(client->total_retries(), 2);
}

TEST_F(ClientProtocolTest, GivesUpAfterMaxAttempts) {
  fake_.get_run = [](grpc::ServerContext*, const std::string&, int) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
  };
  Client::Options options;
  options.max_attempts = 4;
  std::unique_ptr<Client> client = MakeClient(options);
  int attempts = 0;
  absl::StatusOr<RunInfo> run = client->GetRun("r1", {.attempts = &attempts});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(fake_.get_run_calls.load(), 4);
  EXPECT_NE(std::string(run.status().message()).find("draining"), std::string::npos);
}

TEST_F(ClientProtocolTest, CreateRunIsNotRetried) {
  fake_.create_run = [](int) { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining"); };
  std::unique_ptr<Client> client = MakeClient();
  int attempts = 0;
  absl::StatusOr<RunInfo> run = client->CreateRun("r1", "{}", {.attempts = &attempts});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(fake_.create_run_calls.load(), 1);
}

TEST_F(ClientProtocolTest, EveryStatusCodeAndMessageIsKept) {
  std::unique_ptr<Client> client = MakeClient({.max_attempts = 1});
  for (int code = 1; code <= 16; ++code) {
    const std::string message = absl::StrCat("field \"x\": failure ", code);
    fake_.get_run = [&](grpc::ServerContext*, const std::string&, int) {
      return grpc::Status(static_cast<grpc::StatusCode>(code), message);
    };
    absl::StatusOr<RunInfo> run = client->GetRun("r1");
    ASSERT_FALSE(run.ok());
    EXPECT_EQ(static_cast<int>(run.status().code()), code);
    EXPECT_EQ(run.status().message(), message);
  }
}

TEST_F(ClientProtocolTest, NonRetryableCodesAreNotRetried) {
  fake_.get_run = [](grpc::ServerContext*, const std::string&, int) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "run_id: no run \"r1\"");
  };
  std::unique_ptr<Client> client = MakeClient();
  int attempts = 0;
  absl::StatusOr<RunInfo> run = client->GetRun("r1", {.attempts = &attempts});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(run.status().message(), "run_id: no run \"r1\"");
  EXPECT_EQ(attempts, 1);
}

TEST_F(ClientProtocolTest, SendsBearerToken) {
  std::string seen;
  fake_.get_run = [&](grpc::ServerContext* context, const std::string&, int) {
    auto it = context->client_metadata().find("authorization");
    if (it != context->client_metadata().end()) seen.assign(it->second.data(), it->second.size());
    return grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient({.token = "s3cret"});
  ASSERT_TRUE(client->GetRun("r1").ok());
  EXPECT_EQ(seen, "Bearer s3cret");
}

TEST_F(ClientProtocolTest, SendsTheRunAsTheRoutingHeader) {
  auto header = [](grpc::ServerContext* context) {
    const auto range = context->client_metadata().equal_range(kRoutingHeader);
    std::vector<std::string> values;
    for (auto it = range.first; it != range.second; ++it) {
      values.emplace_back(it->second.data(), it->second.size());
    }
    return values;
  };
  std::vector<std::string> get_run, stats;
  fake_.get_run = [&](grpc::ServerContext* context, const std::string&, int) {
    get_run = header(context);
    return grpc::Status::OK;
  };
  fake_.stats = [&](grpc::ServerContext* context) {
    stats = header(context);
    return grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  ASSERT_TRUE(client->GetRun("r1").ok());
  ASSERT_TRUE(client->GetRunStats("run two").ok());
  EXPECT_EQ(get_run, std::vector<std::string>{"r1"});
  EXPECT_EQ(stats, std::vector<std::string>{"run two"});
}

TEST_F(ClientProtocolTest, DeadlineIsRespected) {
  fake_.stats = [](grpc::ServerContext* context) {
    for (int i = 0; i < 200 && !context->IsCancelled(); ++i) absl::SleepFor(absl::Milliseconds(10));
    return grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  const absl::Time start = absl::Now();
  absl::StatusOr<RunStats> stats = client->GetRunStats("r1", {.timeout = absl::Milliseconds(200)});
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kDeadlineExceeded) << stats.status();
  EXPECT_GE(took, absl::Milliseconds(190));
  EXPECT_LT(took, absl::Seconds(1));
}

TEST_F(ClientProtocolTest, RetriesStopAtTheDeadline) {
  fake_.get_run = [](grpc::ServerContext*, const std::string&, int) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
  };
  std::unique_ptr<Client> client = MakeClient({.max_attempts = 1000});
  int attempts = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<RunInfo> run =
      client->GetRun("r1", {.timeout = absl::Milliseconds(300), .attempts = &attempts});
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(took, absl::Milliseconds(800));
  EXPECT_GT(attempts, 3);     // 5 ms backoff doubling to 40 ms: several fit in 300 ms
  EXPECT_LT(attempts, 1000);  // but the deadline, not max_attempts, ended the call
}

TEST_F(ClientProtocolTest, NextBatchRetriesAWholeStreamThatBrokeMidway) {
  fake_.next_batch = [](grpc::ServerWriter<pb::NextBatchChunk>* writer, int call) {
    pb::NextBatchChunk chunk;
    auto* h = chunk.mutable_header();
    h->set_step(4);
    h->set_round(2);
    h->set_batch_size(3);
    h->set_item_count(1);
    h->set_replay_count(1);
    auto* item = chunk.add_items();
    item->set_key("q1");
    item->set_role(pb::ROLE_REFERENCE);
    item->set_prompt("p");
    item->set_metadata_json("{\"a\": 1}");
    auto* f = chunk.add_replay();
    f->set_index(0);
    f->set_key("q7");
    f->set_step(3);
    f->set_policy_version(2);
    f->add_rewards(1);
    f->add_rewards(0);
    f->set_payload_size(10);
    f->set_offset(0);
    f->set_data("01234");
    writer->Write(chunk);
    if (call == 1) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
    pb::NextBatchChunk rest;
    auto* g = rest.add_replay();
    g->set_index(0);
    g->set_key("q7");
    g->set_payload_size(10);
    g->set_offset(5);
    g->set_data("56789");
    writer->Write(rest);
    return grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  int attempts = 0;
  absl::StatusOr<BatchSlice> slice = client->NextBatch("r1", 4, 0, 1, 2, {.attempts = &attempts});
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(slice->step, 4);
  EXPECT_EQ(slice->round, 2);
  EXPECT_EQ(slice->batch_size, 3);
  ASSERT_EQ(slice->items.size(), 1u);  // the broken attempt's item is not kept
  EXPECT_EQ(slice->items[0].role, ItemRole::kReference);
  EXPECT_EQ(slice->items[0].metadata_json, "{\"a\": 1}");
  ASSERT_EQ(slice->replay.size(), 1u);
  EXPECT_EQ(slice->replay[0].key, "q7");
  EXPECT_EQ(slice->replay[0].step, 3);
  EXPECT_EQ(slice->replay[0].policy_version, 2);
  EXPECT_EQ(slice->replay[0].rewards, (std::vector<float>{1, 0}));
  EXPECT_EQ(slice->replay[0].payload, "0123456789");
}

// Streams that break the chunk protocol (every case of tests/proto/broken_batches.h) are
// INTERNAL errors naming the problem, never retried.
TEST_F(ClientProtocolTest, MalformedBatchStreamsAreRejected) {
  std::unique_ptr<Client> client = MakeClient();
  for (const testing::BrokenBatch& c : testing::BrokenBatches()) {
    fake_.next_batch = [&](grpc::ServerWriter<pb::NextBatchChunk>* writer, int) {
      for (const auto& chunk : c.chunks) writer->Write(chunk);
      return grpc::Status::OK;
    };
    int attempts = 0;
    absl::StatusOr<BatchSlice> slice = client->NextBatch("r1", 0, 0, 1, 0, {.attempts = &attempts});
    ASSERT_FALSE(slice.ok()) << c.name;
    EXPECT_EQ(slice.status().code(), absl::StatusCode::kInternal) << c.name;
    EXPECT_NE(std::string(slice.status().message()).find(c.needle), std::string::npos)
        << c.name << ": " << slice.status();
    EXPECT_EQ(attempts, 1) << c.name;
  }
}

// Reassembles what the fake received with the server's decoder (proto/payload_codec.h), which
// checks the fragment rules of dots.proto; continuations must not repeat the rewards.
std::map<std::string, RolloutReport> Reassemble(std::vector<pb::ReportRolloutsRequest> ms) {
  ReportDecoder decoder(ReportDecoderLimits{});
  for (auto& m : ms) {
    for (auto& f : *m.mutable_groups()) {
      if (f.offset() > 0) {
        EXPECT_EQ(f.rewards_size(), 0) << f.key();
      }
      absl::Status s = decoder.Add(f);
      EXPECT_TRUE(s.ok()) << s;
    }
  }
  absl::StatusOr<std::vector<RolloutReport>> groups = decoder.Finish();
  EXPECT_TRUE(groups.ok()) << groups.status();
  std::map<std::string, RolloutReport> out;
  for (RolloutReport& g : groups.ok() ? *groups : std::vector<RolloutReport>()) {
    std::string key = g.key;
    out[key] = std::move(g);
  }
  return out;
}

TEST_F(ClientProtocolTest, ReportRolloutsFragmentsPayloadsUnderTheMessageBudget) {
  std::vector<RolloutReport> groups;
  const size_t sizes[] = {0, 1, 3u << 20, 9u << 20, 100, 0, (1u << 20) - 10};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    groups.push_back({absl::StrCat("q", i),
                      {1, 0, 0.5f},
                      static_cast<int64_t>(i),
                      Pattern(sizes[i], static_cast<uint32_t>(i))});
  }
  fake_.fail_reports_first = 1;  // and the whole stream is resent once
  std::unique_ptr<Client> client = MakeClient();
  int attempts = 0;
  absl::StatusOr<ReportResult> result =
      client->ReportRollouts("r1", 5, groups, {.attempts = &attempts});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(result->accepted, static_cast<int64_t>(groups.size()));
  MutexLock lock(&fake_.mu);
  ASSERT_FALSE(fake_.report_messages.empty());
  EXPECT_EQ(fake_.report_messages[0].run_id(), "r1");
  EXPECT_EQ(fake_.report_messages[0].step(), 5);
  for (const auto& m : fake_.report_messages) {
    EXPECT_LE(m.ByteSizeLong(), size_t{1} << 20);
  }
  // 13 MiB cannot travel in fewer than 13 messages of 1 MiB.
  EXPECT_GE(fake_.report_messages.size(), 13u);
  std::map<std::string, RolloutReport> got = Reassemble(fake_.report_messages);
  ASSERT_EQ(got.size(), groups.size());
  for (const RolloutReport& g : groups) {
    EXPECT_EQ(got[g.key].payload, g.payload) << g.key;
    EXPECT_EQ(got[g.key].rewards, g.rewards) << g.key;
    EXPECT_EQ(got[g.key].policy_version, g.policy_version) << g.key;
  }
}

TEST_F(ClientProtocolTest, EmptyReportStillNamesRunAndStep) {
  std::unique_ptr<Client> client = MakeClient();
  absl::StatusOr<ReportResult> result = client->ReportRollouts("r9", 2, {});
  ASSERT_TRUE(result.ok()) << result.status();
  MutexLock lock(&fake_.mu);
  ASSERT_EQ(fake_.report_messages.size(), 1u);
  EXPECT_EQ(fake_.report_messages[0].run_id(), "r9");
  EXPECT_EQ(fake_.report_messages[0].step(), 2);
}

TEST_F(ClientProtocolTest, ReportRolloutsChecksArgumentsLocally) {
  std::unique_ptr<Client> client = MakeClient();
  EXPECT_EQ(client->ReportRollouts("r1", -1, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<RolloutReport> bad = {{"", {1}, 0, ""}};
  EXPECT_EQ(client->ReportRollouts("r1", 0, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.report_calls.load(), 0);
}

TEST_F(ClientProtocolTest, UpsertQuestionsSplitsMessagesAndReportsProgress) {
  const int64_t n = 3000, dim = 128;  // ~1.6 MB of embeddings alone
  std::vector<Question> questions;
  FloatMatrix embeddings(n, dim);
  for (int64_t i = 0; i < n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = std::string(200, 'p');
    if (i % 2 == 0) q.prior = 0.25;
    questions.push_back(q);
    for (int64_t d = 0; d < dim; ++d) embeddings.row(i)[d] = static_cast<float>(i * dim + d);
  }
  std::vector<std::pair<int64_t, int64_t>> progress;
  std::unique_ptr<Client> client = MakeClient({.max_request_bytes = 256 * 1024});
  absl::StatusOr<UpsertResult> result = client->UpsertQuestions(
      "r1", questions, embeddings,
      [&](int64_t sent, int64_t total) { progress.emplace_back(sent, total); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->added, n);
  ASSERT_EQ(result->rejected.size(), 1u);
  EXPECT_EQ(result->rejected[0].index, n - 1);
  EXPECT_EQ(result->rejected[0].key, "last");

  MutexLock lock(&fake_.mu);
  ASSERT_GT(fake_.upsert_messages.size(), 6u);  // 2 MB in messages of <= 256 KiB
  EXPECT_EQ(fake_.upsert_messages[0].run_id(), "r1");
  int64_t i = 0;
  for (const auto& m : fake_.upsert_messages) {
    EXPECT_LE(m.ByteSizeLong(), 256u * 1024);
    for (const pb::Question& q : m.questions()) {
      ASSERT_EQ(q.key(), absl::StrCat("q", i));
      EXPECT_EQ(q.has_prior(), i % 2 == 0);
      ASSERT_EQ(q.embedding_size(), dim);
      EXPECT_EQ(q.embedding(5), static_cast<float>(i * dim + 5));
      ++i;
    }
  }
  EXPECT_EQ(i, n);
  ASSERT_EQ(progress.size(), fake_.upsert_messages.size());
  for (size_t k = 1; k < progress.size(); ++k) EXPECT_GT(progress[k].first, progress[k - 1].first);
  EXPECT_EQ(progress.back(), std::make_pair(n, n));
}

TEST_F(ClientProtocolTest, UpsertRejectsMismatchedEmbeddingsBeforeSending) {
  std::unique_ptr<Client> client = MakeClient();
  std::vector<Question> questions(3);
  absl::StatusOr<UpsertResult> r = client->UpsertQuestions("r1", questions, FloatMatrix(2, 4));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.upsert_calls.load(), 0);
}

TEST_F(ClientProtocolTest, GetEstimatesFollowsPagesAndSplitsKeyLists) {
  // All questions: three pages. Given keys: echoed back, one page per request.
  std::vector<std::string> requested_pages;
  fake_.estimates = [&](const pb::GetEstimatesRequest& req, pb::GetEstimatesResponse* resp) {
    if (req.keys_size() == 0) {
      const int page = req.page_token().empty() ? 0 : std::stoi(req.page_token());
      requested_pages.push_back(req.page_token());
      for (int i = 0; i < 2; ++i) {
        auto* e = resp->add_estimates();
        e->set_key(absl::StrCat("q", page * 2 + i));
        e->set_p_hat(0.5);
        e->set_observations(page);
        e->set_last_policy_version(-1);
      }
      if (page < 2) resp->set_next_page_token(absl::StrCat(page + 1));
      return grpc::Status::OK;
    }
    for (const std::string& k : req.keys()) resp->add_estimates()->set_key(k);
    return grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  absl::StatusOr<std::vector<QuestionEstimate>> all = client->GetEstimates("r1");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 6u);
  EXPECT_EQ((*all)[5].key, "q5");
  EXPECT_EQ((*all)[5].observations, 2);
  EXPECT_EQ((*all)[0].last_policy_version, -1);
  EXPECT_EQ(requested_pages, (std::vector<std::string>{"", "1", "2"}));

  std::vector<std::string> keys;
  for (int i = 0; i < 2500; ++i) keys.push_back(absl::StrCat("k", i));
  fake_.estimates_calls = 0;
  absl::StatusOr<std::vector<QuestionEstimate>> some = client->GetEstimates("r1", keys);
  ASSERT_TRUE(some.ok()) << some.status();
  ASSERT_EQ(some->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) ASSERT_EQ((*some)[i].key, keys[i]);
  EXPECT_EQ(fake_.estimates_calls.load(), 3);  // 1000 keys per request
}

TEST_F(ClientProtocolTest, ConcurrentCallsShareOneClient) {
  // Every second attempt for each run id fails: a thread's first call succeeds at once, each
  // later one fails once (odd attempt number) and succeeds on its retry.
  Mutex mu;
  std::map<std::string, int> calls_per_run;
  fake_.get_run = [&](grpc::ServerContext*, const std::string& run_id, int) {
    MutexLock lock(&mu);
    return calls_per_run[run_id]++ % 2 == 1 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "x")
                                            : grpc::Status::OK;
  };
  std::unique_ptr<Client> client = MakeClient();
  std::atomic<int> ok{0}, retried{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        int attempts = 0;
        absl::StatusOr<RunInfo> run = client->GetRun(absl::StrCat("r", t), {.attempts = &attempts});
        if (run.ok() && run->run_id == absl::StrCat("r", t)) ++ok;
        if (attempts == 2) ++retried;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 200);
  EXPECT_EQ(retried.load(), 8 * 24);
  EXPECT_EQ(client->total_retries(), 8 * 24);
}

TEST(ClientOptionsTest, InvalidOptionsAreRejected) {
  EXPECT_EQ(Client::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Create({.target = "x:1", .max_attempts = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Create({.target = "x:1", .max_request_bytes = 8 << 20}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<Client>> lazy = Client::Create({.target = "127.0.0.1:1"});
  ASSERT_TRUE(lazy.ok());  // no connection is made until the first call
  EXPECT_EQ((*lazy)->GetRun("r", {.timeout = -absl::Seconds(1)}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dots
