// dots-bench soak: a long training load against a real dots-server process,
// checking that it stays healthy: zero errors, resident memory flat after
// warm-up, latency not drifting.
#include "bench/soak/soak.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cpp/client.h"

namespace dots::bench {
namespace {

// Resident set size of `pid` in bytes, 0 if unreadable.
int64_t RssBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) return std::atoll(line.c_str() + 6) * 1024;
  }
  return 0;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

struct Sample {
  double at_seconds;  // since the start
  double latency_ms;  // one NextBatch + ReportRollouts step of one client
};

struct SoakArgs {
  std::string server_bin;
  int64_t clients = 64;
  double seconds = 120;
  int64_t payload_bytes = 16384;
  std::string dir = "/tmp";
};

int RunSoak(const SoakArgs &args) {
  auto fail = [](const std::string &why) {
    std::fprintf(stderr, "dots-bench soak: %s\n", why.c_str());
    return 1;
  };
  std::string state = (std::filesystem::path(args.dir) / "dots-soak-XXXXXX").string();
  if (mkdtemp(state.data()) == nullptr) return fail("cannot create a state directory");

  // The server, as a child process.
  int out[2];
  if (pipe(out) != 0) return fail("pipe");
  const std::string &binary = args.server_bin;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    const std::string state_flag = "--state_dir=" + state;
    execl(binary.c_str(), binary.c_str(), "--listen=127.0.0.1:0",
          "--metrics_listen=", state_flag.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  close(out[1]);
  FILE *server_out = fdopen(out[0], "r");
  char line[256] = {0};
  std::string address;
  const std::string prefix = "dots-server listening on ";
  if (fgets(line, sizeof(line), server_out) != nullptr && absl::StartsWith(line, prefix)) {
    address = std::string(line).substr(prefix.size());
    address.erase(address.find_last_not_of("\r\n") + 1);
  }
  auto stop_server = [&] {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    fclose(server_out);
    std::filesystem::remove_all(state);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  };
  if (address.empty()) {
    stop_server();
    return fail("dots-server did not start");
  }

  Client::Options options;
  options.target = address;
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
  std::mutex mu;
  std::vector<Sample> samples;
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
          for (const BatchItem &item : batch->items) {
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
        std::lock_guard<std::mutex> lock(mu);
        if (!status.ok()) {
          if (errors.fetch_add(1) == 0) first_error = status.ToString();
          stop.store(true);
          return;
        }
        samples.push_back({absl::ToDoubleSeconds(t0 - start), ms});
      }
    });
  }
  // RSS every second (it swings by a third within seconds as snapshots and
  // memtable flushes come and go, so the medians below need many samples);
  // progress every 5 s.
  std::vector<std::pair<double, int64_t>> rss;
  while (absl::Now() - start < absl::Seconds(args.seconds) && !stop.load()) {
    absl::SleepFor(absl::Seconds(1));
    rss.emplace_back(absl::ToDoubleSeconds(absl::Now() - start), RssBytes(pid));
    if (rss.size() % 5 != 0) continue;
    std::lock_guard<std::mutex> lock(mu);
    std::fprintf(stderr, "soak: %.0f s, %zu steps done, server RSS %.1f MB\n", rss.back().first,
                 samples.size(), static_cast<double>(rss.back().second) / 1e6);
  }
  stop.store(true);
  for (std::thread &t : ranks) t.join();
  const bool drained = stop_server();

  // Growth is a trend, not a spike (a snapshot or a memtable flush briefly
  // holds extra copies): medians, not single samples.
  auto median_between = [&](double from, double to) -> int64_t {
    std::vector<double> v;
    for (const auto &[at, bytes] : rss) {
      if (at >= from && at <= to) v.push_back(static_cast<double>(bytes));
    }
    return static_cast<int64_t>(Percentile(v, 0.5));
  };
  // Warm-up: a quarter of the run, at least a minute (the heap takes about that
  // long to reach its working set). What follows is split in halves: the first
  // half's median against the last's.
  const double warm_up = std::max<double>(args.seconds / 4, std::min<double>(60, args.seconds / 2));
  const double half = (args.seconds - warm_up) / 2;
  const int64_t rss_after_warm_up = median_between(warm_up, warm_up + half);
  const int64_t rss_end = median_between(warm_up + half, args.seconds + 10);
  const double growth = rss_after_warm_up > 0 ? static_cast<double>(rss_end - rss_after_warm_up) /
                                                    static_cast<double>(rss_after_warm_up)
                                              : 1.0;
  const double window = std::min(60.0, args.seconds / 2);
  std::vector<double> first, last;
  for (const Sample &s : samples) {
    if (s.at_seconds < window) first.push_back(s.latency_ms);
    if (s.at_seconds >= args.seconds - window) last.push_back(s.latency_ms);
  }
  const double p99_first = Percentile(first, 0.99), p99_last = Percentile(last, 0.99);
  std::printf(
      "soak: %d clients, %.0f s: %zu steps of one rank, %lld errors%s; "
      "server RSS %.1f MB after "
      "warm-up -> %.1f MB at the end (medians of the two halves after "
      "warm-up: %+.1f %%, limit 5 "
      "%%); "
      "step p99 first %.0f s %.1f ms, "
      "last %.0f s %.1f ms (x%.2f, limit 1.5); SIGTERM drain %s\n",
      world, args.seconds, samples.size(), static_cast<long long>(errors.load()),
      first_error.empty() ? "" : (" (" + first_error + ")").c_str(),
      static_cast<double>(rss_after_warm_up) / 1e6, static_cast<double>(rss_end) / 1e6,
      100 * growth, window, p99_first, window, p99_last, p99_first > 0 ? p99_last / p99_first : 0,
      drained ? "exit 0" : "FAILED");
  const bool ok = errors.load() == 0 && growth < 0.05 && p99_last <= 1.5 * p99_first && drained;
  std::printf("soak: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

void AddSoakCommand(CLI::App *app, cli::Action *action) {
  auto args = std::make_shared<SoakArgs>();
  CLI::App *soak = cli::AddCommand(
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
  cli::RunsWhenSelected(soak, action, [args] { return RunSoak(*args); });
}

}  // namespace dots::bench
