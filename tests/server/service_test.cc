// Integration tests of dots.v1.Dots: a real server on 127.0.0.1:0, real channels, generated
// stubs. Every RPC, and every error status of docs/design.md §3 with the field named in the
// message.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "core/formats/npy.h"
#include "core/util/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "server/grpc_status.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

using ::testing::HasSubstr;

#define EXPECT_STATUS(expr, code, substring)                                            \
  do {                                                                                  \
    const grpc::Status status_ = (expr);                                                \
    EXPECT_EQ(status_.error_code(), grpc::StatusCode::code) << status_.error_message(); \
    EXPECT_THAT(status_.error_message(), HasSubstr(substring));                         \
  } while (0)

class ServiceTest : public ServerTest {
 protected:
  grpc::Status GetRun(const std::string& run_id, pb::RunInfo* info) {
    grpc::ClientContext context;
    pb::GetRunRequest request;
    request.set_run_id(run_id);
    return stub_->GetRun(&context, request, info);
  }
  grpc::Status Stats(const std::string& run_id, pb::RunStats* stats) {
    grpc::ClientContext context;
    pb::GetRunStatsRequest request;
    request.set_run_id(run_id);
    return stub_->GetRunStats(&context, request, stats);
  }
  grpc::Status Estimates(const pb::GetEstimatesRequest& request, pb::GetEstimatesResponse* out) {
    grpc::ClientContext context;
    return stub_->GetEstimates(&context, request, out);
  }
  grpc::Status Import(const std::string& run_id, const std::string& questions,
                      const std::string& embeddings, std::vector<pb::ImportPoolProgress>* out) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    pb::ImportPoolRequest request;
    request.set_run_id(run_id);
    request.set_questions_path(questions);
    request.set_embeddings_path(embeddings);
    auto reader = stub_->ImportPool(&context, request);
    pb::ImportPoolProgress progress;
    out->clear();
    while (reader->Read(&progress)) out->push_back(progress);
    return reader->Finish();
  }
  std::string TempPath(const std::string& name) {
    const char* dir = std::getenv("TEST_TMPDIR");
    return absl::StrCat(dir != nullptr ? dir : "/tmp", "/dots_service_test_", getpid(), "_", name);
  }
};

TEST_F(ServiceTest, RunLifecycle) {
  pb::RunInfo info;
  ASSERT_TRUE(CreateRun("run-b", kSmallConfig, &info).ok());
  EXPECT_EQ(info.run_id(), "run-b");
  EXPECT_THAT(info.config_json(), HasSubstr("\"batch_size\": 16"));
  EXPECT_THAT(info.config_json(), HasSubstr("\"mode\": \"history\""));
  EXPECT_EQ(info.pool_size(), 0);
  EXPECT_NEAR(info.created_unix_seconds(), absl::ToUnixSeconds(absl::Now()), 5);

  // An empty config is "{}": the paper's defaults.
  pb::RunInfo defaults;
  ASSERT_TRUE(CreateRun("run-a", "", &defaults).ok());
  EXPECT_THAT(defaults.config_json(), HasSubstr("\"batch_size\": 512"));

  pb::RunInfo got;
  ASSERT_TRUE(GetRun("run-b", &got).ok());
  EXPECT_EQ(got.config_json(), info.config_json());

  grpc::ClientContext list_context;
  pb::ListRunsResponse list;
  ASSERT_TRUE(stub_->ListRuns(&list_context, pb::ListRunsRequest(), &list).ok());
  ASSERT_EQ(list.runs_size(), 2);
  EXPECT_EQ(list.runs(0).run_id(), "run-a");  // ordered by id
  EXPECT_EQ(list.runs(1).run_id(), "run-b");

  grpc::ClientContext delete_context;
  pb::DeleteRunRequest del;
  del.set_run_id("run-a");
  pb::DeleteRunResponse deleted;
  ASSERT_TRUE(stub_->DeleteRun(&delete_context, del, &deleted).ok());
  EXPECT_STATUS(GetRun("run-a", &got), NOT_FOUND, "run_id");
  ASSERT_TRUE(GetRun("run-b", &got).ok());  // the other run is untouched
  grpc::ClientContext again;
  EXPECT_STATUS(stub_->DeleteRun(&again, del, &deleted), NOT_FOUND, "run-a");
}

TEST_F(ServiceTest, RunErrors) {
  ASSERT_TRUE(CreateRun("r", "{}").ok());
  EXPECT_STATUS(CreateRun("r", "{}"), ALREADY_EXISTS, "run_id");
  EXPECT_STATUS(CreateRun("", "{}"), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(CreateRun("bad id!", "{}"), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(CreateRun(std::string(129, 'x'), "{}"), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(CreateRun("c1", R"({"batch_size": -1})"), INVALID_ARGUMENT,
                "config_json: batch_size");
  EXPECT_STATUS(CreateRun("c2", R"({"replay": {"capacity_grups": 5}})"), INVALID_ARGUMENT,
                "capacity_grups");
  EXPECT_STATUS(CreateRun("c3", "{not json"), INVALID_ARGUMENT, "config_json");
  // A failed create changes nothing.
  pb::RunInfo info;
  EXPECT_STATUS(GetRun("c1", &info), NOT_FOUND, "c1");
  EXPECT_STATUS(GetRun("no-such-run", &info), NOT_FOUND, "no-such-run");
  pb::RunStats stats;
  EXPECT_STATUS(Stats("no-such-run", &stats), NOT_FOUND, "run_id");
  // A huge user string does not come back whole.
  const std::string huge(100000, 'k');
  const grpc::Status status = GetRun(huge, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LE(status.error_message().size(), 1024u);
}

TEST_F(ServiceTest, UpsertQuestionsAppliesValidAndRejectsIndividually) {
  ASSERT_TRUE(CreateRun("u", kSmallConfig).ok());
  std::vector<pb::Question> questions = WireQuestions(10, 4);
  questions[2].set_embedding(1, std::numeric_limits<float>::quiet_NaN());
  questions[4].add_embedding(1.0f);  // 5 values
  questions[5].set_key("");
  questions[6].set_prior(1.5);
  questions[7].set_metadata_json("{\"unterminated\": ");
  questions[8].set_key("q1");  // duplicate within the upload
  pb::UpsertQuestionsResponse response;
  ASSERT_TRUE(Upsert("u", questions, &response, /*per_message=*/3).ok());
  EXPECT_EQ(response.added(), 4);  // q0, q1, q3, q9
  EXPECT_EQ(response.updated(), 0);
  ASSERT_EQ(response.rejected_size(), 6);
  const std::vector<std::pair<int64_t, std::string>> expected = {
      {2, "embedding"}, {4, "embedding"},     {5, "key"},
      {6, "prior"},     {7, "metadata_json"}, {8, "key"}};
  for (int i = 0; i < 6; ++i) {
    // Indices are positions in the whole stream (3 questions per message here).
    EXPECT_EQ(response.rejected(i).index(), expected[i].first);
    EXPECT_THAT(response.rejected(i).error(), HasSubstr(expected[i].second));
    EXPECT_THAT(response.rejected(i).error(),
                HasSubstr(absl::StrCat("questions[", expected[i].first, "]")));
  }
  EXPECT_EQ(response.rejected(0).key(), "q2");

  // Replacing keys counts as updated; a dimension other than the run's is rejected.
  std::vector<pb::Question> again = WireQuestions(2, 4);
  std::vector<pb::Question> other_dim = WireQuestions(12, 6);
  again.push_back(other_dim[11]);
  pb::UpsertQuestionsResponse second;
  ASSERT_TRUE(Upsert("u", again, &second).ok());
  EXPECT_EQ(second.updated(), 2);
  EXPECT_EQ(second.added(), 0);
  ASSERT_EQ(second.rejected_size(), 1);
  EXPECT_EQ(second.rejected(0).index(), 2);
  EXPECT_THAT(second.rejected(0).error(), HasSubstr("embedding"));

  pb::RunInfo info;
  ASSERT_TRUE(GetRun("u", &info).ok());
  EXPECT_EQ(info.pool_size(), 4);
}

TEST_F(ServiceTest, UpsertQuestionsStreamErrors) {
  ASSERT_TRUE(CreateRun("u", kSmallConfig).ok());
  EXPECT_STATUS(Upsert("", WireQuestions(2, 4)), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(Upsert("missing", WireQuestions(2, 4)), NOT_FOUND, "missing");
  // A stream with no message at all.
  grpc::ClientContext context;
  pb::UpsertQuestionsResponse response;
  auto writer = stub_->UpsertQuestions(&context, &response);
  writer->WritesDone();
  EXPECT_STATUS(writer->Finish(), INVALID_ARGUMENT, "run_id");
  // A stream that names its run but carries nothing is a no-op.
  pb::UpsertQuestionsResponse empty;
  ASSERT_TRUE(Upsert("u", {}, &empty).ok());
  EXPECT_EQ(empty.added(), 0);
}

TEST_F(ServiceTest, ImportPoolStreamsProgressAndIsAllOrNothing) {
  ASSERT_TRUE(CreateRun("imp", kSmallConfig).ok());
  const std::string jsonl = TempPath("pool.jsonl"), npy = TempPath("pool.npy");
  {
    std::ofstream out(jsonl);
    for (int i = 0; i < 50; ++i) {
      out << "{\"key\": \"k" << i << "\", \"prompt\": \"p" << i << "\", \"prior\": 0.5}\n";
    }
  }
  FloatMatrix embeddings(50, 3);
  for (size_t i = 0; i < embeddings.data.size(); ++i) embeddings.data[i] = 0.01f * i;
  ASSERT_TRUE(WriteNpy(npy, embeddings).ok());
  std::vector<pb::ImportPoolProgress> progress;
  grpc::Status status = Import("imp", jsonl, npy, &progress);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GE(progress.size(), 2u);
  EXPECT_TRUE(progress.back().done());
  for (size_t i = 0; i + 1 < progress.size(); ++i) EXPECT_FALSE(progress[i].done());
  EXPECT_EQ(progress.back().questions_read(), 50);
  EXPECT_EQ(progress.back().added(), 50);
  pb::RunInfo info;
  ASSERT_TRUE(GetRun("imp", &info).ok());
  EXPECT_EQ(info.pool_size(), 50);

  // A malformed line fails the whole import, naming file:line and the field; nothing changes.
  const std::string bad = TempPath("bad.jsonl");
  {
    std::ofstream out(bad);
    out << "{\"key\": \"new1\", \"prompt\": \"x\"}\n{\"key\": \"new2\", \"prompt\": \"y\", "
           "\"prior\": 7}\n";
  }
  EXPECT_STATUS(Import("imp", bad, "", &progress), INVALID_ARGUMENT,
                "bad.jsonl:2: field \"prior\"");
  // Embeddings that do not match the run's dimension: all or nothing too.
  const std::string text_only = TempPath("text.jsonl");
  {
    std::ofstream out(text_only);
    out << "{\"key\": \"k1\", \"prompt\": \"changed\"}\n{\"key\": \"new3\", \"prompt\": \"z\"}\n";
  }
  EXPECT_STATUS(Import("imp", text_only, "", &progress), INVALID_ARGUMENT, "embedding");
  ASSERT_TRUE(GetRun("imp", &info).ok());
  EXPECT_EQ(info.pool_size(), 50);

  EXPECT_STATUS(Import("imp", TempPath("absent.jsonl"), "", &progress), NOT_FOUND, "absent.jsonl");
  EXPECT_STATUS(Import("imp", "", "", &progress), INVALID_ARGUMENT, "questions_path");
  EXPECT_STATUS(Import("nope", jsonl, "", &progress), NOT_FOUND, "nope");
  std::remove(jsonl.c_str());
  std::remove(npy.c_str());
  std::remove(bad.c_str());
  std::remove(text_only.c_str());
}

TEST_F(ServiceTest, ImportPoolOfTheRealDataset) {
  const char* source = std::getenv("DOTS_SOURCE_DIR");
  const std::string path =
      absl::StrCat(source != nullptr ? source : ".", "/data/oneshot-rlvr/questions.jsonl");
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " not found";
  ASSERT_TRUE(CreateRun("real", kSmallConfig).ok());
  std::vector<pb::ImportPoolProgress> progress;
  grpc::Status status = Import("real", path, "", &progress);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(progress.back().added(), 1209);
  // The imported pool serves batches whose prompts are the file's.
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("real", 0, 0, 1, &batch).ok());
  ASSERT_EQ(batch.items.size(), 16u);
  EXPECT_FALSE(batch.items[0].prompt().empty());
}

TEST_F(ServiceTest, TrainingRoundTrip) {
  CreateRunWithPool("t");
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("t", 0, 0, 1, &batch).ok());
  EXPECT_EQ(batch.protocol_error, "");
  EXPECT_EQ(batch.header.step(), 0);
  EXPECT_EQ(batch.header.round(), 0);
  EXPECT_EQ(batch.header.batch_size(), 16);
  ASSERT_EQ(batch.items.size(), 16u);
  std::set<std::string> keys;
  for (const pb::BatchItem& item : batch.items) {
    keys.insert(item.key());
    EXPECT_NE(item.role(), pb::ROLE_UNSPECIFIED);
    const int i = std::stoi(item.key().substr(1));
    EXPECT_EQ(item.prompt(), absl::StrCat("What is ", i, " + ", i, "?"));
    EXPECT_EQ(item.metadata_json(), absl::StrCat("{\"answer\": ", 2 * i, "}"));
  }
  EXPECT_EQ(keys.size(), 16u);
  // A retry returns the identical batch.
  ReceivedBatch retry;
  ASSERT_TRUE(NextBatch("t", 0, 0, 1, &retry).ok());
  ASSERT_EQ(retry.items.size(), 16u);
  for (size_t i = 0; i < 16; ++i) EXPECT_EQ(retry.items[i].key(), batch.items[i].key());

  // Report: all accepted, then the same report again is all duplicates.
  pb::ReportRolloutsResponse report;
  ASSERT_TRUE(ReportItems("t", 0, batch, 100, &report).ok());
  EXPECT_EQ(report.accepted(), 16);
  EXPECT_EQ(report.rejected_size(), 0);
  pb::ReportRolloutsResponse repeat;
  ASSERT_TRUE(ReportItems("t", 0, batch, 100, &repeat).ok());
  EXPECT_EQ(repeat.accepted(), 0);
  EXPECT_EQ(repeat.duplicates(), 16);

  // Bad groups are rejected individually, naming the field; the valid one is applied.
  ReceivedBatch step1;
  ASSERT_TRUE(NextBatch("t", 1, 0, 1, &step1).ok());
  ASSERT_GE(step1.items.size(), 3u);
  std::vector<GroupToReport> groups = {
      {step1.items[0].key(), {0.0f, 1.5f, 0.0f, 1.0f}, 1, "x"},
      {"q-unknown", MixedRewards(), 1, "x"},
      {step1.items[1].key(), {1.0f, 0.0f}, 1, "x"},
      {step1.items[2].key(), MixedRewards(), 1, "payload"},
  };
  pb::ReportRolloutsResponse mixed;
  ASSERT_TRUE(Report("t", 1, groups, &mixed).ok());
  EXPECT_EQ(mixed.accepted(), 1);
  ASSERT_EQ(mixed.rejected_size(), 3);
  EXPECT_EQ(mixed.rejected(0).key(), step1.items[0].key());
  EXPECT_THAT(mixed.rejected(0).error(), HasSubstr("rewards"));
  EXPECT_EQ(mixed.rejected(1).key(), "q-unknown");
  EXPECT_THAT(mixed.rejected(1).error(), HasSubstr("key"));
  EXPECT_THAT(mixed.rejected(2).error(), HasSubstr("rewards"));

  pb::RunStats stats;
  ASSERT_TRUE(Stats("t", &stats).ok());
  EXPECT_EQ(stats.step(), 1);
  EXPECT_EQ(stats.pool_size(), 64);
  EXPECT_EQ(stats.reported_groups(), 17);
  EXPECT_EQ(stats.duplicate_reports(), 16);
  EXPECT_EQ(stats.rejected_reports(), 3);
  EXPECT_EQ(stats.effective_groups(), 17);  // MixedRewards: mean 1/4
  EXPECT_EQ(stats.replay_groups(), 17);
  // Round 0 is all fresh (replay starts with round 1); step 1's items but one are unreported.
  EXPECT_EQ(step1.header.batch_size(), 16);
  EXPECT_EQ(step1.replay.size(), 0u);
  EXPECT_EQ(stats.leases_outstanding(), static_cast<int64_t>(step1.items.size()) - 1);
  EXPECT_GE(stats.rounds_planned(), 1);
  EXPECT_DOUBLE_EQ(stats.effective_ratio_last_step(), 1.0);
}

TEST_F(ServiceTest, NextBatchErrors) {
  CreateRunWithPool("n");
  ReceivedBatch batch;
  EXPECT_STATUS(NextBatch("absent", 0, 0, 1, &batch), NOT_FOUND, "absent");
  EXPECT_STATUS(NextBatch("", 0, 0, 1, &batch), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(NextBatch("n", -1, 0, 1, &batch), INVALID_ARGUMENT, "step");
  EXPECT_STATUS(NextBatch("n", 0, 4, 4, &batch), INVALID_ARGUMENT, "rank");
  EXPECT_STATUS(NextBatch("n", 0, -1, 4, &batch), INVALID_ARGUMENT, "rank");
  EXPECT_STATUS(NextBatch("n", 0, 0, -2, &batch), INVALID_ARGUMENT, "world_size");
  EXPECT_STATUS(NextBatch("n", 0, 0, 1, &batch, /*max_chunk_bytes=*/100), INVALID_ARGUMENT,
                "max_chunk_bytes");
  EXPECT_STATUS(NextBatch("n", 0, 0, 1, &batch, -5), INVALID_ARGUMENT, "max_chunk_bytes");
  EXPECT_STATUS(NextBatch("n", 0, 0, 1, &batch, 0, absl::Seconds(5), -1), INVALID_ARGUMENT,
                "policy_version");
  // More than one round ahead of the last reported step: fails at once, with the reason.
  const absl::Time start = absl::Now();
  EXPECT_STATUS(NextBatch("n", 7, 0, 1, &batch), FAILED_PRECONDITION, "ahead");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));

  // Paper reference mode: step 0 hands out the round's reference batch; the round's other steps
  // wait for its reports (FAILED_PRECONDITION with the reason).
  ASSERT_TRUE(CreateRun("paper", R"({"batch_size": 16, "group_size": 4, "steps_per_round": 2,
                                      "reference_size": 4, "reference_mode": "paper",
                                      "estimator": {"mode": "history"}})")
                  .ok());
  ASSERT_TRUE(Upsert("paper", WireQuestions(64, 8)).ok());
  ASSERT_TRUE(NextBatch("paper", 0, 0, 1, &batch).ok());
  EXPECT_TRUE(batch.header.reference_batch());
  ASSERT_EQ(batch.items.size(), 4u);
  for (const pb::BatchItem& item : batch.items) EXPECT_EQ(item.role(), pb::ROLE_REFERENCE);
  EXPECT_STATUS(NextBatch("paper", 1, 0, 1, &batch), FAILED_PRECONDITION, "reference rollouts");

  // A pool too small for the config: FAILED_PRECONDITION naming what is missing.
  ASSERT_TRUE(CreateRun("small", kSmallConfig).ok());
  ASSERT_TRUE(Upsert("small", WireQuestions(10, 8)).ok());
  EXPECT_STATUS(NextBatch("small", 0, 0, 1, &batch), FAILED_PRECONDITION, "pool");
  ASSERT_TRUE(CreateRun("empty", kSmallConfig).ok());
  EXPECT_STATUS(NextBatch("empty", 0, 0, 1, &batch), FAILED_PRECONDITION, "pool");
}

TEST_F(ServiceTest, NextBatchWaitingPastItsDeadlineIsDeadlineExceeded) {
  CreateRunWithPool("d");
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("d", 0, 0, 1, &batch).ok());
  ASSERT_TRUE(ReportItems("d", 0, batch).ok());
  ASSERT_TRUE(NextBatch("d", 1, 0, 1, &batch).ok());
  // Step 2 opens round 1, which waits for the rollouts of step 1: nobody reports them.
  const absl::Time start = absl::Now();
  EXPECT_EQ(NextBatch("d", 2, 0, 1, &batch, 0, absl::Milliseconds(400)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(350));
  EXPECT_LT(waited, absl::Seconds(3));

  // Without a client deadline the server's own cap (--max_wait_seconds) ends the wait, with
  // the reason the round cannot be planned.
  Server::Options options = TestOptions();
  options.max_wait = absl::Milliseconds(300);
  std::unique_ptr<Server> capped = StartTestServer(options);
  ASSERT_NE(capped, nullptr);
  server_->Shutdown(absl::Seconds(1));
  server_ = std::move(capped);
  channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  stub_ = pb::Dots::NewStub(channel_);
  CreateRunWithPool("d");
  ASSERT_TRUE(NextBatch("d", 0, 0, 1, &batch).ok());
  ASSERT_TRUE(ReportItems("d", 0, batch).ok());
  ASSERT_TRUE(NextBatch("d", 1, 0, 1, &batch).ok());
  EXPECT_STATUS(NextBatch("d", 2, 0, 1, &batch, 0, absl::Seconds(30)), FAILED_PRECONDITION,
                "neither reported nor expired");
}

TEST_F(ServiceTest, NextBatchWaitsForReportsThenServes) {
  CreateRunWithPool("w");
  ReceivedBatch step0, step1;
  ASSERT_TRUE(NextBatch("w", 0, 0, 1, &step0).ok());
  ASSERT_TRUE(NextBatch("w", 1, 0, 1, &step1).ok());
  ASSERT_TRUE(ReportItems("w", 0, step0).ok());
  // Step 2 waits for step 1's reports, which arrive while it waits (the waiting call must not
  // hold up the report).
  std::thread reporter([&] {
    absl::SleepFor(absl::Milliseconds(600));
    EXPECT_TRUE(ReportItems("w", 1, step1).ok());
  });
  ReceivedBatch step2;
  const absl::Time start = absl::Now();
  grpc::Status status = NextBatch("w", 2, 0, 1, &step2, 0, absl::Seconds(10));
  reporter.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_EQ(step2.header.round(), 1);
  EXPECT_EQ(step2.header.batch_size(), 16);
}

TEST_F(ServiceTest, ReportRolloutsStreamErrors) {
  CreateRunWithPool("r");
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("r", 0, 0, 1, &batch).ok());
  const std::string key = batch.items[0].key();
  EXPECT_STATUS(Report("", 0, {{key, MixedRewards(), 0, "p"}}), INVALID_ARGUMENT, "run_id");
  EXPECT_STATUS(Report("r", -1, {{key, MixedRewards(), 0, "p"}}), INVALID_ARGUMENT, "step");
  EXPECT_STATUS(Report("nope", 0, {{key, MixedRewards(), 0, "p"}}), NOT_FOUND, "nope");

  auto raw_report = [&](const std::vector<pb::RolloutFragment>& fragments) {
    grpc::ClientContext context;
    pb::ReportRolloutsResponse response;
    auto writer = stub_->ReportRollouts(&context, &response);
    pb::ReportRolloutsRequest request;
    request.set_run_id("r");
    for (const pb::RolloutFragment& f : fragments) *request.add_groups() = f;
    writer->Write(request);
    writer->WritesDone();
    return writer->Finish();
  };
  auto fragment = [&](const std::string& k, int64_t size, int64_t offset, const std::string& data) {
    pb::RolloutFragment f;
    f.set_key(k);
    if (offset == 0) {
      for (float r : {1.0f, 0.0f, 0.0f, 0.0f}) f.add_rewards(r);
    }
    f.set_payload_size(size);
    f.set_offset(offset);
    f.set_data(data);
    return f;
  };
  const std::string k1 = batch.items[1].key(), k2 = batch.items[2].key();
  // A good group followed by one with a gap: the whole call fails, nothing is applied.
  EXPECT_STATUS(
      raw_report({fragment(k1, 2, 0, "ab"), fragment(k2, 6, 0, "abc"), fragment(k2, 6, 4, "ef")}),
      INVALID_ARGUMENT, "offset");
  EXPECT_STATUS(raw_report({fragment(k2, 6, 0, "abc"), fragment(k2, 7, 3, "def")}),
                INVALID_ARGUMENT, "payload_size");
  EXPECT_STATUS(raw_report({fragment(k2, 2, 0, "abc")}), INVALID_ARGUMENT, "data");
  EXPECT_STATUS(raw_report({fragment(k2, 6, 0, "abc")}), INVALID_ARGUMENT, "ended");
  EXPECT_STATUS(raw_report({fragment(k2, 6, 3, "abc")}), INVALID_ARGUMENT, "offset");
  EXPECT_STATUS(raw_report({fragment(k2, -1, 0, "")}), INVALID_ARGUMENT, "payload_size");
  // Every message names the group and its key.
  EXPECT_STATUS(
      raw_report({fragment(k1, 2, 0, "ab"), fragment(k2, 6, 0, "abc"), fragment(k2, 6, 4, "ef")}),
      INVALID_ARGUMENT, absl::StrCat("group 1 of the stream (key \"", k2, "\")"));
  // Over the per-group limit (64 MiB): refused from the declared size, before the data.
  EXPECT_STATUS(raw_report({fragment(k2, 65LL << 20, 0, "abc")}), RESOURCE_EXHAUSTED,
                "payload_size");

  pb::RunStats stats;
  grpc::ClientContext context;
  pb::GetRunStatsRequest request;
  request.set_run_id("r");
  ASSERT_TRUE(stub_->GetRunStats(&context, request, &stats).ok());
  EXPECT_EQ(stats.reported_groups(), 0);  // a failed call changed nothing
  EXPECT_EQ(stats.rejected_reports(), 0);

  // Fragments cut at every size reassemble to the same payload, which the replay returns.
  std::string payload(10000, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7 + 3);
  pb::ReportRolloutsResponse ok;
  ASSERT_TRUE(Report("r", 0, {{k1, MixedRewards(), 3, payload}}, &ok, /*fragment_bytes=*/999,
                     /*message_bytes=*/3000)
                  .ok());
  EXPECT_EQ(ok.accepted(), 1);
}

TEST_F(ServiceTest, GetEstimatesPagesAndFilters) {
  CreateRunWithPool("e", 64);
  pb::GetEstimatesRequest request;
  request.set_run_id("e");
  request.set_page_size(10);
  std::vector<std::string> keys;
  int pages = 0;
  while (true) {
    pb::GetEstimatesResponse page;
    ASSERT_TRUE(Estimates(request, &page).ok());
    ++pages;
    EXPECT_LE(page.estimates_size(), 10);
    for (const pb::QuestionEstimate& e : page.estimates()) {
      keys.push_back(e.key());
      EXPECT_GE(e.p_hat(), 0.0);
      EXPECT_LE(e.p_hat(), 1.0);
      EXPECT_EQ(e.observations(), 0);
      EXPECT_EQ(e.last_policy_version(), -1);
    }
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  EXPECT_EQ(pages, 7);
  ASSERT_EQ(keys.size(), 64u);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(keys[i], absl::StrCat("q", i));  // pool order

  // Default page: everything at once.
  pb::GetEstimatesRequest all;
  all.set_run_id("e");
  pb::GetEstimatesResponse everything;
  ASSERT_TRUE(Estimates(all, &everything).ok());
  EXPECT_EQ(everything.estimates_size(), 64);
  EXPECT_EQ(everything.next_page_token(), "");

  // Observations show up after a report.
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("e", 0, 0, 1, &batch).ok());
  ASSERT_TRUE(ReportItems("e", 0, batch).ok());
  pb::GetEstimatesRequest by_key;
  by_key.set_run_id("e");
  by_key.add_keys(batch.items[3].key());
  by_key.add_keys("q63");
  pb::GetEstimatesResponse filtered;
  ASSERT_TRUE(Estimates(by_key, &filtered).ok());
  ASSERT_EQ(filtered.estimates_size(), 2);
  EXPECT_EQ(filtered.estimates(0).key(), batch.items[3].key());
  EXPECT_EQ(filtered.estimates(0).observations(), 1);
  EXPECT_EQ(filtered.estimates(0).last_policy_version(), 0);
  EXPECT_EQ(filtered.estimates(1).key(), "q63");

  pb::GetEstimatesResponse ignored;
  by_key.add_keys("zzz");
  EXPECT_STATUS(Estimates(by_key, &ignored), NOT_FOUND, "zzz");
  pb::GetEstimatesRequest bad = all;
  bad.set_page_token("garbage");
  EXPECT_STATUS(Estimates(bad, &ignored), INVALID_ARGUMENT, "page_token");
  bad.set_page_token("65");
  EXPECT_STATUS(Estimates(bad, &ignored), INVALID_ARGUMENT, "page_token");
  bad.set_page_token("-3");
  EXPECT_STATUS(Estimates(bad, &ignored), INVALID_ARGUMENT, "page_token");
  bad.set_page_token("");
  bad.set_page_size(-1);
  EXPECT_STATUS(Estimates(bad, &ignored), INVALID_ARGUMENT, "page_size");
  pb::GetEstimatesRequest empty_key = all;
  empty_key.add_keys("");
  EXPECT_STATUS(Estimates(empty_key, &ignored), INVALID_ARGUMENT, "keys[0]");
  pb::GetEstimatesRequest other = all;
  other.set_run_id("other");
  EXPECT_STATUS(Estimates(other, &ignored), NOT_FOUND, "other");
}

TEST_F(ServiceTest, MessageLimitsFollowMaxMessageBytes) {
  Server::Options options = TestOptions();
  options.max_message_bytes = 256 << 10;
  server_->Shutdown(absl::ZeroDuration());
  Start(options);
  CreateRunWithPool("lim", 64,
                    R"({"batch_size": 16, "group_size": 4, "steps_per_round": 1,
                        "reference_size": 4, "estimator": {"mode": "history"}})");
  // A request message over the server's receive limit is refused by gRPC itself.
  std::vector<pb::Question> huge = WireQuestions(1, 8);
  huge[0].set_key("huge");
  huge[0].set_prompt(std::string(300 << 10, 'x'));
  EXPECT_EQ(Upsert("lim", huge).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Chunks stay below the send limit even when the client asks for more.
  ReceivedBatch batch;
  ASSERT_TRUE(NextBatch("lim", 0, 0, 1, &batch).ok());
  std::vector<GroupToReport> groups;
  for (const pb::BatchItem& item : batch.items) {
    groups.push_back({item.key(), MixedRewards(), 0, std::string(200 << 10, 'z')});
  }
  // Requests must stay under the limit too: 64 KiB fragments, at most ~200 KiB per message.
  grpc::Status reported = Report("lim", 0, groups, nullptr, 64 << 10, 200 << 10);
  ASSERT_TRUE(reported.ok()) << reported.error_message();
  ASSERT_TRUE(NextBatch("lim", 1, 0, 1, &batch, /*max_chunk_bytes=*/4 << 20).ok());
  EXPECT_EQ(batch.protocol_error, "");
  EXPECT_EQ(batch.replay.size(), 8u);
  EXPECT_GT(batch.chunks, 8);
  EXPECT_LE(batch.largest_chunk_bytes, 256 << 10);
}

TEST(ServiceStateTest, CallsBeforeTheServiceIsReadyAreUnavailable) {
  RunRegistry registry;
  Executor calls("calls", 1), waits("waits", 1);
  DotsService service(&registry, &calls, &waits, ServiceOptions());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = pb::Dots::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  pb::RunInfo info;
  pb::CreateRunRequest request;
  request.set_run_id("early");
  EXPECT_STATUS(stub->CreateRun(&context, request, &info), UNAVAILABLE, "starting");
  service.SetState(DotsService::State::kServing);
  grpc::ClientContext again;
  EXPECT_TRUE(stub->CreateRun(&again, request, &info).ok());
  service.SetState(DotsService::State::kDraining);
  service.SetState(DotsService::State::kServing);  // draining is final
  EXPECT_EQ(service.state(), DotsService::State::kDraining);
  server->Shutdown(std::chrono::system_clock::now());
}

TEST(GrpcStatusTest, ConversionKeepsTheCodeAndTruncatesAtACharacterBoundary) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::UnknownError("x")).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  std::string message;
  for (int i = 0; i < 1000; ++i) message += "\xc3\xa9";  // é, 2 bytes in UTF-8
  const std::string cut = TruncateStatusMessage(message, 101);
  EXPECT_LE(cut.size(), 101u);
  EXPECT_THAT(cut, HasSubstr("2000 bytes, truncated"));
  const size_t kept = cut.find(" ... [");
  ASSERT_NE(kept, std::string::npos);
  EXPECT_EQ(kept % 2, 0u);  // no half character
  EXPECT_EQ(TruncateStatusMessage("short"), "short");
}

TEST(ExecutorTest, RunsTasksInOrderAndFinishesTheQueueOnShutdown) {
  Executor executor("test", 1);
  std::vector<int> order;
  Mutex mu;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(executor.Schedule([&, i] {
      MutexLock lock(&mu);
      order.push_back(i);
    }));
  }
  executor.Shutdown();
  EXPECT_FALSE(executor.Schedule([] {}));
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
  executor.Shutdown();  // idempotent
}

TEST_F(ServiceTest, DrainingRefusesNewCallsWithUnavailable) {
  ASSERT_TRUE(CreateRun("x", "{}").ok());
  server_->BeginDrain();
  EXPECT_STATUS(CreateRun("y", "{}"), UNAVAILABLE, "draining");
  pb::RunInfo info;
  EXPECT_STATUS(GetRun("x", &info), UNAVAILABLE, "draining");
  EXPECT_STATUS(Upsert("x", WireQuestions(1, 8)), UNAVAILABLE, "draining");
  ReceivedBatch batch;
  EXPECT_STATUS(NextBatch("x", 0, 0, 1, &batch), UNAVAILABLE, "draining");
  EXPECT_STATUS(Report("x", 0, {}), UNAVAILABLE, "draining");
}

}  // namespace
}  // namespace dots::testing
