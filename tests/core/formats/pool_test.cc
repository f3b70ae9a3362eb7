#include "core/formats/pool.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/formats/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TempPath(std::string_view name) {
  std::ostringstream s;
  s << ::testing::TempDir() << "dots_pool_test_" << getpid() << "_"
    << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "_" << name;
  return s.str();
}

// Writes `contents` to a fresh temp file, removed when the object dies.
class TempFile {
 public:
  TempFile(std::string_view name, std::string_view contents) : path_(TempPath(name)) {
    std::ofstream out(path_, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Question MakeQuestion(std::string key, std::optional<double> prior = std::nullopt) {
  Question q;
  q.key = std::move(key);
  q.prompt = "prompt for " + q.key;
  q.prior = prior;
  return q;
}

// The error message of a load that must fail with InvalidArgument.
std::string LoadError(const std::string& jsonl, const std::string& npy = "") {
  auto pool = LoadPool(jsonl, npy);
  EXPECT_FALSE(pool.ok()) << "unexpectedly loaded " << jsonl;
  if (pool.ok()) return "";
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument) << pool.status();
  return std::string(pool.status().message());
}

std::string LineError(std::string_view line) {
  auto parsed = ParseQuestionLine(line);
  EXPECT_FALSE(parsed.ok()) << "unexpectedly parsed: " << line;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

// ---------------------------------------------------------------------------------------------
// Pool

TEST(PoolTest, EmptyPool) {
  Pool pool;
  EXPECT_EQ(pool.size(), 0);
  EXPECT_EQ(pool.dim(), 0);
  EXPECT_FALSE(pool.has_embeddings());
  EXPECT_TRUE(pool.embeddings().empty());
  EXPECT_FALSE(pool.IndexOf("a").has_value());
}

TEST(PoolTest, AddAndLookUpWithoutEmbeddings) {
  Pool pool;
  ASSERT_TRUE(pool.Add(MakeQuestion("a", 0.25)).ok());
  ASSERT_TRUE(pool.Add(MakeQuestion("b")).ok());
  ASSERT_TRUE(pool.Add(MakeQuestion("c", 1.0)).ok());
  EXPECT_EQ(pool.size(), 3);
  EXPECT_FALSE(pool.has_embeddings());
  EXPECT_EQ(pool.IndexOf("b"), 1);
  EXPECT_EQ(pool.IndexOf("c"), 2);
  EXPECT_FALSE(pool.IndexOf("d").has_value());
  EXPECT_EQ(pool.question(0).prior, 0.25);
  EXPECT_FALSE(pool.question(1).prior.has_value());
  EXPECT_EQ(pool.question(2).prompt, "prompt for c");
  EXPECT_EQ(pool.question(2).metadata_json, "{}");
  EXPECT_EQ(pool.questions().size(), 3u);
}

TEST(PoolTest, AddWithEmbeddingsFixesDimension) {
  Pool pool;
  ASSERT_TRUE(pool.Add(MakeQuestion("a"), std::vector<float>{1, 2, 3}).ok());
  ASSERT_TRUE(pool.Add(MakeQuestion("b"), std::vector<float>{4, 5, 6}).ok());
  EXPECT_EQ(pool.dim(), 3);
  EXPECT_TRUE(pool.has_embeddings());
  EXPECT_EQ(pool.embeddings().rows, 2);
  EXPECT_EQ(pool.embeddings().cols, 3);
  EXPECT_THAT(pool.embeddings().data, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(pool.embeddings().row(1)[2], 6.0f);
}

TEST(PoolTest, AddRejectsBadQuestionsAndChangesNothing) {
  Pool pool;
  ASSERT_TRUE(pool.Add(MakeQuestion("a", 0.5), std::vector<float>{1, 2}).ok());
  const std::vector<float> two = {3, 4};
  struct Case {
    Question q;
    std::vector<float> embedding;
    std::string error;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Case> cases = {
      {MakeQuestion("a"), two, "duplicate key \"a\""},
      {MakeQuestion(""), two, "field \"key\": is empty"},
      {MakeQuestion(std::string(kMaxKeyBytes + 1, 'k')), two, "exceeds the limit of 4096"},
      {MakeQuestion("p", 1.5), two, "field \"prior\": 1.5 is outside [0, 1]"},
      {MakeQuestion("p", -0.01), two, "field \"prior\": -0.01 is outside [0, 1]"},
      {MakeQuestion("p", nan), two, "field \"prior\": nan is not finite"},
      {MakeQuestion("p", inf), two, "not finite"},
      {MakeQuestion("e"), {1, std::numeric_limits<float>::quiet_NaN()}, "value 1 is not finite"},
      {MakeQuestion("e"), {std::numeric_limits<float>::infinity(), 1}, "value 0 is not finite"},
      {MakeQuestion("e"), {1, 2, 3}, "has 3 values, the pool's dimension is 2"},
      {MakeQuestion("e"), {}, "missing, but the pool's questions have 2-d embeddings"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.error);
    const absl::Status s = pool.Add(c.q, c.embedding);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(c.error));
    EXPECT_EQ(pool.size(), 1);
    EXPECT_EQ(pool.dim(), 2);
    EXPECT_THAT(pool.embeddings().data, ElementsAre(1, 2));
    EXPECT_EQ(pool.embeddings().rows, 1);
  }
  EXPECT_FALSE(pool.IndexOf("e").has_value());
  EXPECT_FALSE(pool.IndexOf("p").has_value());
  // Boundary values are accepted.
  EXPECT_TRUE(pool.Add(MakeQuestion(std::string(kMaxKeyBytes, 'k'), 0.0), two).ok());
  EXPECT_TRUE(pool.Add(MakeQuestion("one", 1.0), two).ok());
}

TEST(PoolTest, AddRejectsMixingEmbeddedAndPlainQuestions) {
  Pool plain;
  ASSERT_TRUE(plain.Add(MakeQuestion("a")).ok());
  const absl::Status s = plain.Add(MakeQuestion("b"), std::vector<float>{1});
  EXPECT_THAT(s.message(), HasSubstr("earlier questions have no embedding"));
  EXPECT_EQ(plain.size(), 1);
  EXPECT_EQ(plain.dim(), 0);
  EXPECT_TRUE(plain.embeddings().empty());
}

TEST(PoolTest, AddRejectsOversizedEmbedding) {
  Pool pool;
  const std::vector<float> huge(kMaxEmbeddingDim + 1, 0.5f);
  EXPECT_THAT(pool.Add(MakeQuestion("a"), huge).message(), HasSubstr("exceeds the limit"));
  EXPECT_EQ(pool.size(), 0);
  const std::vector<float> max(kMaxEmbeddingDim, 0.5f);
  EXPECT_TRUE(pool.Add(MakeQuestion("a"), max).ok());
  EXPECT_EQ(pool.dim(), kMaxEmbeddingDim);
}

TEST(PoolTest, SetEmbeddings) {
  Pool pool;
  ASSERT_TRUE(pool.Add(MakeQuestion("a")).ok());
  ASSERT_TRUE(pool.Add(MakeQuestion("b")).ok());
  FloatMatrix wrong_rows(3, 2);
  EXPECT_THAT(pool.SetEmbeddings(wrong_rows).message(),
              HasSubstr("3 rows but the pool has 2 questions"));
  FloatMatrix bad(2, 2);
  bad.data = {1, 2, 3, std::numeric_limits<float>::infinity()};
  EXPECT_THAT(pool.SetEmbeddings(bad).message(), HasSubstr("row 1 column 1 is not finite"));
  FloatMatrix no_cols(2, 0);
  EXPECT_FALSE(pool.SetEmbeddings(no_cols).ok());
  FloatMatrix short_data(2, 2);
  short_data.data.pop_back();
  EXPECT_THAT(pool.SetEmbeddings(short_data).message(), HasSubstr("holds 3 values"));
  EXPECT_FALSE(pool.has_embeddings());
  FloatMatrix good(2, 2);
  good.data = {1, 2, 3, 4};
  ASSERT_TRUE(pool.SetEmbeddings(good).ok());
  EXPECT_EQ(pool.dim(), 2);
  EXPECT_THAT(pool.embeddings().data, ElementsAre(1, 2, 3, 4));
  // Once embedded, further questions need embeddings of that dimension.
  EXPECT_FALSE(pool.Add(MakeQuestion("c")).ok());
  EXPECT_TRUE(pool.Add(MakeQuestion("c"), std::vector<float>{5, 6}).ok());
  EXPECT_THAT(pool.embeddings().data, ElementsAre(1, 2, 3, 4, 5, 6));
  // Replacing with another dimension is allowed (the text embedder may re-embed).
  FloatMatrix wider(3, 3);
  ASSERT_TRUE(pool.SetEmbeddings(wider).ok());
  EXPECT_EQ(pool.dim(), 3);
}

// ---------------------------------------------------------------------------------------------
// ParseQuestionLine

TEST(ParseQuestionLineTest, FullLine) {
  auto parsed = ParseQuestionLine(
      R"({"key": "q1", "prompt": "What is 2+2?", "metadata": {"answer": "4"}, "prior": 0.75,)"
      R"( "embedding": [0.5, -1, 2e-3]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->question.key, "q1");
  EXPECT_EQ(parsed->question.prompt, "What is 2+2?");
  EXPECT_EQ(parsed->question.metadata_json, R"({"answer": "4"})");
  EXPECT_EQ(parsed->question.prior, 0.75);
  EXPECT_THAT(parsed->embedding, ElementsAre(0.5f, -1.0f, 2e-3f));
}

TEST(ParseQuestionLineTest, MetadataIsKeptByteForByte) {
  const std::string metadata = "{ \"b\" :[1,  2.50 ] ,\n \"a\":\"x\\u00e9\\n\" , \"c\": {}}";
  auto parsed =
      ParseQuestionLine("{\"key\":\"k\",\"metadata\":  " + metadata + "  ,\"prompt\":\"\"}");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->question.metadata_json, metadata);
  EXPECT_EQ(parsed->question.prompt, "");
  // Non-object metadata is kept verbatim too.
  auto str = ParseQuestionLine(R"({"key":"k","prompt":"p","metadata":"just \"text\""})");
  ASSERT_TRUE(str.ok());
  EXPECT_EQ(str->question.metadata_json, R"("just \"text\"")");
  auto null_md = ParseQuestionLine(R"({"key":"k","prompt":"p","metadata":null})");
  ASSERT_TRUE(null_md.ok());
  EXPECT_EQ(null_md->question.metadata_json, "null");
}

TEST(ParseQuestionLineTest, DefaultsAndIgnoredFields) {
  auto parsed = ParseQuestionLine(
      R"({"key": "k", "prompt": "p", "history": [0.0, 0.125], "pass_rate": 0.5, "x": {"y": 1}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->question.metadata_json, "{}");
  EXPECT_FALSE(parsed->question.prior.has_value());
  EXPECT_TRUE(parsed->embedding.empty());
  auto null_prior = ParseQuestionLine(R"({"key": "k", "prompt": "p", "prior": null})");
  ASSERT_TRUE(null_prior.ok());
  EXPECT_FALSE(null_prior->question.prior.has_value());
  auto zero = ParseQuestionLine(R"({"key": "k", "prompt": "p", "prior": 0})");
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->question.prior, 0.0);
  auto one = ParseQuestionLine(R"({"key": "k", "prompt": "p", "prior": 1.0})");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->question.prior, 1.0);
  // Unicode in key and prompt is decoded.
  auto unicode = ParseQuestionLine(R"({"key": "\u00e9", "prompt": "\ud83d\ude00"})");
  ASSERT_TRUE(unicode.ok());
  EXPECT_EQ(unicode->question.key, "\xC3\xA9");
  EXPECT_EQ(unicode->question.prompt, "\xF0\x9F\x98\x80");
}

TEST(ParseQuestionLineTest, RequiredFields) {
  EXPECT_EQ(LineError(R"({"prompt": "p"})"), "field \"key\": missing");
  EXPECT_EQ(LineError(R"({"key": "k"})"), "field \"prompt\": missing");
  EXPECT_EQ(LineError(R"({"key": "", "prompt": "p"})"), "field \"key\": is empty");
  EXPECT_EQ(LineError(R"({"key": 17, "prompt": "p"})"),
            "field \"key\": is a number, want a string");
  EXPECT_EQ(LineError(R"({"key": null, "prompt": "p"})"), "field \"key\": is null, want a string");
  EXPECT_EQ(LineError(R"({"key": "k", "prompt": ["p"]})"),
            "field \"prompt\": is an array, want a string");
  EXPECT_THAT(
      LineError("{\"key\": \"" + std::string(kMaxKeyBytes + 1, 'x') + "\", \"prompt\": \"\"}"),
      HasSubstr("field \"key\": 4097 bytes exceeds the limit of 4096"));
  EXPECT_TRUE(
      ParseQuestionLine("{\"key\": \"" + std::string(kMaxKeyBytes, 'x') + "\", \"prompt\": \"\"}")
          .ok());
}

TEST(ParseQuestionLineTest, PriorValidation) {
  EXPECT_EQ(LineError(R"({"key": "k", "prompt": "p", "prior": 1.5})"),
            "field \"prior\": 1.5 is outside [0, 1]");
  EXPECT_EQ(LineError(R"({"key": "k", "prompt": "p", "prior": -1e-9})"),
            "field \"prior\": -1e-9 is outside [0, 1]");
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "prior": 1e400})"),
              HasSubstr("field \"prior\": 1e400 is not a finite"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "prior": "0.5"})"),
              HasSubstr("field \"prior\": is a string"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "prior": true})"),
              HasSubstr("field \"prior\": is a bool"));
  // NaN is not JSON at all.
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "prior": NaN})"), HasSubstr("invalid JSON"));
}

TEST(ParseQuestionLineTest, EmbeddingValidation) {
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": [1, 1e400]})"),
              HasSubstr("field \"embedding\": element 1 (1e400) is not a finite float"));
  // Finite as a double but not as a float32.
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": [1e39]})"),
              HasSubstr("element 0 (1e39) is not a finite float"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": [1, "2"]})"),
              HasSubstr("field \"embedding\": element 1 is a string, want a number"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": [1, null]})"),
              HasSubstr("element 1 is null"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": {"0": 1}})"),
              HasSubstr("field \"embedding\": is an object, want an array of numbers"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p", "embedding": []})"),
              HasSubstr("field \"embedding\": is empty"));
  std::string huge = R"({"key": "k", "prompt": "p", "embedding": [0)";
  for (int i = 0; i < kMaxEmbeddingDim; ++i) huge += ",0";
  EXPECT_THAT(LineError(huge + "]}"), HasSubstr("dimension 65537 exceeds the limit of 65536"));
}

TEST(ParseQuestionLineTest, MalformedLines) {
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p")"), HasSubstr("invalid JSON at byte 26"));
  EXPECT_THAT(LineError(R"({"key": "k", "prompt": "p"} extra)"), HasSubstr("invalid JSON"));
  EXPECT_THAT(LineError(R"(["key", "prompt"])"), HasSubstr("line is an array, want a JSON object"));
  EXPECT_THAT(LineError(R"({"key": "k", "key": "k2", "prompt": "p"})"),
              HasSubstr("duplicate object key \"key\""));
  EXPECT_THAT(LineError("{\"key\": \"k\", \"prompt\": \"caf\xE9\"}"), HasSubstr("invalid UTF-8"));
  EXPECT_THAT(LineError("{\"key\": \"k\xC0\x80\", \"prompt\": \"\"}"), HasSubstr("invalid UTF-8"));
  EXPECT_THAT(LineError("{\"key\": \"k\", \"prompt\": \"p\", \"metadata\": {\"a\": \"\xFF\"}}"),
              HasSubstr("invalid UTF-8"));
}

// ---------------------------------------------------------------------------------------------
// LoadPool

TEST(LoadPoolTest, LoadsJsonlWithBlankLinesAndNoFinalNewline) {
  TempFile file("q.jsonl",
                "{\"key\": \"a\", \"prompt\": \"A\", \"prior\": 0.5}\n"
                "\n"
                "   \t\n"
                "{\"key\": \"b\", \"prompt\": \"B\", \"metadata\": {\"answer\": \"7\"}}\r\n"
                "{\"key\": \"c\", \"prompt\": \"C\", \"history\": [1, 0]}");
  auto pool = LoadPool(file.path());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->size(), 3);
  EXPECT_FALSE(pool->has_embeddings());
  EXPECT_EQ(pool->IndexOf("c"), 2);
  EXPECT_EQ(pool->question(0).prior, 0.5);
  EXPECT_EQ(pool->question(1).metadata_json, "{\"answer\": \"7\"}");
  EXPECT_EQ(pool->question(2).prompt, "C");
}

TEST(LoadPoolTest, InlineEmbeddings) {
  TempFile file("q.jsonl",
                "{\"key\": \"a\", \"prompt\": \"\", \"embedding\": [1, 2]}\n"
                "{\"key\": \"b\", \"prompt\": \"\", \"embedding\": [3, 4.5]}\n");
  auto pool = LoadPool(file.path());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->dim(), 2);
  EXPECT_THAT(pool->embeddings().data, ElementsAre(1, 2, 3, 4.5));
}

TEST(LoadPoolTest, ErrorsNameFileLineAndField) {
  const std::string ok = "{\"key\": \"a\", \"prompt\": \"A\"}\n";
  {
    TempFile file("q.jsonl", ok + "\n{\"key\": \"b\", \"prompt\": \"B\", \"prior\": 1.5}\n");
    EXPECT_EQ(LoadError(file.path()), file.path() + ":3: field \"prior\": 1.5 is outside [0, 1]");
  }
  {
    TempFile file("q.jsonl", ok + ok);
    EXPECT_EQ(LoadError(file.path()),
              file.path() + ":2: field \"key\": duplicate key \"a\" (first on line 1)");
  }
  {
    TempFile file("q.jsonl", ok + "{\"prompt\": \"B\"}\n");
    EXPECT_EQ(LoadError(file.path()), file.path() + ":2: field \"key\": missing");
  }
  {
    TempFile file("q.jsonl", ok + "{\"key\": \"b\", \"prompt\": 3}\n");
    EXPECT_EQ(LoadError(file.path()),
              file.path() + ":2: field \"prompt\": is a number, want a string");
  }
  {
    TempFile file("q.jsonl", ok + ok.substr(0, 10) + "\n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr(file.path() + ":2: invalid JSON at byte"));
  }
  {
    TempFile file("q.jsonl", ok + "{\"key\": \"b\", \"prompt\": \"\xFF\"}\n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr(file.path() + ":2: invalid JSON at byte 24"));
  }
  {
    TempFile file("q.jsonl", "[]\n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr(":1: line is an array"));
  }
}

TEST(LoadPoolTest, InconsistentInlineEmbeddings) {
  {
    TempFile file("q.jsonl",
                  "{\"key\": \"a\", \"prompt\": \"\", \"embedding\": [1, 2]}\n"
                  "{\"key\": \"b\", \"prompt\": \"\", \"embedding\": [1, 2, 3]}\n");
    EXPECT_EQ(LoadError(file.path()),
              file.path() + ":2: field \"embedding\": has 3 values, the pool's dimension is 2");
  }
  {
    TempFile file("q.jsonl",
                  "{\"key\": \"a\", \"prompt\": \"\", \"embedding\": [1, 2]}\n"
                  "{\"key\": \"b\", \"prompt\": \"\"}\n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr(":2: field \"embedding\": missing"));
  }
  {
    TempFile file("q.jsonl",
                  "{\"key\": \"a\", \"prompt\": \"\"}\n"
                  "{\"key\": \"b\", \"prompt\": \"\", \"embedding\": [1]}\n");
    EXPECT_THAT(LoadError(file.path()),
                HasSubstr(":2: field \"embedding\": the pool's earlier questions have no"));
  }
  {
    TempFile file("q.jsonl", "{\"key\": \"a\", \"prompt\": \"\", \"embedding\": [1e400]}\n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr(":1: field \"embedding\": element 0 (1e400)"));
  }
}

TEST(LoadPoolTest, EmptyOrMissingFile) {
  {
    TempFile file("q.jsonl", "");
    EXPECT_THAT(LoadError(file.path()), HasSubstr("contains no questions"));
  }
  {
    TempFile file("q.jsonl", "\n\n  \n");
    EXPECT_THAT(LoadError(file.path()), HasSubstr("contains no questions"));
  }
  auto missing = LoadPool("/nonexistent/q.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/q.jsonl"));
}

TEST(LoadPoolTest, EmbeddingsFromNpy) {
  TempFile jsonl("q.jsonl",
                 "{\"key\": \"a\", \"prompt\": \"A\"}\n"
                 "{\"key\": \"b\", \"prompt\": \"B\"}\n"
                 "{\"key\": \"c\", \"prompt\": \"C\"}\n");
  FloatMatrix m(3, 2);
  m.data = {1, 2, 3, 4, 5, 6};
  const std::string npy = TempPath("emb.npy");
  ASSERT_TRUE(WriteNpy(npy, m).ok());
  auto pool = LoadPool(jsonl.path(), npy);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->dim(), 2);
  EXPECT_THAT(pool->embeddings().data, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_EQ(pool->embeddings().row(*pool->IndexOf("c"))[1], 6.0f);

  // Row count must match the number of questions.
  FloatMatrix four(4, 2);
  ASSERT_TRUE(WriteNpy(npy, four).ok());
  EXPECT_EQ(LoadError(jsonl.path(), npy),
            npy + ": has 4 rows but " + jsonl.path() + " has 3 questions");
  FloatMatrix two(2, 2);
  ASSERT_TRUE(WriteNpy(npy, two).ok());
  EXPECT_THAT(LoadError(jsonl.path(), npy), HasSubstr("has 2 rows"));

  // Non-finite values in the .npy are rejected with the file named.
  m.data[3] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(WriteNpy(npy, m).ok());
  EXPECT_EQ(LoadError(jsonl.path(), npy), npy + ": embedding row 1 column 1 is not finite");

  // A broken .npy is reported with its own name.
  {
    std::ofstream out(npy, std::ios::binary | std::ios::trunc);
    out << "not numpy";
  }
  EXPECT_THAT(LoadError(jsonl.path(), npy), HasSubstr(npy + ": not a .npy file"));
  std::remove(npy.c_str());
  auto missing = LoadPool(jsonl.path(), npy);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(LoadPoolTest, InlineEmbeddingWithNpyIsAmbiguous) {
  TempFile jsonl("q.jsonl",
                 "{\"key\": \"a\", \"prompt\": \"A\"}\n"
                 "{\"key\": \"b\", \"prompt\": \"B\", \"embedding\": [1, 2]}\n");
  FloatMatrix m(2, 2);
  const std::string npy = TempPath("emb.npy");
  ASSERT_TRUE(WriteNpy(npy, m).ok());
  EXPECT_THAT(LoadError(jsonl.path(), npy),
              HasSubstr(jsonl.path() + ":2: field \"embedding\": inline embeddings are not "
                                       "allowed"));
  std::remove(npy.c_str());
}

// ---------------------------------------------------------------------------------------------
// Real data

// Finds a real data file: the repository's bundled data/ (DOTS_SOURCE_DIR is set by ctest) or
// data/ of the current directory.
std::string RealDataPath(const std::string& relative) {
  std::vector<std::string> candidates;
  if (const char* src = std::getenv("DOTS_SOURCE_DIR"); src != nullptr && *src != '\0') {
    candidates.push_back(std::string(src) + "/data/" + relative);
  }
  candidates.push_back("data/" + relative);
  for (const std::string& c : candidates) {
    if (std::ifstream(c).good()) return c;
  }
  return "";
}

// Counts non-blank lines and lines with a non-null "prior" by plain text scanning, as an
// independent check of the loader.
struct LineCounts {
  int64_t lines = 0;
  int64_t priors = 0;
  std::string first_line;
};
LineCounts CountLines(const std::string& path) {
  LineCounts c;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (c.lines++ == 0) c.first_line = line;
    const size_t p = line.find("\"prior\": ");
    if (p != std::string::npos && line.compare(p + 9, 4, "null") != 0) ++c.priors;
  }
  return c;
}

TEST(LoadPoolTest, LoadsRealOneShotRlvrPool) {
  const std::string path = RealDataPath("oneshot-rlvr/questions.jsonl");
  ASSERT_FALSE(path.empty()) << "data/oneshot-rlvr/questions.jsonl not found (set DOTS_SOURCE_DIR)";
  auto pool = LoadPool(path);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->size(), 1209);
  int64_t priors = 0;
  for (const Question& q : pool->questions()) {
    priors += q.prior.has_value();
    ASSERT_FALSE(q.key.empty());
    ASSERT_EQ(pool->IndexOf(q.key), &q - pool->questions().data());
  }
  EXPECT_EQ(priors, 898);
  EXPECT_FALSE(pool->has_embeddings());
  const LineCounts counts = CountLines(path);
  EXPECT_EQ(counts.lines, pool->size());
  EXPECT_EQ(counts.priors, priors);
  // The first question's metadata text appears verbatim in its source line.
  EXPECT_EQ(pool->question(0).key, "oneshot-0");
  EXPECT_THAT(counts.first_line,
              HasSubstr("\"metadata\": " + pool->question(0).metadata_json + ", \"prior\""));
  EXPECT_EQ(pool->question(0).metadata_json, R"({"answer": "\\frac{3}{7}"})");
}

TEST(LoadPoolTest, LoadsRealMathPool) {
  const std::string path = RealDataPath("math-passrates/questions.jsonl");
  ASSERT_FALSE(path.empty())
      << "data/math-passrates/questions.jsonl not found (set DOTS_SOURCE_DIR)";
  const auto start = std::chrono::steady_clock::now();
  auto pool = LoadPool(path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(pool.ok()) << pool.status();
  const LineCounts counts = CountLines(path);
  EXPECT_EQ(pool->size(), counts.lines);
  EXPECT_EQ(pool->size(), 12500);
  int64_t priors = 0;
  for (const Question& q : pool->questions()) {
    priors += q.prior.has_value();
    ASSERT_EQ(pool->IndexOf(q.key), &q - pool->questions().data());
  }
  EXPECT_EQ(priors, counts.priors);
  // The extra "rates" and "history" fields of the benchmark file stay out of the metadata.
  EXPECT_THAT(pool->question(0).metadata_json, HasSubstr(R"("split": "train")"));
  EXPECT_THAT(pool->question(0).metadata_json, Not(HasSubstr("history")));
  std::cout << "LoadPool(" << path << "): " << pool->size() << " questions in " << seconds * 1e3
            << " ms\n";
  ::testing::Test::RecordProperty("load_ms", static_cast<int>(seconds * 1e3));
}

}  // namespace
}  // namespace dots

namespace dots {
namespace {

TEST(LoadPoolProgressTest, ReportsAboutEveryTenthOfTheFile) {
  const std::string path = ::testing::TempDir() + "/progress_pool.jsonl";
  {
    std::ofstream out(path);
    for (int i = 0; i < 100; ++i) out << "{\"key\": \"k" << i << "\", \"prompt\": \"p\"}\n";
  }
  std::vector<int64_t> calls;
  auto pool = LoadPool(path, "", [&](int64_t n) { calls.push_back(n); });
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->size(), 100);
  EXPECT_GE(calls.size(), 9u);
  EXPECT_LE(calls.size(), 11u);
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GT(calls[i], calls[i - 1]);
  EXPECT_LE(calls.back(), 100);
}

}  // namespace
}  // namespace dots
