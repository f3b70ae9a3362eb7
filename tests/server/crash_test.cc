// Crash safety of the real dots-server binary: a training load with unique payloads while the
// server is killed with SIGKILL at random moments (>= 20 times) and restarted on the same state
// directory. Acknowledged reports are never lost nor applied twice, replayed payloads are
// byte-identical to what was reported, and served steps are re-served identically.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

constexpr int kKills = 22;
constexpr char kRun[] = "crash";
constexpr char kConfig[] = R"({"batch_size": 24, "group_size": 4, "steps_per_round": 2,
  "reference_size": 4, "fresh_fraction": 0.5, "seed": 5, "lease_timeout_seconds": 600,
  "replay": {"capacity_groups": 48}, "estimator": {"mode": "history"}})";

std::vector<std::string> StateFlags(const std::string& dir) { return {"--state_dir=" + dir}; }

std::unique_ptr<Client> Connect(const std::string& address) {
  Client::Options options;
  options.target = address;
  options.max_attempts = 1;  // a dead server must fail the call, not be waited for
  options.default_deadline = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::string Describe(const BatchSlice& s) {
  std::string out = absl::StrCat(s.step, "/", s.round, "/", s.batch_size, ":");
  for (const BatchItem& i : s.items) absl::StrAppend(&out, " ", i.key);
  for (const ReplayGroup& g : s.replay) {
    absl::StrAppend(&out, " R", g.key, "@", g.step, "#", g.payload.size(), ":",
                    std::hash<std::string>()(g.payload));
  }
  return out;
}

// Unique, step- and key-dependent payload of 1-16 KiB.
std::string PayloadOf(int64_t step, const std::string& key, std::mt19937_64& rng) {
  std::string payload = absl::StrCat("step ", step, " key ", key, " ");
  const size_t size = 1024 + rng() % (15 * 1024);
  while (payload.size() < size) payload.push_back(static_cast<char>(rng()));
  return payload;
}

TEST(CrashTest, KilledServerLosesNothingAcknowledgedAndReplaysIdentically) {
  const TempDir state("crash_test");
  std::mt19937_64 rng(20261127);

  std::map<std::pair<int64_t, std::string>, std::string> sent;  // every payload ever sent
  std::set<std::pair<int64_t, std::string>> acknowledged;
  std::map<int64_t, std::string> served;  // step -> batch description at its first serving
  std::map<std::string, int64_t> sent_per_key, acked_per_key;

  auto server = std::make_unique<ServerProcess>(StateFlags(state.path()));
  ASSERT_FALSE(server->address().empty()) << "dots-server did not start";
  std::unique_ptr<Client> client = Connect(server->address());
  ASSERT_TRUE(client->CreateRun(kRun, kConfig).ok());
  std::vector<Question> questions;
  for (int i = 0; i < 300; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrCat("question ", i);
    questions.push_back(q);
  }
  auto upserted = client->UpsertQuestions(kRun, questions, FloatMatrix());
  ASSERT_TRUE(upserted.ok()) << upserted.status();

  // Kills the server after a random delay, kKills times; the driver restarts it.
  std::atomic<int> kills{0};
  std::atomic<pid_t> victim{server->pid()};
  std::atomic<bool> stop{false};
  std::thread killer;
  // Joined on every exit path, so that a failed assertion ends the test instead of the process.
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* thread;
    ~Joiner() {
      stop->store(true);
      if (thread->joinable()) thread->join();
    }
  } joiner{&stop, &killer};
  killer = std::thread([&] {
    std::mt19937_64 local(7);
    while (!stop.load() && kills.load() < kKills) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150 + local() % 600));
      const pid_t pid = victim.exchange(-1);
      if (pid > 0 && kill(pid, SIGKILL) == 0) ++kills;
    }
  });

  int64_t step = 0, restarts = 0;
  auto restart = [&] {
    victim.store(-1);
    client.reset();
    server->Kill();  // reaps (it may already be dead)
    server = std::make_unique<ServerProcess>(StateFlags(state.path()));
    ASSERT_FALSE(server->address().empty()) << "dots-server did not restart";
    client = Connect(server->address());
    ++restarts;
    // The steps served before are served identically (those the run still keeps).
    for (int64_t s = std::max<int64_t>(0, step - 4); s < step; ++s) {
      auto again = client->NextBatch(kRun, s, 0, 1, s / 3);
      if (!again.ok()) break;  // killed again meanwhile: the next restart checks
      EXPECT_EQ(Describe(*again), served[s]) << "step " << s << " after restart " << restarts;
    }
    victim.store(server->pid());
  };
  const absl::Time give_up = absl::Now() + absl::Minutes(4);
  while (kills.load() < kKills && absl::Now() < give_up) {
    auto batch = client->NextBatch(kRun, step, 0, 1, step / 3);
    if (!batch.ok()) {
      ASSERT_EQ(victim.load(), -1) << "failed without a kill: " << batch.status();
      restart();
      continue;
    }
    const std::string description = Describe(*batch);
    if (served.contains(step)) {
      EXPECT_EQ(description, served[step]) << "step " << step;
    } else {
      served[step] = description;
    }
    for (const ReplayGroup& g : batch->replay) {
      auto it = sent.find({g.step, g.key});
      ASSERT_NE(it, sent.end()) << "replayed a group never reported: " << g.key << "@" << g.step;
      EXPECT_EQ(g.payload, it->second) << "replayed payload of " << g.key << "@" << g.step;
    }
    std::vector<RolloutReport> groups;
    for (const BatchItem& item : batch->items) {
      const std::pair<int64_t, std::string> id{step, item.key};
      if (!sent.contains(id)) {
        sent[id] = PayloadOf(step, item.key, rng);
        ++sent_per_key[item.key];
      }
      const int n = static_cast<int>(rng() % 4) + 1;  // mixed rewards: replay keeps the group
      groups.push_back({item.key, {1, 0, n > 2 ? 1.0f : 0.0f, 0}, step / 3, sent[id]});
    }
    auto reported = client->ReportRollouts(kRun, step, groups);
    if (!reported.ok()) {
      ASSERT_EQ(victim.load(), -1) << "failed without a kill: " << reported.status();
      restart();
      continue;  // the same step again: its report is retried
    }
    EXPECT_TRUE(reported->rejected.empty());
    for (const RolloutReport& g : groups) {
      if (acknowledged.insert({step, g.key}).second) ++acked_per_key[g.key];
    }
    ++step;
  }
  stop.store(true);
  killer.join();
  ASSERT_GE(kills.load(), kKills) << "only " << kills.load() << " kills in the time allowed";
  restart();

  // Exactly once: each question's observation count (one per applied group) lies between its
  // acknowledged and its sent groups, and they sum to the run's reported groups.
  auto estimates = client->GetEstimates(kRun);
  ASSERT_TRUE(estimates.ok()) << estimates.status();
  auto stats = client->GetRunStats(kRun);
  ASSERT_TRUE(stats.ok()) << stats.status();
  int64_t observed = 0;
  for (const QuestionEstimate& e : *estimates) {
    EXPECT_GE(e.observations, acked_per_key[e.key]) << e.key << ": an acknowledged report lost";
    EXPECT_LE(e.observations, sent_per_key[e.key]) << e.key << ": a report applied twice";
    observed += e.observations;
  }
  EXPECT_EQ(observed, stats->reported_groups);
  EXPECT_GE(stats->reported_groups, static_cast<int64_t>(acknowledged.size()));
  // Re-reporting the acknowledged groups of the last steps: all duplicates.
  for (int64_t s = std::max<int64_t>(0, step - 4); s < step; ++s) {
    std::vector<RolloutReport> groups;
    for (const auto& [id, payload] : sent) {
      if (id.first == s && acknowledged.contains(id)) {
        groups.push_back({id.second, {1, 0, 0, 0}, s / 3, payload});
      }
    }
    auto again = client->ReportRollouts(kRun, s, groups);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->accepted, 0) << "step " << s;
    EXPECT_EQ(again->duplicates, static_cast<int64_t>(groups.size())) << "step " << s;
  }
  std::printf("crash test: %d kills, %lld restarts, %lld steps, %zu acknowledged groups\n",
              kills.load(), static_cast<long long>(restarts), static_cast<long long>(step),
              acknowledged.size());
}

}  // namespace
}  // namespace dots::testing
