// Prometheus metrics of a dots server (docs/design.md §5; docs/conventions.md §3.1), served by a
// prometheus-cpp Exposer on its own HTTP port at /metrics (flag --metrics_listen).
//
// What is exported (the authoritative list, with types, is deploy/metrics.txt; the unit test
// checks that a scrape names exactly those metrics, and the deploy tests check that every PromQL
// expression in deploy/ names only them):
//   per RPC method     dots_grpc_requests_total{method,code}, dots_grpc_request_duration_seconds
//   server             dots_streams_open (streaming calls now; --max_concurrent_streams)
//   per run (label     gauges   dots_effective_question_ratio, dots_pool_questions,
//   `run`, the only             dots_replay_groups, dots_replay_bytes, dots_leases_outstanding,
//   per-run label)              dots_run_step, dots_policy_version,
//                               dots_uniform_expected_effective_ratio; the online difficulty
//                               model's dots_model_version, dots_model_training_loss,
//                               dots_model_training_seconds, dots_model_out_of_sample_pearson
//                      counters dots_reported_groups_total{outcome}, dots_leases_expired_total,
//                               dots_rounds_planned_total
//                      histos   dots_round_planning_seconds, dots_prediction_abs_error,
//                               dots_replay_age_steps
//   process            process_cpu_seconds_total, process_resident_memory_bytes,
//                      process_open_fds, process_start_time_seconds (procfs, read per scrape),
//                      dots_heap_in_use_bytes (glibc mallinfo2 per scrape: O(arenas), takes
//                      each malloc arena's lock briefly), dots_build_info{version} 1
//   the Exposer's own  exposer_scrapes_total, exposer_transferred_bytes_total,
//                      exposer_request_latencies
//
// Per-run values come from RunStats snapshots: either pushed with UpdateRun, or pulled at every
// scrape from a RunSource (SetRunSource), which is what the server does, so gauges are as fresh
// as the scrape and runs that no longer exist lose their series automatically. Counters are
// advanced by the increase of the snapshot's cumulative count since the previous snapshot of the
// same run, so they never go down.
//
// Thread safety: every method is thread-safe. Scrapes run on the Exposer's threads; a scrape
// with a RunSource calls it (and so takes each run's mutex briefly, via Run::Stats).
#ifndef DOTS_SERVER_METRICS_H_
#define DOTS_SERVER_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/run/run.h"
#include "core/util/mutex.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace dots {

class Metrics {
 public:
  // One run as the RunSource sees it at scrape time.
  struct RunSnapshot {
    std::string run_id;
    RunStats stats;
    // Optional. When set, it is called (at most once per planned round of the run, i.e. when
    // stats.rounds_planned differs from the value at the previous call) to compute
    // dots_uniform_expected_effective_ratio: the effective-question ratio that uniform
    // selection would reach if p̂ were the truth. It returns p̂ of every pool question, each in
    // [0, 1]; an error leaves the previous value.
    std::function<absl::StatusOr<std::vector<double>>()> pool_estimates;
    int group_size = 0;  // G, rollouts per question; needed with pool_estimates
  };
  using RunSource = std::function<std::vector<RunSnapshot>()>;

  // Starts the Exposer on `listen_address` ("host:port"; port 0 picks a free port, see port()).
  // An empty address starts no HTTP server: metrics are then only read with Render(), which
  // in-process tests use. Errors: UNAVAILABLE naming the address when it cannot be bound.
  // Blocks only while binding.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& listen_address);

  // Stops the HTTP server first (waits for in-flight scrapes), then frees the series.
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The bound TCP port, 0 without an HTTP server. O(1).
  int port() const { return port_; }
  // The registry, for components that add metrics of their own. Never null.
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One finished RPC: `method` is a short, bounded name ("NextBatch"; see MethodLabel),
  // `code` a gRPC status code (0..16; anything else counts as UNKNOWN), `seconds` its wall time
  // from arrival to status. O(1) amortized (the first call per method/code adds a series).
  void RecordRpc(std::string_view method, int code, double seconds) ABSL_LOCKS_EXCLUDED(mu_);
  // Same with the code's name ("OK", "NOT_FOUND"); an unknown name counts as UNKNOWN.
  void RecordRpc(std::string_view method, std::string_view code_name, double seconds)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Streaming calls open now (dots_streams_open): +1 when one starts, -1 when it ends.
  // O(1), lock-free.
  void AddStreamsOpen(int delta) { streams_open_.Increment(delta); }

  // Sets the run's gauges from `stats`, advances its counters by the increase since the last
  // snapshot of this run (a count that went down, which a run never does, only rebases), and,
  // when stats.rounds_planned advanced, observes stats.last_planning_seconds once in
  // dots_round_planning_seconds (the durations of rounds planned in between are not in a
  // snapshot). dots_effective_question_ratio appears once the run has a fully reported step.
  // O(1) amortized.
  void UpdateRun(const std::string& run_id, const RunStats& stats) ABSL_LOCKS_EXCLUDED(mu_);
  // Sets dots_uniform_expected_effective_ratio{run} (a ratio in [0, 1]). O(1).
  void SetUniformExpectedRatio(const std::string& run_id, double ratio) ABSL_LOCKS_EXCLUDED(mu_);
  // Histogram observations: a round's planning time in seconds; |p̂ − observed mean reward|
  // of one reported fresh group (in [0, 1]); the age in steps (serving step − producing step)
  // of one replayed group handed out. O(buckets).
  void ObservePlanning(const std::string& run_id, double seconds) ABSL_LOCKS_EXCLUDED(mu_);
  void ObservePredictionError(const std::string& run_id, double abs_error) ABSL_LOCKS_EXCLUDED(mu_);
  void ObserveReplayAge(const std::string& run_id, int64_t steps) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes every series labelled run=`run_id`; a later update starts from zero. No-op for an
  // unknown run. O(series of the run).
  void RemoveRun(const std::string& run_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Installs (or, with nullptr, removes) the source that every scrape calls first: each listed
  // run gets UpdateRun, and runs that are not listed lose their series (except runs first seen
  // while the source was being called). Blocks until a scrape that is calling the previous
  // source has finished with it, so after SetRunSource(nullptr) returns, the source's captures
  // may be destroyed.
  void SetRunSource(RunSource source) ABSL_LOCKS_EXCLUDED(source_mu_);

  // Calls the RunSource (if any), then returns the whole exposition in the Prometheus text
  // format 0.0.4, exactly what /metrics serves (minus the Exposer's own metrics).
  // O(series + runs * RunSource cost).
  std::string Render();

  // A gRPC server interceptor factory (pass it to ServerBuilder::experimental()
  // .SetInterceptorCreators) that calls RecordRpc for every call, labelled with
  // MethodLabel(method), timed from the call's creation to its status (a call that ends without
  // a status, e.g. a broken stream, counts as CANCELLED). `this` must outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();

  // "NOT_FOUND" for 5; "UNKNOWN" outside 0..16. O(1).
  static std::string_view StatusCodeName(int code);
  // The method label of a full gRPC method name: "/dots.v1.Dots/NextBatch" -> "NextBatch";
  // the health and reflection services keep their service ("grpc.health.v1.Health/Check");
  // any other name becomes "other", so unknown methods cannot grow the label set. O(length).
  static std::string MethodLabel(std::string_view full_method);
  // Effective ratio uniform selection would reach if p̂ were the truth: the mean over questions
  // of P(0 < successes < G) = 1 − p^G − (1 − p)^G. 0 for an empty pool. O(questions).
  static double UniformEffectiveRatio(absl::Span<const double> p_hat, int group_size);

 private:
  class Collector;
  struct RunSeries;

  Metrics();
  RunSeries& SeriesLocked(const std::string& run_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveRunLocked(const std::string& run_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateRunLocked(const std::string& run_id, const RunStats& stats)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls the RunSource and applies it (see SetRunSource).
  void Refresh() ABSL_LOCKS_EXCLUDED(source_mu_, mu_);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Collector> collector_;  // registry_ + process metrics, refreshed per scrape
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;

  prometheus::Family<prometheus::Counter>& rpc_requests_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Family<prometheus::Gauge>& effective_ratio_;
  prometheus::Family<prometheus::Gauge>& uniform_ratio_;
  prometheus::Family<prometheus::Gauge>& pool_questions_;
  prometheus::Family<prometheus::Gauge>& replay_groups_;
  prometheus::Family<prometheus::Gauge>& replay_bytes_;
  prometheus::Family<prometheus::Gauge>& leases_outstanding_;
  prometheus::Family<prometheus::Gauge>& run_step_;
  prometheus::Family<prometheus::Gauge>& policy_version_;
  prometheus::Family<prometheus::Gauge>& model_version_;
  prometheus::Family<prometheus::Gauge>& model_training_loss_;
  prometheus::Family<prometheus::Gauge>& model_training_seconds_;
  prometheus::Family<prometheus::Gauge>& model_pearson_;
  prometheus::Family<prometheus::Counter>& leases_expired_;
  prometheus::Family<prometheus::Counter>& reported_groups_;
  prometheus::Family<prometheus::Counter>& rounds_planned_;
  prometheus::Family<prometheus::Histogram>& planning_seconds_;
  prometheus::Family<prometheus::Histogram>& prediction_error_;
  prometheus::Family<prometheus::Histogram>& replay_age_;
  prometheus::Gauge& streams_open_;

  // source_mu_ is held while the RunSource runs; lock order: source_mu_ before mu_.
  Mutex source_mu_;
  RunSource source_ ABSL_GUARDED_BY(source_mu_);

  Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<RunSeries>> runs_ ABSL_GUARDED_BY(mu_);
  // Cached RPC series: (method, code) -> counter, method -> histogram.
  absl::flat_hash_map<std::pair<std::string, int>, prometheus::Counter*> rpc_counters_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> rpc_histograms_ ABSL_GUARDED_BY(mu_);
  uint64_t refresh_epoch_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dots

#endif  // DOTS_SERVER_METRICS_H_
