#include "core/formats/labels.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Pool ThreeQuestions() {
  Pool pool;
  for (const char* key : {"q0", "q1", "q2"}) {
    Question q;
    q.key = key;
    EXPECT_TRUE(pool.Add(q).ok());
  }
  return pool;
}

std::string Error(const std::string& text, const LabelOptions& options = {}) {
  const Pool pool = ThreeQuestions();
  absl::StatusOr<LabelFile> r = ParseLabels(text, "L.jsonl", pool, options);
  EXPECT_FALSE(r.ok()) << text;
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(LabelsTest, ParsesSourcesRatesWeightsAndRollouts) {
  const Pool pool = ThreeQuestions();
  const std::string text =
      "{\"key\": \"q1\", \"source\": \"m1\", \"rate\": 0.25}\n"
      "\n"
      "   \r\n"
      "{\"key\": \"q1\", \"source\": \"m2\", \"rate\": 1, \"weight\": 0.5, \"extra\": [1]}\n"
      "{\"key\": \"q0\", \"source\": \"m1\", \"success_rate\": 0, \"rollouts\": 8}\n"
      "{\"key\": \"q2\", \"rate\": 0.5}";  // no final newline, no source
  absl::StatusOr<LabelFile> r = ParseLabels(text, "L.jsonl", pool);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->sources.size(), 3u);
  EXPECT_EQ(r->sources[0], "m1");
  EXPECT_EQ(r->sources[1], "m2");
  EXPECT_EQ(r->sources[2], "");
  ASSERT_EQ(r->labels.size(), 4u);
  EXPECT_EQ(r->labels[0].question, 1);
  EXPECT_EQ(r->labels[0].source, 0);
  EXPECT_EQ(r->labels[0].rate, 0.25);
  EXPECT_EQ(r->labels[0].line, 1);
  EXPECT_EQ(r->labels[1].source, 1);
  EXPECT_EQ(r->labels[1].weight, 0.5);
  EXPECT_EQ(r->labels[1].line, 4);
  EXPECT_EQ(r->labels[2].question, 0);
  EXPECT_EQ(r->labels[2].rollouts, 8);
  EXPECT_FALSE(r->labels[1].rollouts.has_value());
  EXPECT_EQ(r->labels[3].source, 2);
  EXPECT_EQ(r->labels[3].line, 6);
  EXPECT_TRUE(ParseLabels("", "L.jsonl", pool)->labels.empty());
}

TEST(LabelsTest, RejectsBadLinesNamingFileLineAndField) {
  EXPECT_EQ(Error("{\"key\": \"q0\", \"rate\": 0.5}\n{\"key\": \"q1\", \"rate\": NaN}"),
            "L.jsonl:2: field \"rate\": NaN is not a number (want a finite JSON number)");
  EXPECT_THAT(Error("{\"key\": \"q1\", \"rate\": -Infinity}"),
              StartsWith("L.jsonl:1: field \"rate\": -Infinity is not a number"));
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 1.5}"),
            "L.jsonl:1: field \"rate\": 1.5 is outside [0, 1]");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"success_rate\": -0.1}"),
            "L.jsonl:1: field \"success_rate\": -0.1 is outside [0, 1]");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 1e999}"),
            "L.jsonl:1: field \"rate\": 1e999 is outside [0, 1]");
  EXPECT_EQ(Error("\n{\"key\": \"q9\", \"rate\": 0.5}"),
            "L.jsonl:2: field \"key\": \"q9\" is not in the question pool");
  EXPECT_EQ(Error("{\"rate\": 0.5}"), "L.jsonl:1: field \"key\": missing (want a question key)");
  EXPECT_EQ(Error("{\"key\": 3, \"rate\": 0.5}"),
            "L.jsonl:1: field \"key\": is a number, want a string");
  EXPECT_EQ(Error("{\"key\": \"q1\"}"),
            "L.jsonl:1: field \"rate\": missing (want a number in [0, 1])");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": \"0.5\"}"),
            "L.jsonl:1: field \"rate\": is a string, want a number in [0, 1]");
  EXPECT_THAT(Error("{\"key\": \"q1\", \"rate\": 0.5, \"success_rate\": 0.5}"),
              HasSubstr("field \"success_rate\": given together with \"rate\""));
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 0.5}", {.require_source = true}),
            "L.jsonl:1: field \"source\": missing (want the name of the labelling model)");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 0.5, \"source\": 2}"),
            "L.jsonl:1: field \"source\": is a number, want a string");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"source\": \"m\", \"rate\": 0.5}\n"
                  "{\"key\": \"q2\", \"source\": \"m\", \"rate\": 0.5}\n"
                  "{\"key\": \"q1\", \"source\": \"m\", \"rate\": 0.7}"),
            "L.jsonl:3: key \"q1\" with source \"m\" is labeled twice (first on line 1)");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 0.5, \"weight\": -1}"),
            "L.jsonl:1: field \"weight\": -1 is not a finite number >= 0");
  EXPECT_EQ(Error("{\"key\": \"q1\", \"rate\": 0.5, \"rollouts\": 2.5}"),
            "L.jsonl:1: field \"rollouts\": 2.5 is not an integer in [1, 1000000]");
  EXPECT_EQ(Error("[1, 2]"), "L.jsonl:1: is an array, want a JSON object");
  EXPECT_THAT(Error("{\"key\": \"q1\", \"rate\": 0.5"), StartsWith("L.jsonl:1: at byte"));
}

TEST(LabelsTest, TheSameKeyFromTwoSourcesIsFine) {
  const Pool pool = ThreeQuestions();
  absl::StatusOr<LabelFile> r = ParseLabels(
      "{\"key\": \"q1\", \"source\": \"a\", \"rate\": 0.5}\n"
      "{\"key\": \"q1\", \"source\": \"b\", \"rate\": 0.5}\n",
      "L.jsonl", pool);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->labels.size(), 2u);
}

TEST(LabelsTest, LoadLabelsNamesThePath) {
  const Pool pool = ThreeQuestions();
  absl::StatusOr<LabelFile> r = LoadLabels("/nonexistent/labels.jsonl", pool);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/labels.jsonl"));
}

}  // namespace
}  // namespace dots
