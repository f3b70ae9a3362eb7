// The JSON shapes dotsctl prints are parsed back with the strict core parser and checked field by
// field, so any malformed output or missing key fails here.

#include <cmath>
#include <string>

#include "client/dotsctl/json_format.h"
#include "core/util/json.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

JsonValue Parse(const std::string& text) {
  absl::StatusOr<JsonValue> v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << v.status() << " in " << text;
  return v.ok() ? *v : JsonValue();
}

// ParseJson's raw() views point into the text, so tests keep the text alive alongside.
struct Doc {
  std::string text;
  JsonValue value;
};
Doc ParseDoc(std::string text) {
  Doc d{std::move(text), {}};
  d.value = Parse(d.text);
  return d;
}

TEST(ClientJsonFormatTest, RunInfoEmbedsConfigAsJson) {
  RunInfo run{"r1", "{\"batch_size\": 8, \"estimator\": {\"mode\": \"history\"}}", 60, 1700};
  Doc brief = ParseDoc(RunInfoToJson(run, false));
  ASSERT_TRUE(brief.value.is_object());
  EXPECT_EQ(brief.value.members().size(), 2u);
  EXPECT_EQ(brief.value.Find("run_id")->as_string(), "r1");
  const JsonValue* config = brief.value.Find("config");
  ASSERT_NE(config, nullptr);
  ASSERT_TRUE(config->is_object());
  EXPECT_EQ(config->Find("batch_size")->as_number(), 8);
  EXPECT_EQ(config->Find("estimator")->Find("mode")->as_string(), "history");

  Doc full = ParseDoc(RunInfoToJson(run, true));
  EXPECT_EQ(full.value.Find("pool_size")->as_number(), 60);
  EXPECT_EQ(full.value.Find("created_unix_seconds")->as_number(), 1700);
}

TEST(ClientJsonFormatTest, BatchSliceShape) {
  BatchSlice slice;
  slice.step = 3;
  slice.round = 1;
  slice.batch_size = 4;
  slice.items.push_back({"q\"1", ItemRole::kFresh, "line1\nline2", "{\"answer\": [1, 2]}"});
  slice.items.push_back({"q2", ItemRole::kReference, "", ""});  // "" metadata = {}
  ReplayGroup g;
  g.key = "q9";
  g.step = 2;
  g.policy_version = 5;
  g.rewards = {1.0f, 0.0f, 0.3f};
  g.payload = std::string("\x00\xff\x10 binary", 10);
  slice.replay.push_back(g);

  const std::string text = BatchSliceToJson("run-a", slice);
  // Rewards are floats, printed in their own shortest form (not 0.30000001192092896).
  EXPECT_NE(text.find("\"rewards\": [1, 0, 0.3]"), std::string::npos) << text;
  Doc doc = ParseDoc(text);
  const JsonValue& v = doc.value;
  EXPECT_EQ(v.Find("run_id")->as_string(), "run-a");
  EXPECT_EQ(v.Find("step")->as_number(), 3);
  EXPECT_EQ(v.Find("round")->as_number(), 1);
  EXPECT_EQ(v.Find("batch_size")->as_number(), 4);
  EXPECT_FALSE(v.Find("reference_batch")->as_bool());
  ASSERT_EQ(v.Find("items")->items().size(), 2u);
  const JsonValue& item0 = v.Find("items")->items()[0];
  EXPECT_EQ(item0.Find("key")->as_string(), "q\"1");
  EXPECT_EQ(item0.Find("role")->as_string(), "fresh");
  EXPECT_EQ(item0.Find("prompt")->as_string(), "line1\nline2");
  ASSERT_TRUE(item0.Find("metadata")->is_object());
  EXPECT_EQ(item0.Find("metadata")->Find("answer")->items().size(), 2u);
  const JsonValue& item1 = v.Find("items")->items()[1];
  EXPECT_EQ(item1.Find("role")->as_string(), "reference");
  EXPECT_TRUE(item1.Find("metadata")->is_object());
  ASSERT_EQ(v.Find("replay")->items().size(), 1u);
  const JsonValue& r = v.Find("replay")->items()[0];
  EXPECT_EQ(r.Find("key")->as_string(), "q9");
  EXPECT_EQ(r.Find("step")->as_number(), 2);
  EXPECT_EQ(r.Find("policy_version")->as_number(), 5);
  ASSERT_EQ(r.Find("rewards")->items().size(), 3u);
  EXPECT_EQ(static_cast<float>(r.Find("rewards")->items()[2].as_number()), 0.3f);
  absl::StatusOr<std::string> payload = DecodeBase64(r.Find("payload_b64")->as_string());
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(*payload, g.payload);
}

TEST(ClientJsonFormatTest, ReportResultEstimateAndStatsShapes) {
  ReportResult result;
  result.accepted = 3;
  result.duplicates = 1;
  result.rejected = {{"qx", "key: not handed out at step 2"}};
  Doc report = ParseDoc(ReportResultToJson(result));
  EXPECT_EQ(report.value.Find("accepted")->as_number(), 3);
  EXPECT_EQ(report.value.Find("duplicates")->as_number(), 1);
  ASSERT_EQ(report.value.Find("rejected")->items().size(), 1u);
  EXPECT_EQ(report.value.Find("rejected")->items()[0].Find("key")->as_string(), "qx");
  EXPECT_EQ(report.value.Find("rejected")->items()[0].Find("error")->as_string(),
            "key: not handed out at step 2");

  Doc estimate = ParseDoc(EstimateToJson({"q1", 0.125, 7, -1}));
  EXPECT_EQ(estimate.value.Find("p_hat")->as_number(), 0.125);
  EXPECT_EQ(estimate.value.Find("observations")->as_number(), 7);
  EXPECT_EQ(estimate.value.Find("last_policy_version")->as_number(), -1);

  RunStats stats;
  stats.step = 4;
  stats.reported_groups = 32;
  stats.effective_ratio_last_step = 0.75;
  stats.replay_bytes = 1 << 20;
  stats.leases_expired = 2;
  stats.policy_version = 9;
  Doc s = ParseDoc(RunStatsToJson(stats));
  for (const char* key :
       {"step", "round", "pool_size", "reported_groups", "effective_ratio_last_step",
        "replay_groups", "replay_bytes", "leases_outstanding", "leases_expired",
        "duplicate_reports", "rejected_reports", "effective_groups", "solve_all_groups",
        "solve_none_groups", "replayed_groups", "rounds_planned", "last_planning_seconds",
        "policy_version"}) {
    ASSERT_NE(s.value.Find(key), nullptr) << key;
    EXPECT_TRUE(s.value.Find(key)->is_number()) << key;
  }
  EXPECT_EQ(s.value.Find("step")->as_number(), 4);
  EXPECT_EQ(s.value.Find("reported_groups")->as_number(), 32);
  EXPECT_EQ(s.value.Find("effective_ratio_last_step")->as_number(), 0.75);
  EXPECT_EQ(s.value.Find("replay_bytes")->as_number(), 1 << 20);
  EXPECT_EQ(s.value.Find("leases_expired")->as_number(), 2);
  EXPECT_EQ(s.value.Find("policy_version")->as_number(), 9);
}

TEST(ClientJsonFormatTest, InvalidEmbeddedJsonBecomesAString) {
  std::string out;
  AppendEmbeddedJson("{not json", "{}", &out);
  Doc d = ParseDoc(out);
  EXPECT_EQ(d.value.as_string(), "{not json");
}

TEST(ClientJsonFormatTest, ParseReportLine) {
  absl::StatusOr<RolloutReport> r = ParseReportLine(
      "{\"key\": \"q1\", \"rewards\": [1, 0, 0.5], \"policy_version\": 3, "
      "\"payload_b64\": \"AP8=\"}");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->key, "q1");
  EXPECT_EQ(r->rewards, (std::vector<float>{1, 0, 0.5f}));
  EXPECT_EQ(r->policy_version, 3);
  EXPECT_EQ(r->payload, std::string("\x00\xff", 2));

  absl::StatusOr<RolloutReport> minimal = ParseReportLine("{\"key\": \"q2\", \"rewards\": []}");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->policy_version, 0);
  EXPECT_TRUE(minimal->payload.empty());
}

TEST(ClientJsonFormatTest, ParseReportLineErrorsNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1]", "object"},
      {"{\"rewards\": [1]}", "\"key\""},
      {"{\"key\": \"\", \"rewards\": [1]}", "\"key\""},
      {"{\"key\": \"q\"}", "\"rewards\""},
      {"{\"key\": \"q\", \"rewards\": [1, \"x\"]}", "\"rewards\""},
      {"{\"key\": \"q\", \"rewards\": [1e999]}", "\"rewards\""},
      {"{\"key\": \"q\", \"rewards\": [1], \"policy_version\": -1}", "\"policy_version\""},
      {"{\"key\": \"q\", \"rewards\": [1], \"policy_version\": 1.5}", "\"policy_version\""},
      {"{\"key\": \"q\", \"rewards\": [1], \"payload_b64\": \"abc\"}", "\"payload_b64\""},
      {"{\"key\": \"q\", \"rewards\": [1], \"payload\": \"abcd\"}", "\"payload\""},
      {"{\"key\": \"q\", \"rewards\": [1]", "byte"},
  };
  for (const auto& [line, needle] : cases) {
    absl::StatusOr<RolloutReport> r = ParseReportLine(line);
    ASSERT_FALSE(r.ok()) << line;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << line;
    EXPECT_NE(std::string(r.status().message()).find(needle), std::string::npos)
        << line << " -> " << r.status();
  }
}

}  // namespace
}  // namespace dots
