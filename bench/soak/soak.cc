// dots-bench soak: a long training load against a real dots-server process, checking that it
// stays healthy: zero errors, no leak, latency not drifting.
//
// How a leak is judged. The server's resident size is no leak signal: under this load it swings
// between ~220 and ~690 MB within seconds (periodic run snapshots of ~100 MB serialized and
// copied into a RocksDB memtable, 64 MB memtables filling and flushing, batches in flight) and
// glibc keeps freed memory resident, so its trend says more about the allocator and the phase of
// those cycles than about the server. The soak reads instead the heap in use (the server's
// dots_heap_in_use_bytes: glibc mallinfo2, allocated and not freed) every second and judges its
// floor: the smallest value in each half of the run after a 30 s warm-up. The floor is reached
// in the troughs of those cycles (memtable just flushed, no snapshot being written), so it is
// what the server retains; a leak raises it by the bytes leaked per step times the steps.
//
// Measured with the 2-minute soak (64 ranks, 16 KiB payloads) on a shared 2-core machine at
// load average 8 to 13, five runs: heap-floor growth from the first half to the second -5.3,
// +2.2, +11.4, +3.5, -2.4 % (floors 100 to 112 MB), while the resident size's floor over the
// same halves moved +20.7, +17.7, +1.5, +16.4, +6.9 % and its medians and peaks far more. The
// limit, 20 %, is about three standard deviations of that difference. With a leak of 4 KiB per
// ReportRollouts call (one per rank-step) injected into the server, one run measured +27.1 %
// (FAIL) while the resident floor moved +0.1 %. So the 2-minute soak catches leaks of a few KiB
// per step; `make soak` (30 minutes, ~15x the steps) catches ones of a few hundred bytes.
#include "bench/soak/soak.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cpp/client.h"
#include "core/util/mutex.h"
#include "tests/server/observe.h"
#include "tests/server/server_process.h"

namespace dots::bench {
namespace {

// The heap floor settles within ~10 s (the replay store and the retained rounds fill in a few
// rounds); the rest of the run is judged, in two halves.
constexpr double kWarmUpSeconds = 30;
// Largest growth of the heap floor from the first half to the second that still passes.
constexpr double kMaxHeapFloorGrowth = 0.20;

// Resident set size of `pid` in bytes, 0 if unreadable.
double RssBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) return std::atof(line.c_str() + 6) * 1024;
  }
  return 0;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

struct StepSample {
  double at_seconds;  // since the start
  double latency_ms;  // one NextBatch + ReportRollouts step of one client
};

// The server's memory, once a second.
struct MemorySample {
  double at_seconds;
  int64_t steps;  // rank-steps done so far
  double rss_bytes;
  double heap_bytes;
};

struct SoakArgs {
  std::string server_bin;
  int64_t clients = 64;
  double seconds = 120;
  int64_t payload_bytes = 16384;
  std::string dir = "/tmp";
  std::string samples_csv;  // --samples: the memory samples, for a look at the signal
};

int RunSoak(const SoakArgs& args) {
  auto fail = [](const std::string& why) {
    std::fprintf(stderr, "dots-bench soak: %s\n", why.c_str());
    return 1;
  };
  std::string state = (std::filesystem::path(args.dir) / "dots-soak-XXXXXX").string();
  if (mkdtemp(state.data()) == nullptr) return fail("cannot create a state directory");
  testing::ServerProcess server({"--state_dir=" + state, "--metrics_listen=127.0.0.1:0"},
                                args.server_bin);
  auto stop_server = [&] {
    server.Signal(SIGTERM);
    const int status = server.Wait();
    std::filesystem::remove_all(state);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  };
  if (server.address().empty() || server.metrics_port() == 0) {
    stop_server();
    return fail("dots-server did not start (or did not report its metrics port)");
  }

  Client::Options options;
  options.target = server.address();
  options.default_deadline = absl::Seconds(60);
  std::unique_ptr<Client> client = *Client::Create(options);
  const int world = static_cast<int>(args.clients);
  const std::string config = absl::StrCat(
      R"({"batch_size": )", 8 * world, R"(, "group_size": 8, "reference_size": )", 2 * world,
      R"(, "lease_timeout_seconds": 60, "estimator": {"mode": "default"}})");
  if (absl::Status s = client->CreateRun("soak", config).status(); !s.ok()) {
    stop_server();
    return fail(s.ToString());
  }
  std::vector<Question> questions;
  FloatMatrix embeddings(20000, 32);
  for (int64_t i = 0; i < 20000; ++i) {
    questions.push_back({absl::StrCat("q", i), absl::StrCat("question ", i), "{}", std::nullopt});
    for (int d = 0; d < 32; ++d) embeddings.row(i)[d] = static_cast<float>((i * 7 + d) % 13);
  }
  if (absl::Status s = client->UpsertQuestions("soak", questions, embeddings).status(); !s.ok()) {
    stop_server();
    return fail(s.ToString());
  }

  std::atomic<int64_t> errors{0};
  std::atomic<bool> stop{false};
  Mutex mu;
  std::vector<StepSample> steps;
  std::string first_error;
  const absl::Time start = absl::Now();
  const std::string payload(static_cast<size_t>(args.payload_bytes), 'p');
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world; ++rank) {
    ranks.emplace_back([&, rank] {
      for (int64_t step = 0; !stop.load(); ++step) {
        const absl::Time t0 = absl::Now();
        absl::StatusOr<BatchSlice> batch = client->NextBatch("soak", step, rank, world, step / 4);
        absl::Status status = batch.status();
        if (status.ok()) {
          std::vector<RolloutReport> groups;
          for (const BatchItem& item : batch->items) {
            const int hits = static_cast<int>((item.key.size() + step) % 9);
            std::vector<float> rewards(8, 0.0f);
            for (int i = 0; i < hits && i < 8; ++i) rewards[i] = 1.0f;
            groups.push_back({item.key, rewards, step / 4, payload});
          }
          absl::StatusOr<ReportResult> reported = client->ReportRollouts("soak", step, groups);
          status = reported.status();
          if (status.ok() && !reported->rejected.empty()) {
            status = absl::InternalError(reported->rejected[0].second);
          }
        }
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
        MutexLock lock(&mu);
        if (!status.ok()) {
          if (errors.fetch_add(1) == 0) first_error = status.ToString();
          stop.store(true);
          break;
        }
        steps.push_back({absl::ToDoubleSeconds(t0 - start), ms});
      }
    });
  }
  // Memory every second; progress every 5 s.
  std::vector<MemorySample> memory;
  bool heap_readable = true;
  while (absl::Now() - start < absl::Seconds(args.seconds) && !stop.load()) {
    absl::SleepFor(absl::Seconds(1));
    const std::optional<double> heap =
        testing::ScrapeValue(server.metrics_port(), "dots_heap_in_use_bytes");
    heap_readable &= heap.has_value();
    MemorySample m{absl::ToDoubleSeconds(absl::Now() - start), 0, RssBytes(server.pid()),
                   heap.value_or(0)};
    {
      MutexLock lock(&mu);
      m.steps = static_cast<int64_t>(steps.size());
    }
    memory.push_back(m);
    if (memory.size() % 5 == 0) {
      std::fprintf(stderr, "soak: %.0f s, %lld steps done, server RSS %.1f MB, heap %.1f MB\n",
                   m.at_seconds, static_cast<long long>(m.steps), m.rss_bytes / 1e6,
                   m.heap_bytes / 1e6);
    }
  }
  stop.store(true);
  for (std::thread& t : ranks) t.join();
  const bool drained = stop_server();
  if (!args.samples_csv.empty()) {
    std::ofstream csv(args.samples_csv);
    csv << "seconds,steps,rss_bytes,heap_bytes\n";
    for (const MemorySample& m : memory) {
      csv << m.at_seconds << "," << m.steps << "," << m.rss_bytes << "," << m.heap_bytes << "\n";
    }
  }

  // The leak statistic (see the file comment): the heap floor, i.e. the smallest heap in use in
  // each half of the run after warm-up.
  const double warm_up = std::max(kWarmUpSeconds, args.seconds / 4);
  const double half = (args.seconds - warm_up) / 2;
  auto floor_between = [&](double from, double to, double MemorySample::*field) {
    double low = 0;
    bool any = false;
    for (const MemorySample& m : memory) {
      if (m.at_seconds < from || m.at_seconds >= to) continue;
      low = any ? std::min(low, m.*field) : m.*field;
      any = true;
    }
    return low;
  };
  const double heap_first = floor_between(warm_up, warm_up + half, &MemorySample::heap_bytes);
  const double heap_last = floor_between(warm_up + half, 1e300, &MemorySample::heap_bytes);
  const double heap_growth = heap_first > 0 ? (heap_last - heap_first) / heap_first : 1.0;
  // Rank-steps between the middles of the two halves, to state the growth per step too.
  int64_t steps_at_warm_up = 0, steps_at_end = 0;
  for (const MemorySample& m : memory) {
    if (m.at_seconds < warm_up) steps_at_warm_up = m.steps;
    steps_at_end = m.steps;
  }
  const double steps_between = 0.5 * static_cast<double>(steps_at_end - steps_at_warm_up);
  const double rss_first = floor_between(warm_up, warm_up + half, &MemorySample::rss_bytes);
  const double rss_last = floor_between(warm_up + half, 1e300, &MemorySample::rss_bytes);
  const double window = std::min(60.0, args.seconds / 2);
  std::vector<double> first, last;
  for (const StepSample& s : steps) {
    if (s.at_seconds < window) first.push_back(s.latency_ms);
    if (s.at_seconds >= args.seconds - window) last.push_back(s.latency_ms);
  }
  const double p99_first = Percentile(first, 0.99), p99_last = Percentile(last, 0.99);
  std::printf(
      "soak: %d clients, %.0f s: %zu steps of one rank, %lld errors%s; server heap floor %.1f MB "
      "-> %.1f MB (%+.1f %%, limit %.0f %%; %+.0f bytes per rank-step), resident floor %.1f MB "
      "-> %.1f MB (not judged); step p99 first %.0f s %.1f ms, last %.0f s %.1f ms (x%.2f, "
      "limit 1.5); SIGTERM drain %s\n",
      world, args.seconds, steps.size(), static_cast<long long>(errors.load()),
      first_error.empty() ? "" : (" (" + first_error + ")").c_str(), heap_first / 1e6,
      heap_last / 1e6, 100 * heap_growth, 100 * kMaxHeapFloorGrowth,
      steps_between > 0 ? (heap_last - heap_first) / steps_between : 0.0, rss_first / 1e6,
      rss_last / 1e6, window, p99_first, window, p99_last, p99_first > 0 ? p99_last / p99_first : 0,
      drained ? "exit 0" : "FAILED");
  if (!heap_readable) std::printf("soak: the server's dots_heap_in_use_bytes could not be read\n");
  const bool ok = errors.load() == 0 && heap_readable && heap_growth < kMaxHeapFloorGrowth &&
                  p99_last <= 1.5 * p99_first && drained;
  std::printf("soak: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

void AddSoakCommand(CLI::App* app, cli::Action* action) {
  auto args = std::make_shared<SoakArgs>();
  CLI::App* soak = cli::AddCommand(
      app, "soak", "long training load against dots-server: errors, memory, latency drift",
      kSoakDescription);
  soak->add_option("--server-bin", args->server_bin, "the dots-server binary")->required();
  soak->add_option("--clients", args->clients, "concurrent trainer ranks (the run's world size)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  soak->add_option("--seconds", args->seconds, "duration")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  soak->add_option("--payload-bytes", args->payload_bytes, "payload per reported group")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  soak->add_option("--dir", args->dir, "where the temporary state directory goes")
      ->capture_default_str();
  soak->add_option("--samples", args->samples_csv,
                   "also write the server's memory samples (seconds, steps, RSS, heap) as CSV");
  cli::RunsWhenSelected(soak, action, [args] { return RunSoak(*args); });
}

}  // namespace dots::bench
