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

std::vector<Question> Questions(int n) {
  std::vector<Question> questions;
  for (int i = 0; i < n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrCat("question ", i);
    questions.push_back(q);
  }
  return questions;
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
  ASSERT_TRUE(client->UpsertQuestions(kRun, Questions(64), FloatMatrix()).ok());
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

}  // namespace
}  // namespace dots::testing
