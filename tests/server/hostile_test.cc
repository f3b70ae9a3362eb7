// Hostile input through the real server (durable state directory): every malformed request gets
// its documented status, a message naming the field, and changes nothing (the run's stats,
// estimates and served batches are identical before and after).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

using ::testing::HasSubstr;

class HostileTest : public ServerTest {
 protected:
  void SetUp() override {
    Server::Options options = TestOptions();
    options.state_dir = state_.path();
    Start(options);
    CreateRunWithPool("h", 64);
    ReceivedBatch batch;
    ASSERT_TRUE(NextBatch("h", 0, 0, 1, &batch).ok());
    served_ = batch.items;
    // Half of step 0 reported, so there are estimates, leases and replay groups to disturb.
    std::vector<GroupToReport> groups;
    for (size_t i = 0; i < served_.size() / 2; ++i) {
      groups.push_back({served_[i].key(), MixedRewards(), 0, "payload"});
    }
    ASSERT_TRUE(Report("h", 0, groups).ok());
    before_ = Fingerprint();
  }

  pb::RunStats Stats() {
    grpc::ClientContext context;
    pb::GetRunStatsRequest request;
    request.set_run_id("h");
    pb::RunStats stats;
    EXPECT_TRUE(stub_->GetRunStats(&context, request, &stats).ok());
    return stats;
  }

  // Everything a client can see of the run; without the rejected-report counter when
  // `with_rejections` is false (a group rejected inside an accepted call counts there).
  std::string Fingerprint(bool with_rejections = true) {
    pb::RunStats stats = Stats();
    if (!with_rejections) stats.clear_rejected_reports();
    std::string out = stats.ShortDebugString();
    {
      grpc::ClientContext context;
      pb::GetEstimatesRequest request;
      request.set_run_id("h");
      pb::GetEstimatesResponse estimates;
      EXPECT_TRUE(stub_->GetEstimates(&context, request, &estimates).ok());
      absl::StrAppend(&out, "|", estimates.ShortDebugString());
    }
    ReceivedBatch batch;
    EXPECT_TRUE(NextBatch("h", 0, 0, 1, &batch).ok());
    for (const pb::BatchItem& item : batch.items) absl::StrAppend(&out, "|", item.key());
    return out;
  }

  // The call failed with `code` and a message containing `field`, and nothing changed.
  void ExpectRefused(const grpc::Status& status, grpc::StatusCode code, const std::string& field,
                     const std::string& what) {
    EXPECT_EQ(status.error_code(), code) << what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(field)) << what;
    EXPECT_LE(status.error_message().size(), 2048u) << what << ": message not truncated";
    EXPECT_EQ(Fingerprint(), before_) << what << " changed the run";
  }

  pb::Question Valid(const std::string& key) {
    pb::Question q = WireQuestions(1, 8)[0];
    q.set_key(key);
    return q;
  }

  TempDir state_{"hostile_test"};
  std::vector<pb::BatchItem> served_;
  std::string before_;
};

TEST_F(HostileTest, BadQuestionsAreRejectedAndNothingIsAdded) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string what;
    pb::Question question;
    std::string field;
  };
  std::vector<Case> cases;
  pb::Question q = Valid("nan");
  q.set_embedding(3, nan);
  cases.push_back({"NaN embedding", q, "embedding"});
  q = Valid("inf");
  q.set_embedding(0, -inf);
  cases.push_back({"infinite embedding", q, "embedding"});
  q = Valid("short");
  q.mutable_embedding()->RemoveLast();
  cases.push_back({"wrong dimension", q, "embedding"});
  q = Valid("");
  cases.push_back({"empty key", q, "key"});
  q = Valid(std::string(100000, 'k'));
  cases.push_back({"huge key", q, "key"});
  q = Valid("prior");
  q.set_prior(1.5);
  cases.push_back({"prior outside [0, 1]", q, "prior"});
  q = Valid("prior-nan");
  q.set_prior(std::nan(""));
  cases.push_back({"NaN prior", q, "prior"});
  q = Valid("meta");
  q.set_metadata_json("{\"a\": ");
  cases.push_back({"malformed metadata JSON", q, "metadata"});
  for (const Case& c : cases) {
    pb::UpsertQuestionsResponse response;
    grpc::Status status = Upsert("h", {c.question}, &response);
    ASSERT_TRUE(status.ok()) << c.what << ": " << status.error_message();
    EXPECT_EQ(response.added() + response.updated(), 0) << c.what;
    ASSERT_EQ(response.rejected_size(), 1) << c.what;
    EXPECT_THAT(response.rejected(0).error(), HasSubstr(c.field)) << c.what;
    EXPECT_EQ(Fingerprint(), before_) << c.what << " changed the run";
  }
  // Duplicate keys in one upload: the repeat is rejected naming the key, the first is added.
  pb::UpsertQuestionsResponse response;
  ASSERT_TRUE(Upsert("h", {Valid("dup"), Valid("dup")}, &response).ok());
  EXPECT_EQ(response.added(), 1);
  ASSERT_EQ(response.rejected_size(), 1);
  EXPECT_EQ(response.rejected(0).index(), 1);
  EXPECT_THAT(response.rejected(0).error(), HasSubstr("key"));
}

TEST_F(HostileTest, InvalidUtf8IsRefused) {
  // proto3 strings must be UTF-8: the server cannot parse such a request at all.
  pb::UpsertQuestionsResponse response;
  grpc::Status status = Upsert("h", {Valid("bad\xff\xfe")}, &response);
  EXPECT_FALSE(status.ok() && response.added() > 0);
  EXPECT_EQ(Fingerprint(), before_);
  status = CreateRun("bad\xc3\x28", "{}");
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(Fingerprint(), before_);
}

TEST_F(HostileTest, BadReportsAreRejectedPerGroupAndNothingIsApplied) {
  const std::string unreported = served_.back().key();
  struct Case {
    std::string what;
    GroupToReport group;
    std::string field;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases = {
      {"reward above 1", {unreported, {1.5f, 0, 0, 0}, 0, "p"}, "rewards"},
      {"negative reward", {unreported, {-0.1f, 0, 0, 0}, 0, "p"}, "rewards"},
      {"NaN reward", {unreported, {nan, 0, 0, 0}, 0, "p"}, "rewards"},
      {"too few rewards", {unreported, {1, 0, 0}, 0, "p"}, "rewards"},
      {"too many rewards", {unreported, {1, 0, 0, 0, 1}, 0, "p"}, "rewards"},
      {"unknown key", {"no-such-question", {1, 0, 0, 0}, 0, "p"}, "key"},
      {"key not handed out", {"q63", {1, 0, 0, 0}, 0, "p"}, "key"},
      {"negative policy version", {unreported, {1, 0, 0, 0}, -3, "p"}, "policy_version"},
  };
  const std::string unchanged = Fingerprint(/*with_rejections=*/false);
  int64_t rejected = Stats().rejected_reports();
  for (Case& c : cases) {
    if (c.what == "key not handed out") {  // a question of the pool that step 0 did not serve
      for (int i = 0; i < 64; ++i) {
        const std::string key = absl::StrCat("q", i);
        bool served = false;
        for (const pb::BatchItem& item : served_) served |= item.key() == key;
        if (!served) {
          c.group.key = key;
          break;
        }
      }
    }
    pb::ReportRolloutsResponse response;
    grpc::Status status = Report("h", 0, {c.group}, &response);
    ASSERT_TRUE(status.ok()) << c.what << ": " << status.error_message();
    EXPECT_EQ(response.accepted(), 0) << c.what;
    ASSERT_EQ(response.rejected_size(), 1) << c.what;
    EXPECT_THAT(response.rejected(0).error(), HasSubstr(c.field)) << c.what;
    // The stats count the rejection, once; everything else is as before.
    EXPECT_EQ(Stats().rejected_reports(), rejected + 1) << c.what;
    EXPECT_EQ(Fingerprint(/*with_rejections=*/false), unchanged) << c.what << " changed the run";
    rejected = Stats().rejected_reports();
  }
  // Reports of steps never served: the groups are rejected, nothing applied.
  for (int64_t step : {int64_t{5}, int64_t{1} << 40}) {
    pb::ReportRolloutsResponse response;
    grpc::Status status = Report("h", step, {{unreported, {1, 0, 0, 0}, 0, "p"}}, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.accepted(), 0);
    ASSERT_EQ(response.rejected_size(), 1);
    EXPECT_THAT(response.rejected(0).error(), HasSubstr("step"));
    EXPECT_EQ(Stats().rejected_reports(), ++rejected);
    EXPECT_EQ(Fingerprint(/*with_rejections=*/false), unchanged) << "step " << step;
  }
  before_ = Fingerprint();  // the rejections above are counted in the stats
  ExpectRefused(Report("h", -1, {{unreported, {1, 0, 0, 0}, 0, "p"}}),
                grpc::StatusCode::INVALID_ARGUMENT, "step", "negative step");
  ExpectRefused(Report("nope", 0, {{unreported, {1, 0, 0, 0}, 0, "p"}}),
                grpc::StatusCode::NOT_FOUND, "run", "unknown run");
}

TEST_F(HostileTest, BadNextBatchRequestsAreRefused) {
  ReceivedBatch batch;
  ExpectRefused(NextBatch("h", -1, 0, 1, &batch), grpc::StatusCode::INVALID_ARGUMENT, "step",
                "negative step");
  ExpectRefused(NextBatch("h", int64_t{1} << 50, 0, 1, &batch),
                grpc::StatusCode::FAILED_PRECONDITION, "step", "step far in the future");
  ExpectRefused(NextBatch("h", 0, 4, 4, &batch), grpc::StatusCode::INVALID_ARGUMENT, "rank",
                "rank outside the world");
  ExpectRefused(NextBatch("h", 0, -1, 4, &batch), grpc::StatusCode::INVALID_ARGUMENT, "rank",
                "negative rank");
  ExpectRefused(NextBatch("h", 0, 0, 1, &batch, 0, absl::Seconds(20), -5),
                grpc::StatusCode::INVALID_ARGUMENT, "policy_version", "negative version");
  ExpectRefused(NextBatch("", 0, 0, 1, &batch), grpc::StatusCode::INVALID_ARGUMENT, "run_id",
                "empty run id");
}

TEST_F(HostileTest, BadRunsAreRefused) {
  ExpectRefused(CreateRun("", "{}"), grpc::StatusCode::INVALID_ARGUMENT, "run_id", "empty id");
  ExpectRefused(CreateRun(std::string(200, 'r'), "{}"), grpc::StatusCode::INVALID_ARGUMENT,
                "run_id", "long id");
  ExpectRefused(CreateRun("a/b", "{}"), grpc::StatusCode::INVALID_ARGUMENT, "run_id",
                "slash in the id");
  ExpectRefused(CreateRun("x", "{\"batch_size\": "), grpc::StatusCode::INVALID_ARGUMENT, "config",
                "truncated config");
  ExpectRefused(CreateRun("x", "{\"batch_sise\": 4}"), grpc::StatusCode::INVALID_ARGUMENT,
                "batch_sise", "unknown config key");
  ExpectRefused(CreateRun("x", "{\"batch_size\": -4}"), grpc::StatusCode::INVALID_ARGUMENT,
                "batch_size", "negative batch size");
  ExpectRefused(CreateRun("x", std::string(1 << 20, '[')), grpc::StatusCode::INVALID_ARGUMENT,
                "config", "deeply nested config");
  ExpectRefused(CreateRun("h", "{}"), grpc::StatusCode::ALREADY_EXISTS, "h", "existing run");
  grpc::ClientContext context;
  pb::GetEstimatesRequest request;
  request.set_run_id("h");
  request.add_keys("no-such-key");
  pb::GetEstimatesResponse estimates;
  ExpectRefused(stub_->GetEstimates(&context, request, &estimates), grpc::StatusCode::NOT_FOUND,
                "no-such-key", "unknown key");
  grpc::ClientContext context2;
  request.clear_keys();
  request.set_page_token("not-a-token");
  ExpectRefused(stub_->GetEstimates(&context2, request, &estimates),
                grpc::StatusCode::INVALID_ARGUMENT, "page_token", "bad page token");
}

}  // namespace
}  // namespace dots::testing
