// Run archives end to end: export from one server, import into another, and the run continues
// identically; corrupted or truncated archives are rejected and create nothing.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

constexpr char kConfig[] = R"({"batch_size": 16, "group_size": 4, "steps_per_round": 2,
  "reference_size": 4, "fresh_fraction": 0.5, "seed": 9, "lease_timeout_seconds": 600,
  "replay": {"capacity_groups": 32}})";

struct Node {
  std::unique_ptr<TempDir> state;
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> client;
};

Node StartNode(const std::string& name) {
  Node node;
  node.state = std::make_unique<TempDir>(name);
  Server::Options options = TestOptions();
  options.state_dir = node.state->path();
  node.server = StartTestServer(options);
  if (node.server == nullptr) return node;
  Client::Options client_options;
  client_options.target = node.server->address();
  node.client = *Client::Create(client_options);
  return node;
}

std::string Describe(const BatchSlice& s) {
  std::string out = absl::StrCat(s.step, "/", s.round, ":");
  for (const BatchItem& i : s.items) absl::StrAppend(&out, " ", i.key, "=", i.prompt);
  for (const ReplayGroup& g : s.replay)
    absl::StrAppend(&out, " R", g.key, "@", g.step, "#", g.payload);
  return out;
}

std::string Describe(Client& client, const std::string& run) {
  auto stats = client.GetRunStats(run);
  auto estimates = client.GetEstimates(run);
  EXPECT_TRUE(stats.ok() && estimates.ok());
  if (!stats.ok() || !estimates.ok()) return "";
  const RunStats& s = *stats;
  std::string out = absl::StrCat(s.step, " ", s.round, " ", s.pool_size, " ", s.reported_groups,
                                 " ", s.effective_ratio_last_step, " ", s.replay_groups, " ",
                                 s.replay_bytes, " ", s.leases_outstanding, " ", s.rounds_planned);
  for (const QuestionEstimate& e : *estimates) {
    absl::StrAppend(&out, "|", e.key, "=", e.p_hat, "/", e.observations);
  }
  return out;
}

// One training step on `run`: the batch, and a report of every item with a payload.
std::string Step(Client& client, const std::string& run, int64_t step) {
  auto batch = client.NextBatch(run, step, 0, 1, step);
  EXPECT_TRUE(batch.ok()) << batch.status();
  if (!batch.ok()) return "";
  std::vector<RolloutReport> groups;
  for (const BatchItem& item : batch->items) {
    const int n = static_cast<int>(item.key.size() + step) % 5;
    std::vector<float> rewards = {n > 0 ? 1.0f : 0.0f, n > 1 ? 1.0f : 0.0f, n > 2 ? 1.0f : 0.0f,
                                  n > 3 ? 1.0f : 0.0f};
    groups.push_back({item.key, rewards, step, absl::StrCat("payload ", item.key, " ", step)});
  }
  auto reported = client.ReportRollouts(run, step, groups);
  EXPECT_TRUE(reported.ok()) << reported.status();
  return Describe(*batch);
}

TEST(ArchiveTest, ExportImportContinuesIdenticallyOnAnotherServer) {
  Node a = StartNode("archive_a"), b = StartNode("archive_b");
  ASSERT_NE(a.client, nullptr);
  ASSERT_NE(b.client, nullptr);
  ASSERT_TRUE(a.client->CreateRun("src", kConfig).ok());
  std::vector<Question> questions;
  FloatMatrix embeddings(120, 4);
  for (int i = 0; i < 120; ++i) {
    questions.push_back({absl::StrCat("q", i), absl::StrCat("prompt ", i), "{}", std::nullopt});
    for (int d = 0; d < 4; ++d) embeddings.row(i)[d] = static_cast<float>((i * 7 + d * 3) % 11);
  }
  ASSERT_TRUE(a.client->UpsertQuestions("src", questions, embeddings).ok());
  for (int64_t step = 0; step < 9; ++step) Step(*a.client, "src", step);

  const std::string file = a.state->path() + "/src.dotsrun";
  ASSERT_TRUE(a.client->ExportRun("src", file).ok());
  auto imported = b.client->ImportRun(file, "copy");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->run_id, "copy");
  EXPECT_EQ(imported->pool_size, 120);

  EXPECT_EQ(Describe(*b.client, "copy"), Describe(*a.client, "src"));
  // Served steps identical, and the following steps too.
  for (int64_t step = 5; step < 9; ++step) {
    auto x = a.client->NextBatch("src", step, 0, 1, step);
    auto y = b.client->NextBatch("copy", step, 0, 1, step);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(Describe(*y), Describe(*x)) << "step " << step;
  }
  for (int64_t step = 9; step < 15; ++step) {
    EXPECT_EQ(Step(*b.client, "copy", step), Step(*a.client, "src", step)) << "step " << step;
  }
  EXPECT_EQ(Describe(*b.client, "copy"), Describe(*a.client, "src"));
  // Same id twice: ALREADY_EXISTS; under another id fine.
  EXPECT_EQ(b.client->ImportRun(file, "copy").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(b.client->ImportRun(file).ok());  // its own id, "src"
}

TEST(ArchiveTest, CorruptedOrTruncatedArchiveIsRejectedAndCreatesNothing) {
  Node a = StartNode("archive_c");
  ASSERT_NE(a.client, nullptr);
  ASSERT_TRUE(a.client->CreateRun("src", kConfig).ok());
  std::vector<Question> questions;
  for (int i = 0; i < 60; ++i) questions.push_back({absl::StrCat("q", i), "p", "{}", std::nullopt});
  ASSERT_TRUE(a.client->UpsertQuestions("src", questions, FloatMatrix()).ok());
  for (int64_t step = 0; step < 3; ++step) Step(*a.client, "src", step);
  const std::string file = a.state->path() + "/src.dotsrun";
  ASSERT_TRUE(a.client->ExportRun("src", file).ok());
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 1000u);
  auto attempt = [&](const std::string& name, const std::string& content) {
    const std::string path = a.state->path() + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    auto result = a.client->ImportRun(path, "broken");
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << name;
    return std::string(result.status().message());
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x20;
  // Wherever the flipped bit lands (a checksum, a length field, a tag), the archive is refused.
  EXPECT_THAT(attempt("flipped", flipped),
              ::testing::AnyOf(::testing::HasSubstr("corrupted"), ::testing::HasSubstr("truncated"),
                               ::testing::HasSubstr("trailer")));
  EXPECT_THAT(attempt("truncated", bytes.substr(0, bytes.size() - 100)),
              ::testing::HasSubstr("truncated"));
  EXPECT_THAT(attempt("no_trailer", bytes.substr(0, bytes.size() - 21)),
              ::testing::HasSubstr("truncated"));
  EXPECT_THAT(attempt("not_an_archive", "hello"), ::testing::HasSubstr("archive"));
  auto runs = a.client->ListRuns();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].run_id, "src");
  EXPECT_EQ(a.client->GetRun("broken").status().code(), absl::StatusCode::kNotFound);
}

TEST(ArchiveTest, MemoryOnlyServerCannotExport) {
  std::unique_ptr<Server> server = StartTestServer(TestOptions());
  ASSERT_NE(server, nullptr);
  Client::Options options;
  options.target = server->address();
  auto client = *Client::Create(options);
  ASSERT_TRUE(client->CreateRun("r", "{}").ok());
  const TempDir dir("archive_mem");
  EXPECT_EQ(client->ExportRun("r", dir.path() + "/r.dotsrun").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/r.dotsrun"));
}

}  // namespace
}  // namespace dots::testing

namespace dots::testing {
namespace {

// Archives whose checksums are right but whose contents are not a consistent run (found by
// fuzzing: question indices outside the pool, a run that does not open): refused, nothing
// created, and the server keeps serving.
TEST(ArchiveTest, InconsistentArchivesAreRefusedAndLeaveNothingBehind) {
  Node a = StartNode("archive_hostile");
  ASSERT_NE(a.client, nullptr);
  const std::string data = std::string(std::getenv("DOTS_SOURCE_DIR")) + "/tests/server/data/";
  for (const char* name : {"hostile-indices.dotsrun", "inconsistent.dotsrun"}) {
    auto imported = a.client->ImportRun(data + name, "imported");
    EXPECT_EQ(imported.status().code(), absl::StatusCode::kInvalidArgument)
        << name << ": " << imported.status();
    auto runs = a.client->ListRuns();
    ASSERT_TRUE(runs.ok());
    EXPECT_TRUE(runs->empty()) << name;
    auto stored = a.server->store()->ListRuns();
    ASSERT_TRUE(stored.ok());
    EXPECT_TRUE(stored->empty()) << name << " left records in the state directory";
  }
  EXPECT_TRUE(a.client->CreateRun("after", "{}").ok());
}

}  // namespace
}  // namespace dots::testing
