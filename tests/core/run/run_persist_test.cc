// Durability of runs: a run reopened from its state store (snapshot + events) is the run it was,
// and continues exactly as a twin that never stopped.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/run/run.h"
#include "core/run/run_registry.h"
#include "core/storage/run_archive.h"
#include "core/storage/state_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/run/run_test_util.h"

namespace dots {
namespace {

using ::dots::testing::FakeClock;
using ::dots::testing::MakeQuestions;
using ::dots::testing::QuestionNumber;
using ::dots::testing::SyntheticRewards;

const absl::Time kSoon = absl::InfiniteFuture();

std::string NewDir() {
  std::string pattern = ::testing::TempDir() + "run_persist-XXXXXX";
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

RunConfig PersistConfig(EstimatorMode mode, ReferenceMode reference) {
  RunConfig c;
  c.batch_size = 16;
  c.group_size = 4;
  c.steps_per_round = 2;
  c.reference_size = 4;
  c.reference_mode = reference;
  c.fresh_fraction = 0.5;
  c.seed = 11;
  c.lease_timeout_seconds = 30;
  c.replay.capacity_groups = 24;
  c.estimator.options.mode = mode;
  return c;
}

// One run driven step by step; the same calls on two Drivers give the same results.
struct Driver {
  FakeClock* clock;
  std::shared_ptr<Run> run;

  BatchSlice Next(int64_t step, int64_t version) {
    // A real deadline: a step that cannot be planned fails the test instead of hanging it.
    auto slice = run->NextBatch(step, 0, 1, version, absl::Now() + absl::Seconds(30));
    // Paper reference mode: the round's reference batch comes first; roll it out completely.
    while (slice.ok() && slice->reference_batch) {
      std::vector<RolloutReport> groups;
      for (const BatchItem& item : slice->items) {
        groups.push_back(
            {item.key, SyntheticRewards(QuestionNumber(item.key), step, 4), version, ""});
      }
      auto reported = run->ReportRollouts(slice->step, std::move(groups));
      EXPECT_TRUE(reported.ok()) << reported.status();
      slice = run->NextBatch(step, 0, 1, version, absl::Now() + absl::Seconds(30));
    }
    EXPECT_TRUE(slice.ok()) << slice.status();
    return slice.ok() ? *slice : BatchSlice();
  }
  // Reports every item except every fifth (left to expire); payloads unique per (key, step).
  ReportResult Report(const BatchSlice& slice, int64_t version) {
    std::vector<RolloutReport> groups;
    for (size_t i = 0; i < slice.items.size(); ++i) {
      if (i % 5 == 4) continue;
      const std::string& key = slice.items[i].key;
      groups.push_back({key, SyntheticRewards(QuestionNumber(key), slice.step, 4), version,
                        absl::StrCat("payload:", key, ":", slice.step, ":", std::string(i, 'x'))});
    }
    groups.push_back(groups.front());                          // a duplicate
    groups.push_back({"q999999", {1, 0, 1, 0}, version, ""});  // rejected: unknown key
    auto r = run->ReportRollouts(slice.step, std::move(groups));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ReportResult();
  }
};

std::string Describe(const BatchSlice& s) {
  std::string out = absl::StrCat("step ", s.step, " round ", s.round, " size ", s.batch_size, ":");
  for (const BatchItem& i : s.items) {
    absl::StrAppend(&out, " ", i.key, "/", std::string(ItemRoleName(i.role)), "/", i.prompt.size());
  }
  for (const ReplayGroup& g : s.replay) {
    absl::StrAppend(&out, " R", g.key, "@", g.step, "v", g.policy_version, "#", g.payload);
    for (float r : g.rewards) absl::StrAppend(&out, ",", r);
  }
  return out;
}

std::string Describe(const RunStats& s) {
  return absl::StrCat(s.step, " ", s.round, " ", s.pool_size, " ", s.reported_groups, " ",
                      s.duplicate_reports, " ", s.rejected_reports, " ",
                      s.effective_ratio_last_step, " ", s.effective_groups, " ", s.solve_all_groups,
                      " ", s.solve_none_groups, " ", s.replay_groups, " ", s.replay_bytes, " ",
                      s.replayed_groups, " ", s.leases_outstanding, " ", s.leases_expired, " ",
                      s.rounds_planned, " ", s.policy_version);
}

std::string Describe(Run& run) {
  auto estimates = run.GetEstimates({});
  EXPECT_TRUE(estimates.ok()) << estimates.status();
  std::string out = Describe(run.Stats());
  if (estimates.ok()) {
    for (const QuestionEstimate& e : *estimates) {
      absl::StrAppend(&out, "|", e.key, "=", e.p_hat, "/", e.observations, "/",
                      e.last_policy_version);
    }
  }
  return out;
}

Run::Options OptionsWith(FakeClock* clock, StateStore* store) {
  Run::Options options;
  options.clock = [clock] { return clock->Now(); };
  options.background_planning = false;
  options.store = store;
  return options;
}

// Drives `durable` (stored) and `twin` (memory only) through `steps` identical steps, starting at
// `first`, advancing both clocks by 35 s (> the lease timeout) per step so that unreported leases
// expire.
void DriveBoth(Driver& durable, Driver& twin, int64_t first, int64_t steps,
               std::vector<std::string>* served) {
  for (int64_t step = first; step < first + steps; ++step) {
    const int64_t version = step / 3;
    const BatchSlice a = durable.Next(step, version);
    const BatchSlice b = twin.Next(step, version);
    ASSERT_EQ(Describe(a), Describe(b));
    served->push_back(Describe(a));
    durable.Report(a, version);
    twin.Report(b, version);
    durable.clock->Advance(absl::Seconds(35));
    twin.clock->Advance(absl::Seconds(35));
  }
}

// (estimator mode, reference mode, paper mode's online adapter training on).
class RunPersistTest
    : public ::testing::TestWithParam<std::tuple<EstimatorMode, ReferenceMode, bool>> {};

// Restart (events only, then snapshot + events), then continue: every served step is re-served
// identically, stats and estimates are identical, and later steps match the twin's.
TEST_P(RunPersistTest, ReopenedRunIsTheRunItWasAndContinuesIdentically) {
  const auto [mode, reference, adapter_training] = GetParam();
  RunConfig config = PersistConfig(mode, reference);
  if (adapter_training) {
    AdapterOnlineOptions& online = config.estimator.options.adapter_training;
    online.enabled = true;
    online.batch_size = 32;
    online.ref_size = 16;
    online.hidden_size = 16;
    online.num_layers = 1;
  }
  const std::string dir = NewDir();
  FakeClock durable_clock, twin_clock;
  std::vector<Question> questions;
  FloatMatrix embeddings;
  MakeQuestions(120, 6, 5, &questions, &embeddings);

  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_TRUE(store.ok()) << store.status();
  Driver durable{&durable_clock, nullptr}, twin{&twin_clock, nullptr};
  auto made = Run::Create("r", config, OptionsWith(&durable_clock, store->get()));
  ASSERT_TRUE(made.ok()) << made.status();
  durable.run = *std::move(made);
  made = Run::Create("r", config, OptionsWith(&twin_clock, nullptr));
  ASSERT_TRUE(made.ok()) << made.status();
  twin.run = *std::move(made);
  ASSERT_TRUE(durable.run->UpsertQuestions(questions, embeddings).ok());
  ASSERT_TRUE(twin.run->UpsertQuestions(questions, embeddings).ok());

  std::vector<std::string> served;
  auto reopen = [&](bool checkpoint_first) {
    if (checkpoint_first) {
      ASSERT_TRUE(durable.run->Checkpoint().ok());
    }
    const std::string before = Describe(*durable.run);
    durable.run.reset();
    store->reset();
    store = StateStore::Open(dir, SyncMode::kGroup);
    ASSERT_TRUE(store.ok()) << store.status();
    auto opened = Run::Open("r", OptionsWith(&durable_clock, store->get()));
    ASSERT_TRUE(opened.ok()) << opened.status();
    durable.run = *std::move(opened);
    EXPECT_EQ(Describe(*durable.run), before);
    for (int64_t step = 0; step < static_cast<int64_t>(served.size()); ++step) {
      if (step < durable.run->Stats().step - (Run::kRetainedRounds - 1) * 2) continue;
      auto again = durable.run->NextBatch(step, 0, 1, 0, kSoon);
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(Describe(*again), served[step]) << "step " << step;
    }
  };
  auto drive = [&](int64_t steps) {
    DriveBoth(durable, twin, static_cast<int64_t>(served.size()), steps, &served);
  };
  drive(7);
  reopen(/*checkpoint_first=*/false);  // the events alone
  drive(6);
  reopen(/*checkpoint_first=*/true);  // a snapshot, nothing after it
  // Grow the pool, then more steps so that the snapshot has events after it.
  std::vector<Question> more;
  FloatMatrix more_embeddings;
  MakeQuestions(140, 6, 5, &more, &more_embeddings);
  ASSERT_TRUE(durable.run->UpsertQuestions(more, more_embeddings).ok());
  ASSERT_TRUE(twin.run->UpsertQuestions(more, more_embeddings).ok());
  drive(5);
  reopen(/*checkpoint_first=*/false);  // snapshot + events
  drive(24);                           // long enough for steps to be retired
  reopen(/*checkpoint_first=*/false);
  drive(3);
  EXPECT_EQ(Describe(*durable.run), Describe(*twin.run));
  if (mode == EstimatorMode::kDefault || adapter_training) {
    // The online difficulty model (or adapter) took part in the plans compared above.
    EXPECT_GT(twin.run->Stats().model_version, 0);
    EXPECT_GT(durable.run->Stats().model_version, 0);
  } else {
    EXPECT_EQ(twin.run->Stats().model_version, 0);  // paper mode as released: nothing trains
  }
  durable.run.reset();
  store->reset();
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, RunPersistTest,
    ::testing::Values(std::make_tuple(EstimatorMode::kDefault, ReferenceMode::kInline, false),
                      std::make_tuple(EstimatorMode::kHistory, ReferenceMode::kInline, false),
                      std::make_tuple(EstimatorMode::kPaper, ReferenceMode::kPaper, false),
                      std::make_tuple(EstimatorMode::kPaper, ReferenceMode::kPaper, true)));

TEST(StateStoreTest, RefusesAnotherFormatVersionAndLeavesItUntouched) {
  const std::string dir = NewDir();
  {
    auto store = StateStore::Open(dir, SyncMode::kAlways);
    ASSERT_TRUE(store.ok()) << store.status();
    rocksdb::WriteBatch batch;
    batch.Put("format", "dots-state 99");
    batch.Put("r/x/m", "kept");
    ASSERT_TRUE((*store)->Write(std::move(batch)).ok());
  }
  auto reopened = StateStore::Open(dir, SyncMode::kAlways);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(reopened.status().message(), ::testing::HasSubstr("dots-state 99"));
  // Still there: rewrite the version and look.
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir, &raw).ok());
  std::string value;
  EXPECT_TRUE(raw->Get(rocksdb::ReadOptions(), "r/x/m", &value).ok());
  EXPECT_EQ(value, "kept");
  delete raw;
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, RefusesADirectoryThatIsNotDotsState) {
  const std::string dir = NewDir();
  std::ofstream(dir + "/notes.txt") << "my files";
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(std::filesystem::exists(dir + "/notes.txt"));
  std::filesystem::remove_all(dir);
}

// A store with one healthy run "a" and one run "b" with some history.
void WriteTwoRuns(const std::string& dir) {
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_TRUE(store.ok()) << store.status();
  FakeClock clock;
  RunRegistry registry(OptionsWith(&clock, store->get()));
  for (const char* id : {"a", "b"}) {
    auto entry =
        registry.Create(id, PersistConfig(EstimatorMode::kHistory, ReferenceMode::kInline));
    ASSERT_TRUE(entry.ok()) << entry.status();
    std::vector<Question> questions;
    FloatMatrix embeddings;
    MakeQuestions(60, 4, 2, &questions, &embeddings);
    ASSERT_TRUE(entry->run->UpsertQuestions(questions, embeddings).ok());
    Driver d{&clock, entry->run};
    for (int64_t step = 0; step < 3; ++step) {
      d.Report(d.Next(step, 0), 0);
      clock.Advance(absl::Seconds(40));  // unreported groups expire
    }
  }
  (*store)->db()->Flush(rocksdb::FlushOptions());
}

TEST(StateStoreTest, CorruptedRunFailsToLoadNamingItAndNothingIsDeleted) {
  const std::string dir = NewDir();
  WriteTwoRuns(dir);
  {
    auto store = StateStore::Open(dir, SyncMode::kGroup);
    ASSERT_TRUE(store.ok());
    rocksdb::WriteBatch batch;
    batch.Put(EventKey("b", 2), "\xff\xff garbage");
    ASSERT_TRUE((*store)->Write(std::move(batch)).ok());
  }
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_TRUE(store.ok());
  FakeClock clock;
  RunRegistry registry(OptionsWith(&clock, store->get()));
  const absl::Status loaded = registry.Load();
  EXPECT_EQ(loaded.code(), absl::StatusCode::kDataLoss) << loaded;
  EXPECT_THAT(loaded.message(), ::testing::HasSubstr("\"b\""));
  EXPECT_THAT(loaded.message(), ::testing::HasSubstr("event 2"));
  EXPECT_TRUE((*store)->Get(RunMetaKey("b")).ok());
  EXPECT_TRUE((*store)->Get(EventKey("b", 3)).ok());
  EXPECT_TRUE(Run::Open("a", OptionsWith(&clock, store->get())).ok());
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, MissingFileFailsToOpenClearly) {
  const std::string dir = NewDir();
  WriteTwoRuns(dir);
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".sst") removed += std::filesystem::remove(entry.path());
  }
  ASSERT_GT(removed, 0);
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), ::testing::HasSubstr(dir));
  EXPECT_TRUE(std::filesystem::exists(dir + "/CURRENT"));
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, DeleteRunRemovesEverythingOfThatRunOnly) {
  const std::string dir = NewDir();
  WriteTwoRuns(dir);
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_TRUE(store.ok());
  FakeClock clock;
  RunRegistry registry(OptionsWith(&clock, store->get()));
  ASSERT_TRUE(registry.Load().ok());
  auto a_before = registry.Get("a");
  ASSERT_TRUE(a_before.ok());
  const std::string a_state = Describe(*a_before->run);
  ASSERT_TRUE(registry.Delete("b").ok());
  int64_t b_keys = 0;
  ASSERT_TRUE((*store)
                  ->Scan(RunPrefix("b"),
                         [&](std::string_view, std::string_view) {
                           ++b_keys;
                           return absl::OkStatus();
                         })
                  .ok());
  EXPECT_EQ(b_keys, 0);
  auto runs = (*store)->ListRuns();
  ASSERT_TRUE(runs.ok());
  EXPECT_THAT(*runs, ::testing::ElementsAre("a"));
  a_before = absl::StatusOr<RunEntry>();
  auto a = Run::Open("a", OptionsWith(&clock, store->get()));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(Describe(**a), a_state);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dots

namespace dots {
namespace {

TEST(StateStoreTest, TokenHashSurvivesARestart) {
  const std::string dir = NewDir();
  const std::string hash(32, '\x7f');
  {
    auto store = StateStore::Open(dir, SyncMode::kAlways);
    ASSERT_TRUE(store.ok());
    FakeClock clock;
    RunRegistry registry(OptionsWith(&clock, store->get()));
    ASSERT_TRUE(registry.Create("t", RunConfig(), hash).ok());
  }
  auto store = StateStore::Open(dir, SyncMode::kAlways);
  ASSERT_TRUE(store.ok());
  FakeClock clock;
  auto run = Run::Open("t", OptionsWith(&clock, store->get()));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ((*run)->token_sha256(), hash);
  run->reset();
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, ASealedRunRefusesChangesAcrossARestartAndImportsUnsealed) {
  const std::string dir = NewDir();
  const std::string archive = dir + ".archive";
  {
    auto store = StateStore::Open(dir, SyncMode::kGroup);
    ASSERT_TRUE(store.ok());
    FakeClock clock;
    RunRegistry registry(OptionsWith(&clock, store->get()));
    auto entry =
        registry.Create("s", PersistConfig(EstimatorMode::kHistory, ReferenceMode::kInline));
    ASSERT_TRUE(entry.ok()) << entry.status();
    std::vector<Question> questions;
    FloatMatrix embeddings;
    MakeQuestions(60, 4, 2, &questions, &embeddings);
    ASSERT_TRUE(entry->run->UpsertQuestions(questions, embeddings).ok());
    Driver d{&clock, entry->run};
    const BatchSlice first = d.Next(0, 0);
    ASSERT_TRUE(entry->run->SetSealed(true).ok());
    EXPECT_TRUE(entry->run->sealed());
    // Every change is refused, naming the run, and nothing of it is applied.
    const int64_t reported = entry->run->Stats().reported_groups;
    std::vector<RolloutReport> groups{{first.items[0].key, {1, 0, 1, 0}, 0, ""}};
    auto report = entry->run->ReportRollouts(0, groups);
    EXPECT_EQ(report.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(report.status().message(), ::testing::HasSubstr("\"s\" is sealed"));
    EXPECT_EQ(entry->run->NextBatch(1, 0, 1, 0, kSoon).status().code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(entry->run->UpsertQuestions(questions, embeddings).status().code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(entry->run->Stats().reported_groups, reported);
    EXPECT_EQ(entry->run->Stats().pool_size, 60);
    std::ofstream out(archive, std::ios::binary);
    ASSERT_TRUE(ExportRunArchive(**store, "s", [&out](std::string_view chunk) {
                  out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
                  return absl::OkStatus();
                }).ok());
  }
  auto store = StateStore::Open(dir, SyncMode::kGroup);
  ASSERT_TRUE(store.ok());
  FakeClock clock;
  auto reopened = Run::Open("s", OptionsWith(&clock, store->get()));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE((*reopened)->sealed()) << "the seal is durable";
  ASSERT_TRUE(ImportRunArchive(**store, archive, "copy").ok());
  auto copy = Run::Open("copy", OptionsWith(&clock, store->get()));
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_FALSE((*copy)->sealed()) << "an imported copy is the live one";
  std::shared_ptr<dots::Run> live = std::move(*copy);
  Driver d{&clock, live};
  d.Report(d.Next(0, 0), 0);
  // Unsealing lets the original change again, and that too survives a restart.
  ASSERT_TRUE((*reopened)->SetSealed(false).ok());
  EXPECT_TRUE((*reopened)->NextBatch(0, 0, 1, 0, kSoon).ok());
  reopened->reset();
  live.reset();
  auto again = Run::Open("s", OptionsWith(&clock, store->get()));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->sealed());
  again->reset();
  store->reset();
  std::filesystem::remove_all(dir);
  std::filesystem::remove(archive);
}

}  // namespace
}  // namespace dots
