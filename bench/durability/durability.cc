#include "bench/durability/durability.h"

#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/run/run.h"
#include "core/storage/state_store.h"
#include "core/util/mutex.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots::bench {
namespace {

constexpr absl::Time kNoDeadline = absl::InfiniteFuture();

absl::StatusOr<std::string> MakeTempDir(const std::string& base) {
  std::string pattern = (std::filesystem::path(base) / "dots-bench-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot create a directory under ", base));
  }
  return pattern;
}

std::string Payload(int64_t bytes, uint64_t seed) {
  Rng rng(seed);
  std::string payload(static_cast<size_t>(bytes), '\0');
  for (char& c : payload) c = static_cast<char>(rng.Below(256));
  return payload;
}

// Informative rewards (0 < mean < 1), so every group also enters the replay store.
std::vector<float> Rewards(int group_size) {
  std::vector<float> r(static_cast<size_t>(group_size), 0.0f);
  r[0] = 1.0f;
  return r;
}

// Runs `writers` threads over `total` items; item i goes to thread i % writers. Returns seconds.
template <typename Fn>
absl::StatusOr<double> Parallel(int writers, int64_t total, Fn fn) {
  std::atomic<bool> failed{false};
  std::string error;
  Mutex mu;
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      for (int64_t i = w; i < total && !failed.load(); i += writers) {
        absl::Status s = fn(i);
        if (!s.ok()) {
          MutexLock lock(&mu);
          failed.store(true);
          error = s.ToString();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (failed.load()) return absl::InternalError(error);
  return absl::ToDoubleSeconds(absl::Now() - start);
}

// Raw puts: `total` values of `bytes` under distinct keys, each Put fsynced.
absl::StatusOr<double> RawPuts(const std::string& dir, SyncMode sync, int writers, int64_t total,
                               const std::string& payload) {
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store, StateStore::Open(dir, sync));
  rocksdb::DB* db = store->db();
  return Parallel(writers, total, [&](int64_t i) -> absl::Status {
    rocksdb::WriteOptions options;
    options.sync = true;
    rocksdb::Status s = db->Put(options, absl::StrCat("raw/", i), payload);
    return s.ok() ? absl::OkStatus() : absl::UnavailableError(s.ToString());
  });
}

// dots: ReportRollouts of one group per call into a durable run, `writers` threads per step.
absl::StatusOr<double> DotsReports(const std::string& dir, SyncMode sync, int writers,
                                   int64_t total, const std::string& payload) {
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store, StateStore::Open(dir, sync));
  RunConfig config;
  config.batch_size = 512;
  config.group_size = 8;
  config.steps_per_round = 1;
  config.reference_size = 0;
  config.reference_mode = ReferenceMode::kNone;
  config.estimator.options.mode = EstimatorMode::kHistory;
  config.lease_timeout_seconds = 3600;
  Run::Options options;
  options.store = store.get();
  options.background_planning = false;
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run, Run::Create("ingest", config, options));
  std::vector<Question> questions;
  for (int i = 0; i < 4096; ++i) questions.push_back({absl::StrCat("q", i), "p", "{}", 0.5});
  DOTS_RETURN_IF_ERROR(run->UpsertQuestions(std::move(questions), FloatMatrix()).status());
  double seconds = 0;
  for (int64_t step = 0, done = 0; done < total; ++step) {
    DOTS_ASSIGN_OR_RETURN(BatchSlice batch, run->NextBatch(step, 0, 1, 0, kNoDeadline));
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(batch.items.size()), total - done);
    DOTS_ASSIGN_OR_RETURN(double s, Parallel(writers, n, [&](int64_t i) -> absl::Status {
                            std::vector<RolloutReport> group = {
                                {batch.items[i].key, Rewards(config.group_size), 0, payload}};
                            DOTS_ASSIGN_OR_RETURN(ReportResult r,
                                                  run->ReportRollouts(step, std::move(group)));
                            if (r.accepted != 1) return absl::InternalError("report not accepted");
                            return absl::OkStatus();
                          }));
    seconds += s;
    done += n;
    // Unreported items of a partial last step would block nothing: the loop ends.
    if (n < static_cast<int64_t>(batch.items.size())) break;
  }
  return seconds;
}

int Fail(const char* command, const absl::Status& s) {
  std::fprintf(stderr, "dots-bench %s: %s\n", command, s.ToString().c_str());
  return 1;
}

struct IngestArgs {
  std::vector<int> writers = {1, 32};
  int64_t groups = 8192;
  int64_t payload_bytes = 65536;
  std::string dir = "/tmp";
  int64_t repeats = 2;
};

int RunIngest(const IngestArgs& args) {
  const std::string payload = Payload(args.payload_bytes, 1);
  std::printf(
      "| sync | writers | raw puts/s | raw MB/s | dots groups/s | dots MB/s | dots/raw |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (SyncMode sync : {SyncMode::kAlways, SyncMode::kGroup}) {
    for (int w : args.writers) {
      std::fprintf(stderr, "ingest: sync=%s writers=%d ...\n",
                   std::string(SyncModeName(sync)).c_str(), w);
      // Alternating repeats, best of each: a shared machine's noise hits both sides alike.
      absl::StatusOr<double> raw = 1e300, dots = 1e300;
      for (int64_t r = 0; r < args.repeats && raw.ok() && dots.ok(); ++r) {
        absl::StatusOr<std::string> raw_dir = MakeTempDir(args.dir);
        absl::StatusOr<std::string> dots_dir = MakeTempDir(args.dir);
        if (!raw_dir.ok()) return Fail("ingest", raw_dir.status());
        if (!dots_dir.ok()) return Fail("ingest", dots_dir.status());
        absl::StatusOr<double> raw_once = RawPuts(*raw_dir, sync, w, args.groups, payload);
        absl::StatusOr<double> dots_once = DotsReports(*dots_dir, sync, w, args.groups, payload);
        std::filesystem::remove_all(*raw_dir);
        std::filesystem::remove_all(*dots_dir);
        raw = raw_once.ok() ? std::min(*raw, *raw_once) : raw_once;
        dots = dots_once.ok() ? std::min(*dots, *dots_once) : dots_once;
      }
      if (!raw.ok()) return Fail("ingest", raw.status());
      if (!dots.ok()) return Fail("ingest", dots.status());
      const double mb =
          static_cast<double>(args.groups) * static_cast<double>(args.payload_bytes) / 1e6;
      std::printf("| %s | %d | %.0f | %.1f | %.0f | %.1f | %.2f |\n",
                  std::string(SyncModeName(sync)).c_str(), w, args.groups / *raw, mb / *raw,
                  args.groups / *dots, mb / *dots, *raw / *dots);
      std::fflush(stdout);
    }
  }
  return 0;
}

struct RestartArgs {
  int64_t questions = 1000000;
  int64_t dim = 1536;
  int64_t replay_groups = 512;
  int64_t payload_bytes = 262144;
  std::string dir = "/tmp";
};

int RunRestart(const RestartArgs& args) {
  absl::StatusOr<std::string> dir = MakeTempDir(args.dir);
  if (!dir.ok()) return Fail("restart", dir.status());
  RunConfig config;
  config.batch_size = args.replay_groups;
  config.reference_size = std::min<int64_t>(args.replay_groups / 2, 256);
  config.lease_timeout_seconds = 3600;
  config.replay.capacity_groups = args.replay_groups;
  config.replay.capacity_bytes = (args.replay_groups + 1) * (args.payload_bytes + (64 << 10));
  {
    absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(*dir, SyncMode::kGroup);
    if (!store.ok()) return Fail("restart", store.status());
    Run::Options options;
    options.store = store->get();
    options.background_planning = false;
    absl::StatusOr<std::unique_ptr<Run>> run = Run::Create("big", config, options);
    if (!run.ok()) return Fail("restart", run.status());
    const absl::Time start = absl::Now();
    constexpr int64_t kChunk = 50000;
    Rng rng(3);
    for (int64_t first = 0; first < args.questions; first += kChunk) {
      const int64_t m = std::min(kChunk, args.questions - first);
      std::vector<Question> questions;
      FloatMatrix embeddings(m, args.dim);
      for (int64_t i = 0; i < m; ++i) {
        questions.push_back({absl::StrCat("q", first + i), absl::StrCat("question ", first + i),
                             "{}", std::nullopt});
      }
      for (float& v : embeddings.data) v = static_cast<float>(rng.UniformOpen() - 0.5);
      absl::Status s = (*run)->UpsertQuestions(std::move(questions), embeddings).status();
      if (!s.ok()) return Fail("restart", s);
      std::fprintf(stderr, "\rrestart: %lld/%lld questions stored (%.0f s)",
                   static_cast<long long>(first + m), static_cast<long long>(args.questions),
                   absl::ToDoubleSeconds(absl::Now() - start));
    }
    std::fprintf(stderr, "\nrestart: step 0 and its %lld reports of %lld bytes ...\n",
                 static_cast<long long>(args.replay_groups),
                 static_cast<long long>(args.payload_bytes));
    absl::StatusOr<BatchSlice> batch = (*run)->NextBatch(0, 0, 1, 0, kNoDeadline);
    if (!batch.ok()) return Fail("restart", batch.status());
    std::vector<RolloutReport> reports;
    for (const BatchItem& item : batch->items) {
      reports.push_back(
          {item.key, Rewards(config.group_size), 0, Payload(args.payload_bytes, reports.size())});
    }
    absl::StatusOr<ReportResult> reported = (*run)->ReportRollouts(0, std::move(reports));
    if (!reported.ok()) return Fail("restart", reported.status());
    const RunStats stats = (*run)->Stats();
    std::fprintf(stderr, "restart: built in %.0f s: %lld questions, %lld replay groups (%.0f MB)\n",
                 absl::ToDoubleSeconds(absl::Now() - start),
                 static_cast<long long>(stats.pool_size),
                 static_cast<long long>(stats.replay_groups), stats.replay_bytes / 1e6);
  }
  uintmax_t disk = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(*dir)) {
    if (entry.is_regular_file()) disk += entry.file_size();
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(*dir, SyncMode::kGroup);
  if (!store.ok()) return Fail("restart", store.status());
  Run::Options options;
  options.store = store->get();
  options.background_planning = false;
  absl::StatusOr<std::unique_ptr<Run>> run = Run::Open("big", options);
  if (!run.ok()) return Fail("restart", run.status());
  const double open_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::StatusOr<BatchSlice> again = (*run)->NextBatch(0, 0, 1, 0, kNoDeadline);
  if (!again.ok()) return Fail("restart", again.status());
  const double serving_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const RunStats stats = (*run)->Stats();
  std::printf(
      "restart of a run with %lld questions x %lld dims and %lld replay groups "
      "(%.0f MB): state directory %.2f GB\n",
      static_cast<long long>(stats.pool_size), static_cast<long long>(args.dim),
      static_cast<long long>(stats.replay_groups), stats.replay_bytes / 1e6, disk / 1e9);
  std::printf(
      "restart time: %.1f s to reopen, %.1f s until step 0 is served again (target <= 60 s)\n",
      open_seconds, serving_seconds);
  run->reset();
  store->reset();
  std::filesystem::remove_all(*dir);
  return 0;
}

}  // namespace

void AddDurabilityCommands(CLI::App* app, cli::Action* action) {
  auto ingest_args = std::make_shared<IngestArgs>();
  CLI::App* ingest = cli::AddCommand(
      app, "ingest", "durable report ingest next to raw RocksDB puts",
      "Durable report ingest: ReportRollouts (one group per call, informative rewards so every "
      "group also enters the replay store) into a run on a state directory, with --sync always "
      "and group, next to raw RocksDB puts of the same payloads, each fsynced, from the same "
      "number of threads. Every figure comes from this process, in this run.");
  ingest->add_option("--writers", ingest_args->writers, "comma-separated concurrent writer counts")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  ingest
      ->add_option("--groups", ingest_args->groups,
                   "groups (and raw puts) per measurement; the default logs 512 MiB, so it "
                   "includes the run's periodic snapshots")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  ingest->add_option("--payload-bytes", ingest_args->payload_bytes, "payload per group")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  ingest
      ->add_option("--dir", ingest_args->dir,
                   "where the temporary state directories go (same disk as real state)")
      ->capture_default_str();
  ingest
      ->add_option("--repeats", ingest_args->repeats,
                   "alternating repetitions of each measurement; the best of each counts")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cli::RunsWhenSelected(ingest, action, [ingest_args] { return RunIngest(*ingest_args); });

  auto restart_args = std::make_shared<RestartArgs>();
  CLI::App* restart = cli::AddCommand(
      app, "restart", "time to reopen a large durable run",
      "Builds a durable run (default estimator, identity adapter) of --questions x --dim "
      "embeddings whose replay store holds --replay-groups groups of --payload-bytes, closes it, "
      "and times reopening it: state directory, pool, snapshot, events and the estimator "
      "(embedding matrix and cached projections), until the run serves again.");
  restart->add_option("--questions", restart_args->questions, "pool size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  restart->add_option("--dim", restart_args->dim, "embedding dimension")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  restart
      ->add_option("--replay-groups", restart_args->replay_groups,
                   "replay groups (= the batch of the one reported step)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  restart->add_option("--payload-bytes", restart_args->payload_bytes, "payload per replay group")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  restart->add_option("--dir", restart_args->dir, "where the temporary state directory goes")
      ->capture_default_str();
  cli::RunsWhenSelected(restart, action, [restart_args] { return RunRestart(*restart_args); });
}

}  // namespace dots::bench
