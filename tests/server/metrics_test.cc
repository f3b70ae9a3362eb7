// dots::Metrics through its real HTTP endpoint: every test starts an Exposer on 127.0.0.1:0,
// records through the public API and reads the values back from a plain HTTP scrape.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/util/mutex.h"
#include "dots/v1/dots.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"

namespace dots {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- a minimal scraper and exposition-format parser ----

using testing::HttpGet;  // tests/server/test_server.h

std::string Scrape(const Metrics& metrics) {
  const std::string response = HttpGet(metrics.port());
  const size_t body = response.find("\r\n\r\n");
  EXPECT_THAT(response, HasSubstr("200 OK"));
  return body == std::string::npos ? "" : response.substr(body + 4);
}

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the sample lines of the text format (label values here never contain '"' or ',').
std::vector<Sample> ParseSamples(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t pos = line.find_first_of("{ ");
    s.name = line.substr(0, pos);
    if (line[pos] == '{') {
      const size_t end = line.find('}', pos);
      std::string inside = line.substr(pos + 1, end - pos - 1);
      std::istringstream pairs(inside);
      std::string pair;
      while (std::getline(pairs, pair, ',')) {
        const size_t eq = pair.find('=');
        if (eq == std::string::npos) continue;
        s.labels[pair.substr(0, eq)] = pair.substr(eq + 2, pair.size() - eq - 3);
      }
      pos = end + 1;
    }
    s.value = std::strtod(line.c_str() + pos, nullptr);
    samples.push_back(std::move(s));
  }
  return samples;
}

std::optional<double> Value(const std::vector<Sample>& samples, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

// Names declared by "# TYPE name type" lines, with their type.
std::map<std::string, std::string> TypeLines(const std::string& text) {
  std::map<std::string, std::string> types;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string hash, kind, name, type;
    words >> hash >> kind >> name >> type;
    if (hash == "#" && kind == "TYPE") types[name] = type;
  }
  return types;
}

std::map<std::string, std::string> HelpLines(const std::string& text) {
  std::map<std::string, std::string> help;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) != 0) continue;
    const size_t space = line.find(' ', 7);
    help[line.substr(7, space - 7)] = space == std::string::npos ? "" : line.substr(space + 1);
  }
  return help;
}

std::unique_ptr<Metrics> StartMetrics() {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("127.0.0.1:0");
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  if (!metrics.ok()) return nullptr;
  EXPECT_GT((*metrics)->port(), 0);
  return std::move(*metrics);
}

RunStats SomeStats() {
  RunStats s;
  s.step = 7;
  s.pool_size = 1209;
  s.replay_groups = 40;
  s.replay_bytes = 123456;
  s.leases_outstanding = 17;
  s.leases_expired = 3;
  s.effective_groups = 50;
  s.solve_all_groups = 20;
  s.solve_none_groups = 10;
  s.effective_ratio_last_step = 0.625;
  s.effective_last_step_index = 6;
  s.rounds_planned = 4;
  s.last_planning_seconds = 0.03;
  s.policy_version = 6;
  s.model_version = 3;
  s.model_labels = 900;
  s.model_training_loss = 0.61;
  s.model_training_seconds = 0.25;
  s.model_out_of_sample_pearson = 0.42;
  return s;
}

// ---- tests ----

TEST(MetricsTest, RecordRpcCountsByMethodAndCodeName) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->RecordRpc("NextBatch", 0, 0.02);
  metrics->RecordRpc("NextBatch", 0, 0.2);
  metrics->RecordRpc("NextBatch", "NOT_FOUND", 0.001);
  metrics->RecordRpc("GetRun", 5, 0.003);
  metrics->RecordRpc("GetRun", 99, 0.003);            // outside gRPC's range
  metrics->RecordRpc("GetRun", "NO_SUCH_CODE", 0.1);  // unknown name
  const auto samples = ParseSamples(Scrape(*metrics));

  EXPECT_EQ(Value(samples, "dots_grpc_requests_total", {{"method", "NextBatch"}, {"code", "OK"}}),
            2);
  EXPECT_EQ(
      Value(samples, "dots_grpc_requests_total", {{"method", "NextBatch"}, {"code", "NOT_FOUND"}}),
      1);
  EXPECT_EQ(
      Value(samples, "dots_grpc_requests_total", {{"method", "GetRun"}, {"code", "NOT_FOUND"}}), 1);
  EXPECT_EQ(Value(samples, "dots_grpc_requests_total", {{"method", "GetRun"}, {"code", "UNKNOWN"}}),
            2);
  EXPECT_EQ(Value(samples, "dots_grpc_request_duration_seconds_count", {{"method", "NextBatch"}}),
            3);
  EXPECT_NEAR(*Value(samples, "dots_grpc_request_duration_seconds_sum", {{"method", "NextBatch"}}),
              0.221, 1e-9);
  // 0.001 and 0.02 are <= 0.025; 0.2 is not, but is <= 0.25.
  EXPECT_EQ(Value(samples, "dots_grpc_request_duration_seconds_bucket",
                  {{"method", "NextBatch"}, {"le", "0.025"}}),
            2);
  EXPECT_EQ(Value(samples, "dots_grpc_request_duration_seconds_bucket",
                  {{"method", "NextBatch"}, {"le", "0.25"}}),
            3);
}

TEST(MetricsTest, UpdateRunSetsGaugesAndAdvancesCountersByTheIncrease) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  RunStats s = SomeStats();
  metrics->UpdateRun("r1", s);
  auto samples = ParseSamples(Scrape(*metrics));
  const std::map<std::string, std::string> run{{"run", "r1"}};
  EXPECT_EQ(Value(samples, "dots_effective_question_ratio", run), 0.625);
  EXPECT_EQ(Value(samples, "dots_pool_questions", run), 1209);
  EXPECT_EQ(Value(samples, "dots_replay_groups", run), 40);
  EXPECT_EQ(Value(samples, "dots_replay_bytes", run), 123456);
  EXPECT_EQ(Value(samples, "dots_leases_outstanding", run), 17);
  EXPECT_EQ(Value(samples, "dots_run_step", run), 7);
  EXPECT_EQ(Value(samples, "dots_policy_version", run), 6);
  EXPECT_EQ(Value(samples, "dots_model_version", run), 3);
  EXPECT_DOUBLE_EQ(Value(samples, "dots_model_training_loss", run).value_or(-1), 0.61);
  EXPECT_DOUBLE_EQ(Value(samples, "dots_model_training_seconds", run).value_or(-1), 0.25);
  EXPECT_DOUBLE_EQ(Value(samples, "dots_model_out_of_sample_pearson", run).value_or(-1), 0.42);
  EXPECT_EQ(Value(samples, "dots_leases_expired_total", run), 3);
  EXPECT_EQ(Value(samples, "dots_rounds_planned_total", run), 4);
  EXPECT_EQ(Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "effective"}}),
            50);
  EXPECT_EQ(Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "solve_all"}}),
            20);
  EXPECT_EQ(
      Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "solve_none"}}), 10);
  EXPECT_EQ(Value(samples, "dots_round_planning_seconds_count", run), 1);

  // The same snapshot again: nothing moves, planning is not observed twice.
  metrics->UpdateRun("r1", s);
  // Then progress: counters move by the increase; a count that went down only rebases.
  s.effective_groups = 58;
  s.solve_none_groups = 9;  // lower than before
  s.leases_expired = 5;
  s.rounds_planned = 6;
  s.last_planning_seconds = 2.0;
  s.leases_outstanding = 2;
  metrics->UpdateRun("r1", s);
  samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "effective"}}),
            58);
  EXPECT_EQ(
      Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "solve_none"}}), 10);
  EXPECT_EQ(Value(samples, "dots_leases_expired_total", run), 5);
  EXPECT_EQ(Value(samples, "dots_rounds_planned_total", run), 6);
  EXPECT_EQ(Value(samples, "dots_leases_outstanding", run), 2);
  EXPECT_EQ(Value(samples, "dots_round_planning_seconds_count", run), 2);
  EXPECT_NEAR(*Value(samples, "dots_round_planning_seconds_sum", run), 2.03, 1e-9);
  // After the rebase, growth counts from the lower value.
  s.solve_none_groups = 12;
  metrics->UpdateRun("r1", s);
  samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(
      Value(samples, "dots_reported_groups_total", {{"run", "r1"}, {"outcome", "solve_none"}}), 13);
}

TEST(MetricsTest, EffectiveRatioAppearsOnlyOnceAStepIsFullyReported) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  RunStats s;  // a fresh run: no step fully reported
  s.pool_size = 10;
  metrics->UpdateRun("fresh", s);
  std::string text = Scrape(*metrics);
  EXPECT_THAT(text, HasSubstr("dots_pool_questions{run=\"fresh\"} 10"));
  EXPECT_THAT(text, Not(HasSubstr("dots_effective_question_ratio{")));
  s.effective_last_step_index = 0;
  s.effective_ratio_last_step = 0;
  metrics->UpdateRun("fresh", s);
  EXPECT_EQ(
      Value(ParseSamples(Scrape(*metrics)), "dots_effective_question_ratio", {{"run", "fresh"}}),
      0);
}

TEST(MetricsTest, HistogramsUseTheirDocumentedBuckets) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  for (double e : {0.02, 0.12, 0.12, 0.55, 1.0}) metrics->ObservePredictionError("r", e);
  for (int64_t age : {0, 1, 5, 5, 40, 100}) metrics->ObserveReplayAge("r", age);
  metrics->ObservePlanning("r", 0.004);
  const auto samples = ParseSamples(Scrape(*metrics));
  auto bucket = [&](const char* name, const char* le) {
    return Value(samples, name, {{"run", "r"}, {"le", le}});
  };
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "0.05"), 1);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "0.1"), 1);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "0.15"), 3);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "0.5"), 3);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "0.6"), 4);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "1"), 5);
  EXPECT_EQ(bucket("dots_prediction_abs_error_bucket", "+Inf"), 5);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "0"), 1);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "1"), 2);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "4"), 2);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "6"), 4);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "32"), 4);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "64"), 5);
  EXPECT_EQ(bucket("dots_replay_age_steps_bucket", "+Inf"), 6);
  EXPECT_EQ(Value(samples, "dots_replay_age_steps_sum", {{"run", "r"}}), 151);
  EXPECT_EQ(bucket("dots_round_planning_seconds_bucket", "0.0025"), 0);
  EXPECT_EQ(bucket("dots_round_planning_seconds_bucket", "0.005"), 1);
}

TEST(MetricsTest, RemoveRunRemovesEverySeriesOfThatRunOnly) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  for (const char* run : {"keep", "drop"}) {
    metrics->UpdateRun(run, SomeStats());
    metrics->SetUniformExpectedRatio(run, 0.5);
    metrics->ObservePredictionError(run, 0.1);
    metrics->ObserveReplayAge(run, 2);
  }
  metrics->RecordRpc("DeleteRun", 0, 0.001);
  std::string before = Scrape(*metrics);
  EXPECT_THAT(before, HasSubstr("run=\"drop\""));

  metrics->RemoveRun("drop");
  metrics->RemoveRun("never-existed");  // no-op
  const std::string after = Scrape(*metrics);
  EXPECT_THAT(after, Not(HasSubstr("run=\"drop\"")));
  // Exactly the "drop" lines disappeared: "keep" and the RPC series are untouched.
  auto lines_with = [](const std::string& text, const std::string& needle) {
    std::istringstream in(text);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
    return n;
  };
  const int keep_lines = lines_with(before, "run=\"keep\"");
  EXPECT_GT(keep_lines, 40);  // 12 gauges + 5 counters + 3 histograms with their buckets
  EXPECT_EQ(lines_with(after, "run=\"keep\""), keep_lines);
  EXPECT_EQ(lines_with(before, "run=\"drop\""), keep_lines);
  EXPECT_THAT(after, HasSubstr("dots_grpc_requests_total{code=\"OK\",method=\"DeleteRun\"} 1"));

  // A run recreated under the same id starts from zero.
  metrics->ObserveReplayAge("drop", 3);
  const auto samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(Value(samples, "dots_replay_age_steps_count", {{"run", "drop"}}), 1);
  EXPECT_EQ(
      Value(samples, "dots_reported_groups_total", {{"run", "drop"}, {"outcome", "effective"}}), 0);
}

// deploy/metrics.txt is the single list of exported names that the dashboards, the alert rules
// and the deploy tests are checked against: a scrape must name exactly those metrics, each with
// its declared type and a HELP text.
TEST(MetricsTest, ScrapeNamesExactlyTheMetricsOfDeployMetricsTxt) {
  const char* source_dir = std::getenv("DOTS_SOURCE_DIR");
  ASSERT_NE(source_dir, nullptr) << "DOTS_SOURCE_DIR is set by ctest";
  const std::string path = std::string(source_dir) + "/deploy/metrics.txt";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::map<std::string, std::string> declared;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string name, type;
    words >> name >> type;
    ASSERT_FALSE(type.empty()) << path << ":" << line_number << ": missing type";
    if (type == "synthetic") continue;  // made by Prometheus itself (up)
    declared[name] = type;
  }

  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  metrics->RecordRpc("GetRun", 0, 0.01);
  metrics->UpdateRun("r", SomeStats());
  metrics->SetUniformExpectedRatio("r", 0.5);
  metrics->ObservePredictionError("r", 0.1);
  metrics->ObserveReplayAge("r", 1);
  Scrape(*metrics);  // the Exposer's own counters appear after its first scrape
  const std::string text = Scrape(*metrics);
  const std::map<std::string, std::string> exported = TypeLines(text);
  EXPECT_EQ(exported, declared) << "update deploy/metrics.txt together with server/metrics.cc";
  const std::map<std::string, std::string> help = HelpLines(text);
  for (const auto& [name, type] : exported) {
    ASSERT_TRUE(help.count(name)) << name << " has no HELP line";
    EXPECT_GE(help.at(name).size(), 10u) << name << " has a HELP line without text";
  }
}

TEST(MetricsTest, ProcessMetricsAreSane) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  // Burn a little CPU so the counter is visibly positive.
  volatile double x = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
  while (std::chrono::steady_clock::now() < until) x = x + std::sqrt(x + 1.0);
  const auto samples = ParseSamples(Scrape(*metrics));
  const double now = static_cast<double>(std::time(nullptr));
  const std::optional<double> rss = Value(samples, "process_resident_memory_bytes");
  const std::optional<double> fds = Value(samples, "process_open_fds");
  const std::optional<double> cpu = Value(samples, "process_cpu_seconds_total");
  const std::optional<double> start = Value(samples, "process_start_time_seconds");
  ASSERT_TRUE(rss && fds && cpu && start);
  EXPECT_GT(*rss, 1 << 20);  // a gtest binary with gRPC linked is well over 1 MiB
  EXPECT_LT(*rss, 64.0 * (1 << 30));
  EXPECT_GE(*fds, 3);  // stdin/out/err plus the Exposer's listening socket
  EXPECT_LT(*fds, 10000);
  EXPECT_GT(*cpu, 0.01);
  EXPECT_LE(*start, now + 1);
  EXPECT_GT(*start, now - 86400);
  EXPECT_EQ(Value(samples, "dots_build_info", {{"version", "0.1.0"}}), 1);
}

// The heap gauge follows what is allocated, not what is resident: 64 MiB held shows, and is gone
// once freed (glibc returns such a block at once: it is mmap'd).
TEST(MetricsTest, HeapInUseFollowsAllocations) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  const std::optional<double> before =
      Value(ParseSamples(Scrape(*metrics)), "dots_heap_in_use_bytes");
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(*before, 0);
  constexpr size_t kBlock = size_t{64} << 20;
  auto block = std::make_unique<char[]>(kBlock);
  std::memset(block.get(), 1, kBlock);
  const std::optional<double> held =
      Value(ParseSamples(Scrape(*metrics)), "dots_heap_in_use_bytes");
  ASSERT_TRUE(held.has_value());
  EXPECT_GE(*held - *before, 0.9 * kBlock);
  block.reset();
  const std::optional<double> after =
      Value(ParseSamples(Scrape(*metrics)), "dots_heap_in_use_bytes");
  ASSERT_TRUE(after.has_value());
  EXPECT_LE(*after, *held - 0.9 * kBlock);
}

TEST(MetricsTest, OpenFdsFollowsTheProcess) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  const double before = *Value(ParseSamples(Scrape(*metrics)), "process_open_fds");
  std::vector<int> fds;
  for (int i = 0; i < 50; ++i) fds.push_back(dup(0));
  const double during = *Value(ParseSamples(Scrape(*metrics)), "process_open_fds");
  for (int fd : fds) close(fd);
  const double after = *Value(ParseSamples(Scrape(*metrics)), "process_open_fds");
  // The HTTP server may hold a connection socket or two of its own while a scrape is served
  // (the previous scrape's connection can still be closing), so allow a small slack.
  EXPECT_GE(during - before, 50 - 2);
  EXPECT_LE(during - before, 50 + 2);
  EXPECT_GE(during - after, 50 - 2);
  EXPECT_LE(during - after, 50 + 2);
}

TEST(MetricsTest, RunSourceRefreshesEveryScrapeAndDropsVanishedRuns) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  Mutex mu;
  std::vector<std::string> runs = {"a", "b"};
  int64_t pool_size = 100;
  int64_t rounds = 1;
  int estimate_calls = 0;
  metrics->SetRunSource([&] {
    MutexLock lock(&mu);
    std::vector<Metrics::RunSnapshot> out;
    for (const std::string& id : runs) {
      Metrics::RunSnapshot snap;
      snap.run_id = id;
      snap.stats.pool_size = pool_size;
      snap.stats.rounds_planned = rounds;
      snap.group_size = 2;
      snap.pool_estimates = [&]() -> absl::StatusOr<std::vector<double>> {
        ++estimate_calls;
        return std::vector<double>{0.5, 0.0};  // effective with prob. 0.5 and 0
      };
      out.push_back(std::move(snap));
    }
    return out;
  });
  auto samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "a"}}), 100);
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "b"}}), 100);
  EXPECT_EQ(Value(samples, "dots_uniform_expected_effective_ratio", {{"run", "a"}}), 0.25);
  EXPECT_EQ(estimate_calls, 2);
  {
    MutexLock lock(&mu);
    pool_size = 150;
    runs = {"a"};
  }
  metrics->ObserveReplayAge("b", 1);  // an in-flight call on a run that is being deleted
  samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "a"}}), 150);
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "b"}}), std::nullopt);
  EXPECT_EQ(Value(samples, "dots_replay_age_steps_count", {{"run", "b"}}), std::nullopt);
  EXPECT_EQ(estimate_calls, 2);  // same round: the expectation is not recomputed
  {
    MutexLock lock(&mu);
    rounds = 2;
  }
  Scrape(*metrics);
  EXPECT_EQ(estimate_calls, 3);

  metrics->SetRunSource(nullptr);
  metrics->UpdateRun("c", RunStats());
  samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "a"}}), 150);  // frozen, not removed
  EXPECT_EQ(Value(samples, "dots_pool_questions", {{"run", "c"}}), 0);
}

TEST(MetricsTest, RenderMatchesTheScrapeWithoutAnHttpServer) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), 0);
  (*metrics)->ObserveReplayAge("r", 3);
  EXPECT_THAT((*metrics)->Render(), HasSubstr("dots_replay_age_steps_count{run=\"r\"} 1"));
}

TEST(MetricsTest, CreateOnABusyPortIsUnavailable) {
  auto first = StartMetrics();
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<Metrics>> second =
      Metrics::Create("127.0.0.1:" + std::to_string(first->port()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("metrics_listen"));
}

TEST(MetricsTest, StaticHelpers) {
  EXPECT_EQ(Metrics::StatusCodeName(0), "OK");
  EXPECT_EQ(Metrics::StatusCodeName(5), "NOT_FOUND");
  EXPECT_EQ(Metrics::StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(Metrics::StatusCodeName(17), "UNKNOWN");
  EXPECT_EQ(Metrics::StatusCodeName(-1), "UNKNOWN");
  EXPECT_EQ(Metrics::MethodLabel("/dots.v1.Dots/NextBatch"), "NextBatch");
  EXPECT_EQ(Metrics::MethodLabel("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
  EXPECT_EQ(Metrics::MethodLabel("/dots.v1.Dots/"), "other");
  EXPECT_EQ(Metrics::MethodLabel("/dots.v1.Dots/a\"b"), "other");
  EXPECT_EQ(Metrics::MethodLabel("/evil.Service/" + std::string(500, 'x')), "other");
  EXPECT_EQ(Metrics::MethodLabel(""), "other");
  // G = 8, p = 0.5: 1 - 2 / 256. p = 0 and p = 1 are never effective.
  const std::vector<double> p = {0.5, 0.0, 1.0};
  EXPECT_NEAR(Metrics::UniformEffectiveRatio(p, 8), (1 - 2.0 / 256) / 3, 1e-12);
  EXPECT_EQ(Metrics::UniformEffectiveRatio({}, 8), 0);
}

TEST(MetricsTest, ConcurrentUpdatesAndScrapesLoseNothing) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      const std::string run = "run" + std::to_string(t % 2);
      for (int i = 0; i < kPerThread; ++i) {
        metrics->RecordRpc("ReportRollouts", i % 3 == 0 ? 14 : 0, 0.001);
        metrics->ObservePredictionError(run, 0.2);
        if (i % 50 == 0) metrics->RemoveRun("scratch" + std::to_string(t));
        metrics->ObserveReplayAge("scratch" + std::to_string(t), i);
      }
    });
  }
  threads.emplace_back([&metrics] {
    for (int i = 0; i < 20; ++i) EXPECT_FALSE(Scrape(*metrics).empty());
  });
  for (std::thread& t : threads) t.join();
  const auto samples = ParseSamples(Scrape(*metrics));
  const double unavailable = *Value(samples, "dots_grpc_requests_total",
                                    {{"method", "ReportRollouts"}, {"code", "UNAVAILABLE"}});
  const double ok =
      *Value(samples, "dots_grpc_requests_total", {{"method", "ReportRollouts"}, {"code", "OK"}});
  EXPECT_EQ(unavailable, kThreads * 167);  // i % 3 == 0 for 167 of 0..499
  EXPECT_EQ(ok + unavailable, kThreads * kPerThread);
  EXPECT_EQ(Value(samples, "dots_prediction_abs_error_count", {{"run", "run0"}}), 2 * kPerThread);
  // Each scratch run was last removed at i = 450, then observed 50 times.
  EXPECT_EQ(Value(samples, "dots_replay_age_steps_count", {{"run", "scratch0"}}), 50);
}

// ---- the interceptor, on a real gRPC server ----

// Implements GetRun only (NOT_FOUND); every other Dots method is UNIMPLEMENTED by the base.
class FakeDots final : public v1::Dots::CallbackService {
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context,
                                   const v1::GetRunRequest* request,
                                   v1::RunInfo* /*response*/) override {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "run " + request->run_id()));
    return reactor;
  }
};

grpc::Status GenericUnary(grpc::GenericStub& stub, const std::string& method) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty("");  // a zero-length message: the default request
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  return done.get_future().get();
}

TEST(MetricsTest, InterceptorRecordsEveryCallWithItsMethodAndCode) {
  auto metrics = StartMetrics();
  ASSERT_NE(metrics, nullptr);
  grpc::EnableDefaultHealthCheckService(true);
  FakeDots service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(metrics->NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = v1::Dots::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    v1::GetRunRequest request;
    request.set_run_id("missing");
    v1::RunInfo info;
    EXPECT_EQ(stub->GetRun(&context, request, &info).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    v1::ListRunsResponse response;
    EXPECT_EQ(stub->ListRuns(&context, v1::ListRunsRequest(), &response).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  grpc::GenericStub generic(channel);
  EXPECT_TRUE(GenericUnary(generic, "/grpc.health.v1.Health/Check").ok());
  const grpc::Status unknown = GenericUnary(generic, "/evil.Service/Method123");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNIMPLEMENTED);

  server->Shutdown();
  server->Wait();
  const auto samples = ParseSamples(Scrape(*metrics));
  EXPECT_EQ(
      Value(samples, "dots_grpc_requests_total", {{"method", "GetRun"}, {"code", "NOT_FOUND"}}), 3);
  EXPECT_EQ(Value(samples, "dots_grpc_request_duration_seconds_count", {{"method", "GetRun"}}), 3);
  EXPECT_EQ(Value(samples, "dots_grpc_requests_total",
                  {{"method", "ListRuns"}, {"code", "UNIMPLEMENTED"}}),
            1);
  EXPECT_EQ(Value(samples, "dots_grpc_requests_total",
                  {{"method", "grpc.health.v1.Health/Check"}, {"code", "OK"}}),
            1);
  EXPECT_EQ(
      Value(samples, "dots_grpc_requests_total", {{"method", "other"}, {"code", "UNIMPLEMENTED"}}),
      1);
  // An unknown method never becomes a label value of its own.
  for (const Sample& s : samples) {
    if (s.name.rfind("dots_grpc_", 0) != 0) continue;
    EXPECT_EQ(s.labels.at("method").find("evil"), std::string::npos) << s.labels.at("method");
  }
}

}  // namespace
}  // namespace dots
