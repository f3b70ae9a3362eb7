#include "server/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

#ifndef DOTS_VERSION
#define DOTS_VERSION "unknown"
#endif

namespace dots {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;

constexpr std::array<std::string_view, 17> kStatusCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
constexpr int kUnknownCode = 2;

// Prometheus' default RPC buckets, extended for NextBatch, a long poll that may wait for a round
// plan for minutes (docs/conventions.md §3.1, "long-poll waits").
const Histogram::BucketBoundaries& RpcBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return *buckets;
}
// Planning rescans the pool: milliseconds for thousands of questions, seconds for millions.
const Histogram::BucketBoundaries& PlanningBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *buckets;
}
// |p̂ − observed| lies in [0, 1]; the useful resolution is near 0.
const Histogram::BucketBoundaries& ErrorBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4,
                                                               0.5,  0.6, 0.7,  0.8, 0.9,  1};
  return *buckets;
}
// Replay age in steps; the paper's replay keeps groups for a few rounds.
const Histogram::BucketBoundaries& AgeBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64};
  return *buckets;
}

// ---- process metrics from procfs ----

struct ProcessSample {
  double cpu_seconds = 0;
  double resident_bytes = 0;
  double open_fds = 0;
  double start_time_seconds = 0;
  double heap_in_use_bytes = 0;
};

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Fields of /proc/self/stat after the command name, which is in parentheses and may itself
// contain spaces and parentheses, so the split starts after the last ')'. Field k of proc(5)
// (1-based, k >= 3) is element k - 3.
std::vector<std::string> StatFields() {
  const std::string stat = ReadFile("/proc/self/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return {};
  return absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
}

double BootTimeSeconds() {
  std::istringstream in(ReadFile("/proc/stat"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("btime ")) return std::strtod(line.c_str() + 6, nullptr);
  }
  return 0;
}

double CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  const int own = dirfd(dir);  // listed too, but it is ours, not the server's
  double count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    if (std::atoi(entry->d_name) == own) continue;
    ++count;
  }
  closedir(dir);
  return count;
}

ProcessSample SampleProcess() {
  ProcessSample sample;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const std::vector<std::string> fields = StatFields();
  auto field = [&fields](size_t k) {
    return k - 3 < fields.size() ? std::strtod(fields[k - 3].c_str(), nullptr) : 0.0;
  };
  if (ticks > 0) {
    sample.cpu_seconds = (field(14) + field(15)) / ticks;  // utime + stime
    sample.start_time_seconds = BootTimeSeconds() + field(22) / ticks;
  }
  sample.resident_bytes = field(24) * page;  // rss, in pages
  sample.open_fds = CountOpenFds();
  // glibc's count of what is allocated and not freed: chunks in the arenas plus mmap'd blocks.
  // Unlike the resident size it does not include memory freed but kept by the allocator.
  const struct mallinfo2 heap = mallinfo2();
  sample.heap_in_use_bytes = static_cast<double>(heap.uordblks + heap.hblkhd);
  return sample;
}

prometheus::MetricFamily ProcessFamily(std::string name, std::string help,
                                       prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times one call and records it when its status goes out (or, without a status, at the end).
class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(Metrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}
  ~RpcInterceptor() override {
    if (!recorded_) metrics_->RecordRpc(method_, /*CANCELLED*/ 1, SecondsSince(start_));
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!recorded_ && methods->QueryInterceptionHookPoint(
                          grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      recorded_ = true;
      metrics_->RecordRpc(method_, static_cast<int>(methods->GetSendStatus().error_code()),
                          SecondsSince(start_));
    }
    methods->Proceed();
  }

 private:
  Metrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;  // hook points of one call never run concurrently
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    return new RpcInterceptor(metrics_, Metrics::MethodLabel(method == nullptr ? "" : method));
  }

 private:
  Metrics* const metrics_;
};

}  // namespace

// The cached series of one run. Gauges appear with the first snapshot; the effective ratio and
// the uniform expectation only once they are known.
struct Metrics::RunSeries {
  uint64_t born_epoch = 0;  // refresh_epoch_ when created
  bool has_snapshot = false;
  RunStats last;                // counts of the previous snapshot (zeros before the first)
  int64_t uniform_rounds = -1;  // rounds_planned when the uniform expectation was computed
  Gauge* effective_ratio = nullptr;
  Gauge* uniform_ratio = nullptr;
  Gauge* pool_questions = nullptr;
  Gauge* replay_groups = nullptr;
  Gauge* replay_bytes = nullptr;
  Gauge* leases_outstanding = nullptr;
  Gauge* step = nullptr;
  Gauge* policy_version = nullptr;
  Gauge* model_version = nullptr;
  Gauge* model_loss = nullptr;
  Gauge* model_seconds = nullptr;
  Gauge* model_pearson = nullptr;
  Counter* leases_expired = nullptr;
  Counter* effective = nullptr;
  Counter* solve_all = nullptr;
  Counter* solve_none = nullptr;
  Counter* rounds_planned = nullptr;
  Histogram* planning = nullptr;
  Histogram* prediction_error = nullptr;
  Histogram* replay_age = nullptr;
};

// What the Exposer scrapes: the RunSource refresh, the registry, and the process metrics.
class Metrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(Metrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->Refresh();
    std::vector<prometheus::MetricFamily> families = metrics_->registry_->Collect();
    const ProcessSample p = SampleProcess();
    using prometheus::MetricType;
    families.push_back(ProcessFamily("process_cpu_seconds_total",
                                     "Total user and system CPU time spent, in seconds.",
                                     MetricType::Counter, p.cpu_seconds));
    families.push_back(ProcessFamily("process_resident_memory_bytes",
                                     "Resident memory size, in bytes.", MetricType::Gauge,
                                     p.resident_bytes));
    families.push_back(ProcessFamily(
        "dots_heap_in_use_bytes",
        "Heap bytes allocated and not yet freed (glibc mallinfo2: uordblks + hblkhd); unlike the "
        "resident size, excludes memory the allocator keeps after a free.",
        MetricType::Gauge, p.heap_in_use_bytes));
    families.push_back(ProcessFamily("process_open_fds", "Number of open file descriptors.",
                                     MetricType::Gauge, p.open_fds));
    families.push_back(ProcessFamily("process_start_time_seconds",
                                     "Start time of the process since the Unix epoch, in seconds.",
                                     MetricType::Gauge, p.start_time_seconds));
    return families;
  }

 private:
  Metrics* const metrics_;
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpc_requests_(prometheus::BuildCounter()
                        .Name("dots_grpc_requests_total")
                        .Help("Finished gRPC calls by method and status code.")
                        .Register(*registry_)),
      rpc_duration_(prometheus::BuildHistogram()
                        .Name("dots_grpc_request_duration_seconds")
                        .Help("gRPC call duration from arrival to status, in seconds (NextBatch "
                              "includes waiting for its round plan).")
                        .Register(*registry_)),
      effective_ratio_(prometheus::BuildGauge()
                           .Name("dots_effective_question_ratio")
                           .Help("Fraction of the reported training groups of the last fully "
                                 "reported step with 0 < mean reward < 1 (groups that carry GRPO "
                                 "gradient).")
                           .Register(*registry_)),
      uniform_ratio_(prometheus::BuildGauge()
                         .Name("dots_uniform_expected_effective_ratio")
                         .Help("Effective-question ratio uniform selection would reach if the "
                               "current estimates were the true success rates (the baseline "
                               "for dots_effective_question_ratio).")
                         .Register(*registry_)),
      pool_questions_(prometheus::BuildGauge()
                          .Name("dots_pool_questions")
                          .Help("Questions in the run's pool.")
                          .Register(*registry_)),
      replay_groups_(prometheus::BuildGauge()
                         .Name("dots_replay_groups")
                         .Help("Rollout groups held in the run's replay store.")
                         .Register(*registry_)),
      replay_bytes_(prometheus::BuildGauge()
                        .Name("dots_replay_bytes")
                        .Help("Bytes held in the run's replay store (payloads and rewards).")
                        .Register(*registry_)),
      leases_outstanding_(prometheus::BuildGauge()
                              .Name("dots_leases_outstanding")
                              .Help("Questions handed out and neither reported nor expired.")
                              .Register(*registry_)),
      run_step_(prometheus::BuildGauge()
                    .Name("dots_run_step")
                    .Help("Highest training step whose batch was handed out (-1 before the "
                          "first).")
                    .Register(*registry_)),
      policy_version_(prometheus::BuildGauge()
                          .Name("dots_policy_version")
                          .Help("Highest policy version of the run's reported rollout groups.")
                          .Register(*registry_)),
      model_version_(prometheus::BuildGauge()
                         .Name("dots_model_version")
                         .Help("Trainings of the run's online difficulty model so far (0: none "
                               "yet; default estimator only).")
                         .Register(*registry_)),
      model_training_loss_(
          prometheus::BuildGauge()
              .Name("dots_model_training_loss")
              .Help("Weighted mean binary cross-entropy (nats) of the latest online difficulty "
                    "model on its training labels.")
              .Register(*registry_)),
      model_training_seconds_(prometheus::BuildGauge()
                                  .Name("dots_model_training_seconds")
                                  .Help("Wall time of the latest online difficulty model's "
                                        "training, all folds, in seconds.")
                                  .Register(*registry_)),
      model_pearson_(prometheus::BuildGauge()
                         .Name("dots_model_out_of_sample_pearson")
                         .Help("Pearson correlation of the previous online model's predictions "
                               "with the success rates observed after it was trained (out of "
                               "sample); NaN when undefined.")
                         .Register(*registry_)),
      leases_expired_(prometheus::BuildCounter()
                          .Name("dots_leases_expired_total")
                          .Help("Leases that expired before their question was reported.")
                          .Register(*registry_)),
      reported_groups_(prometheus::BuildCounter()
                           .Name("dots_reported_groups_total")
                           .Help("Reported rollout groups by outcome: effective (0 < mean reward "
                                 "< 1), solve_all (every rollout correct), solve_none (none).")
                           .Register(*registry_)),
      rounds_planned_(prometheus::BuildCounter()
                          .Name("dots_rounds_planned_total")
                          .Help("Rounds planned (estimator rescan and selection).")
                          .Register(*registry_)),
      planning_seconds_(prometheus::BuildHistogram()
                            .Name("dots_round_planning_seconds")
                            .Help("Time to plan a round (estimate the pool, draw references, "
                                  "select), in seconds.")
                            .Register(*registry_)),
      prediction_error_(prometheus::BuildHistogram()
                            .Name("dots_prediction_abs_error")
                            .Help("|predicted success rate - observed mean reward| of reported "
                                  "fresh groups.")
                            .Register(*registry_)),
      replay_age_(prometheus::BuildHistogram()
                      .Name("dots_replay_age_steps")
                      .Help("Age in training steps of replayed groups when handed out.")
                      .Register(*registry_)),
      streams_open_(prometheus::BuildGauge()
                        .Name("dots_streams_open")
                        .Help("Streaming calls open now (NextBatch, ReportRollouts, "
                              "UpsertQuestions, ImportPool, ExportRun, ImportRun); more than "
                              "--max_concurrent_streams are refused.")
                        .Register(*registry_)
                        .Add({})) {
  prometheus::BuildGauge()
      .Name("dots_build_info")
      .Help("Build information of the dots server; the value is always 1.")
      .Register(*registry_)
      .Add({{"version", DOTS_VERSION}})
      .Set(1);
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& listen_address) {
  std::unique_ptr<Metrics> metrics(new Metrics());
  metrics->collector_ = std::make_shared<Collector>(metrics.get());
  if (listen_address.empty()) return metrics;
  try {
    // civetweb threads: two let a slow scrape (a run mid-planning holds its mutex) not block
    // the next one.
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(listen_address, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics_listen: cannot serve /metrics on \"",
                                               listen_address, "\": ", e.what()));
  }
  const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("metrics_listen: no port bound for \"", listen_address, "\""));
  }
  metrics->port_ = ports.front();
  metrics->exposer_->RegisterCollectable(metrics->collector_);
  return metrics;
}

Metrics::~Metrics() {
  if (exposer_ == nullptr) return;
  // civetweb's listener polls in 2 s quanta before it notices the stop flag; connecting to it
  // wakes it at once (a refused or unrelated connect costs nothing: it then just takes 2 s).
  std::atomic<bool> stopped{false};
  std::thread waker([this, &stopped] {
    while (!stopped.load()) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return;
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port_));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
      close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();  // joins civetweb's threads: no scrape runs after this line
  stopped.store(true);
  waker.join();
}

std::string_view Metrics::StatusCodeName(int code) {
  if (code < 0 || code >= static_cast<int>(kStatusCodeNames.size())) {
    return kStatusCodeNames[kUnknownCode];
  }
  return kStatusCodeNames[code];
}

std::string Metrics::MethodLabel(std::string_view full_method) {
  static constexpr std::string_view kDots = "/dots.v1.Dots/";
  static constexpr std::array<std::string_view, 3> kKeepService = {
      "/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
      "/grpc.reflection.v1.ServerReflection/"};
  auto valid_name = [](std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    });
  };
  if (full_method.starts_with(kDots)) {
    const std::string_view name = full_method.substr(kDots.size());
    if (valid_name(name)) return std::string(name);
  }
  for (std::string_view service : kKeepService) {
    if (full_method.starts_with(service) && valid_name(full_method.substr(service.size()))) {
      return std::string(full_method.substr(1));
    }
  }
  return "other";
}

double Metrics::UniformEffectiveRatio(absl::Span<const double> p_hat, int group_size) {
  if (p_hat.empty() || group_size <= 0) return 0;
  double sum = 0;
  for (double p : p_hat) {
    const double clipped = std::clamp(p, 0.0, 1.0);
    sum += 1 - std::pow(clipped, group_size) - std::pow(1 - clipped, group_size);
  }
  return sum / static_cast<double>(p_hat.size());
}

void Metrics::RecordRpc(std::string_view method, int code, double seconds) {
  if (code < 0 || code >= static_cast<int>(kStatusCodeNames.size())) code = kUnknownCode;
  MutexLock lock(&mu_);
  auto key = std::make_pair(std::string(method), code);
  auto counter = rpc_counters_.find(key);
  if (counter == rpc_counters_.end()) {
    Counter* added =
        &rpc_requests_.Add({{"method", key.first}, {"code", std::string(kStatusCodeNames[code])}});
    counter = rpc_counters_.emplace(std::move(key), added).first;
  }
  counter->second->Increment();
  auto histogram = rpc_histograms_.find(std::string(method));
  if (histogram == rpc_histograms_.end()) {
    Histogram* added = &rpc_duration_.Add({{"method", std::string(method)}}, RpcBuckets());
    histogram = rpc_histograms_.emplace(std::string(method), added).first;
  }
  histogram->second->Observe(std::max(0.0, seconds));
}

void Metrics::RecordRpc(std::string_view method, std::string_view code_name, double seconds) {
  const auto it = std::find(kStatusCodeNames.begin(), kStatusCodeNames.end(), code_name);
  RecordRpc(
      method,
      it == kStatusCodeNames.end() ? kUnknownCode : static_cast<int>(it - kStatusCodeNames.begin()),
      seconds);
}

Metrics::RunSeries& Metrics::SeriesLocked(const std::string& run_id) {
  std::unique_ptr<RunSeries>& slot = runs_[run_id];
  if (slot != nullptr) return *slot;
  slot = std::make_unique<RunSeries>();
  RunSeries& s = *slot;
  s.born_epoch = refresh_epoch_;
  const prometheus::Labels run{{"run", run_id}};
  s.leases_expired = &leases_expired_.Add(run);
  s.effective = &reported_groups_.Add({{"run", run_id}, {"outcome", "effective"}});
  s.solve_all = &reported_groups_.Add({{"run", run_id}, {"outcome", "solve_all"}});
  s.solve_none = &reported_groups_.Add({{"run", run_id}, {"outcome", "solve_none"}});
  s.rounds_planned = &rounds_planned_.Add(run);
  s.planning = &planning_seconds_.Add(run, PlanningBuckets());
  s.prediction_error = &prediction_error_.Add(run, ErrorBuckets());
  s.replay_age = &replay_age_.Add(run, AgeBuckets());
  return s;
}

void Metrics::RemoveRunLocked(const std::string& run_id) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return;
  RunSeries& s = *it->second;
  if (s.effective_ratio != nullptr) effective_ratio_.Remove(s.effective_ratio);
  if (s.uniform_ratio != nullptr) uniform_ratio_.Remove(s.uniform_ratio);
  if (s.has_snapshot) {
    pool_questions_.Remove(s.pool_questions);
    replay_groups_.Remove(s.replay_groups);
    replay_bytes_.Remove(s.replay_bytes);
    leases_outstanding_.Remove(s.leases_outstanding);
    run_step_.Remove(s.step);
    policy_version_.Remove(s.policy_version);
    model_version_.Remove(s.model_version);
    model_training_loss_.Remove(s.model_loss);
    model_training_seconds_.Remove(s.model_seconds);
    model_pearson_.Remove(s.model_pearson);
  }
  leases_expired_.Remove(s.leases_expired);
  reported_groups_.Remove(s.effective);
  reported_groups_.Remove(s.solve_all);
  reported_groups_.Remove(s.solve_none);
  rounds_planned_.Remove(s.rounds_planned);
  planning_seconds_.Remove(s.planning);
  prediction_error_.Remove(s.prediction_error);
  replay_age_.Remove(s.replay_age);
  runs_.erase(it);
}

void Metrics::UpdateRunLocked(const std::string& run_id, const RunStats& stats) {
  RunSeries& s = SeriesLocked(run_id);
  if (!s.has_snapshot) {
    const prometheus::Labels run{{"run", run_id}};
    s.pool_questions = &pool_questions_.Add(run);
    s.replay_groups = &replay_groups_.Add(run);
    s.replay_bytes = &replay_bytes_.Add(run);
    s.leases_outstanding = &leases_outstanding_.Add(run);
    s.step = &run_step_.Add(run);
    s.policy_version = &policy_version_.Add(run);
    s.model_version = &model_version_.Add(run);
    s.model_loss = &model_training_loss_.Add(run);
    s.model_seconds = &model_training_seconds_.Add(run);
    s.model_pearson = &model_pearson_.Add(run);
    s.has_snapshot = true;
  }
  s.pool_questions->Set(static_cast<double>(stats.pool_size));
  s.replay_groups->Set(static_cast<double>(stats.replay_groups));
  s.replay_bytes->Set(static_cast<double>(stats.replay_bytes));
  s.leases_outstanding->Set(static_cast<double>(stats.leases_outstanding));
  s.step->Set(static_cast<double>(stats.step));
  s.policy_version->Set(static_cast<double>(stats.policy_version));
  s.model_version->Set(static_cast<double>(stats.model_version));
  s.model_loss->Set(stats.model_training_loss);
  s.model_seconds->Set(stats.model_training_seconds);
  s.model_pearson->Set(stats.model_version > 0 ? stats.model_out_of_sample_pearson
                                               : std::numeric_limits<double>::quiet_NaN());
  if (stats.effective_last_step_index >= 0) {
    if (s.effective_ratio == nullptr) s.effective_ratio = &effective_ratio_.Add({{"run", run_id}});
    s.effective_ratio->Set(stats.effective_ratio_last_step);
  }
  // Counters move by the increase only: a decrease (never expected from a run) rebases.
  auto advance = [](Counter* counter, int64_t now, int64_t before) {
    if (now > before) counter->Increment(static_cast<double>(now - before));
  };
  advance(s.leases_expired, stats.leases_expired, s.last.leases_expired);
  advance(s.effective, stats.effective_groups, s.last.effective_groups);
  advance(s.solve_all, stats.solve_all_groups, s.last.solve_all_groups);
  advance(s.solve_none, stats.solve_none_groups, s.last.solve_none_groups);
  advance(s.rounds_planned, stats.rounds_planned, s.last.rounds_planned);
  if (stats.rounds_planned > s.last.rounds_planned) {
    s.planning->Observe(std::max(0.0, stats.last_planning_seconds));
  }
  s.last = stats;
}

void Metrics::UpdateRun(const std::string& run_id, const RunStats& stats) {
  MutexLock lock(&mu_);
  UpdateRunLocked(run_id, stats);
}

void Metrics::SetUniformExpectedRatio(const std::string& run_id, double ratio) {
  MutexLock lock(&mu_);
  RunSeries& s = SeriesLocked(run_id);
  if (s.uniform_ratio == nullptr) s.uniform_ratio = &uniform_ratio_.Add({{"run", run_id}});
  s.uniform_ratio->Set(ratio);
}

void Metrics::ObservePlanning(const std::string& run_id, double seconds) {
  MutexLock lock(&mu_);
  SeriesLocked(run_id).planning->Observe(std::max(0.0, seconds));
}

void Metrics::ObservePredictionError(const std::string& run_id, double abs_error) {
  MutexLock lock(&mu_);
  SeriesLocked(run_id).prediction_error->Observe(std::abs(abs_error));
}

void Metrics::ObserveReplayAge(const std::string& run_id, int64_t steps) {
  MutexLock lock(&mu_);
  SeriesLocked(run_id).replay_age->Observe(static_cast<double>(std::max<int64_t>(0, steps)));
}

void Metrics::RemoveRun(const std::string& run_id) {
  MutexLock lock(&mu_);
  RemoveRunLocked(run_id);
}

void Metrics::SetRunSource(RunSource source) {
  MutexLock lock(&source_mu_);
  source_ = std::move(source);
}

void Metrics::Refresh() {
  MutexLock source_lock(&source_mu_);
  if (!source_) return;
  uint64_t epoch = 0;
  {
    MutexLock lock(&mu_);
    epoch = ++refresh_epoch_;
  }
  std::vector<RunSnapshot> snapshots = source_();

  // Uniform expectations, outside mu_: pool_estimates is O(pool) and takes the run's mutex.
  std::vector<std::pair<size_t, double>> uniform;  // (snapshot index, ratio)
  for (size_t i = 0; i < snapshots.size(); ++i) {
    const RunSnapshot& snap = snapshots[i];
    if (!snap.pool_estimates || snap.group_size <= 0 || snap.stats.rounds_planned <= 0) continue;
    {
      MutexLock lock(&mu_);
      auto it = runs_.find(snap.run_id);
      if (it != runs_.end() && it->second->uniform_rounds == snap.stats.rounds_planned) continue;
    }
    absl::StatusOr<std::vector<double>> p_hat = snap.pool_estimates();
    if (!p_hat.ok()) continue;
    uniform.emplace_back(i, UniformEffectiveRatio(*p_hat, snap.group_size));
  }

  MutexLock lock(&mu_);
  absl::flat_hash_set<std::string> listed;
  for (const RunSnapshot& snap : snapshots) {
    UpdateRunLocked(snap.run_id, snap.stats);
    listed.insert(snap.run_id);
  }
  for (const auto& [index, ratio] : uniform) {
    RunSeries& s = SeriesLocked(snapshots[index].run_id);
    if (s.uniform_ratio == nullptr) {
      s.uniform_ratio = &uniform_ratio_.Add({{"run", snapshots[index].run_id}});
    }
    s.uniform_ratio->Set(ratio);
    s.uniform_rounds = snapshots[index].stats.rounds_planned;
  }
  std::vector<std::string> gone;
  for (const auto& [id, series] : runs_) {
    if (series->born_epoch < epoch && !listed.contains(id)) gone.push_back(id);
  }
  for (const std::string& id : gone) RemoveRunLocked(id);
}

std::string Metrics::Render() {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collector_->Collect());
  return out.str();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::NewInterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(this);
}

}  // namespace dots
