// A run: one training job's question pool, estimator, round plans, issued batches, leases,
// observations and replay store, and the training protocol over them (docs/design.md §2.4–2.5).
//
// Protocol. Steps s = 0, 1, 2, ... are grouped in rounds of mu steps (round = s / mu). A round is
// planned once: the estimator rescans the pool, the reference questions are drawn, and the
// selector draws the round's fresh questions without replacement, in draw order. The batch of a
// step is composed on its first NextBatch (fresh share + replayed groups, plus the inline
// reference questions of the next round), recorded, and from then on returned identically to
// every rank and retry. Rank r of W receives a contiguous, balanced slice.
//
// Round r + 1 can be planned when every item handed out in round r has been reported or its
// lease has expired (and, in paper reference mode, when round r + 1's reference batch is fully
// reported). A background thread plans as soon as that happens, so trainers rarely wait; a
// NextBatch that needs a plan waits for it at most until its deadline.
//
// Reference modes: inline (default) — round r's batches carry the K reference questions that
// label round r + 1's estimate, and their rollouts are trained on; paper — NextBatch at the first
// step of a round returns the round's reference batch (flag reference_batch) until all of it is
// reported, and other steps of the round fail with FAILED_PRECONDITION meanwhile; none —
// history and priors only.
//
// Durability (Options::store set): every change is recorded as an event in the state store
// (core/storage/state_store.h) in the order the run applies it, and a method that changed
// something, or that returns a batch, returns only once its events are durable, so nothing a caller
// saw can be lost. Run::Open rebuilds a run from its snapshot plus the events after it; a snapshot
// is written whenever the events since the last one outgrow twice its size (at least 256 MiB), so
// a restart replays a bounded tail. If a write fails the call returns UNAVAILABLE and the run marks
// itself broken(): its owner reopens it from the store, which holds exactly what was acknowledged.
//
// Retention: step records (batches, with their replay payloads) and plans of rounds more than
// kRetainedRounds behind the newest issued step are dropped once settled, which bounds memory
// and snapshots in long runs; NextBatch of such a step is FAILED_PRECONDITION and a late
// report for it is rejected.
//
// Thread safety: every public method is thread-safe (one mutex per run). NextBatch may block up
// to its deadline waiting for a plan; nothing else blocks on other callers beyond the mutex and
// the durable write.
#ifndef DOTS_CORE_RUN_RUN_H_
#define DOTS_CORE_RUN_RUN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/estimation/estimator.h"
#include "core/formats/pool.h"
#include "core/replay/replay_store.h"
#include "core/run/run_config.h"
#include "core/storage/state_store.h"
#include "core/types.h"
#include "core/util/mutex.h"

namespace dots {
namespace state::v1 {
class RoundPlanRecord;
class RunEvent;
class RunSnapshot;
}  // namespace state::v1

// Resource limits of one server (dots-server's --max_* flags). Over a limit a call fails with
// RESOURCE_EXHAUSTED naming the limit, and nothing is written. Runs already stored are loaded at
// a restart even if they exceed limits lowered since; they only cannot grow further.
struct RunLimits {
  int64_t max_runs = 1024;                               // RunRegistry::Create and Adopt
  int64_t max_questions_per_run = 10'000'000;            // pool size after an upsert
  int64_t max_embedding_dim = 16384;                     // columns of uploaded embeddings
  int64_t max_replay_bytes_per_run = int64_t{64} << 30;  // the config's replay.capacity_bytes
};

class Run {
 public:
  struct Options {
    // Time source for leases; tests substitute a fake clock.
    std::function<absl::Time()> clock = [] { return absl::Now(); };
    // Plan rounds on a background thread (default); false plans synchronously inside the call
    // that needs the plan, which makes tests independent of thread scheduling.
    bool background_planning = true;
    // Where the run's state is kept; null keeps it in memory only. Must outlive the run.
    StateStore* store = nullptr;
    RunLimits limits;
  };

  // Rounds of step records and plans kept behind the newest issued step (see Retention).
  static constexpr int64_t kRetainedRounds = 8;

  // Validates the config (INVALID_ARGUMENT naming the key; RESOURCE_EXHAUSTED naming
  // max_replay_bytes_per_run when replay.capacity_bytes exceeds it) and loads an adapter if
  // configured.
  // With a store, the run's meta record is written durably first (UNAVAILABLE if that fails).
  // `token_sha256` (may be empty) is the SHA-256 of the run's bearer token, kept with the run
  // (durably, with a store) for the server's access checks; the token itself is never stored.
  static absl::StatusOr<std::unique_ptr<Run>> Create(std::string id, RunConfig config,
                                                     Options options,
                                                     std::string token_sha256 = "");
  static absl::StatusOr<std::unique_ptr<Run>> Create(std::string id, RunConfig config) {
    return Create(std::move(id), std::move(config), Options());
  }
  // Rebuilds run `id` from `options.store` (required): meta, pool, snapshot, then the events
  // after it, in order. Errors: NOT_FOUND without a meta record; DATA_LOSS naming the key for a
  // record that does not parse or an event that does not replay. Cost: O(pool * dim + snapshot +
  // events); blocks on disk. Reads only; never deletes anything.
  static absl::StatusOr<std::unique_ptr<Run>> Open(const std::string& id, Options options);

  ~Run();  // stops the planner thread; blocks until it exits
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  const std::string& id() const { return id_; }
  const RunConfig& config() const { return config_; }
  absl::Time created() const { return created_; }
  // SHA-256 (32 raw bytes) of the run's bearer token, empty when the run has none.
  const std::string& token_sha256() const { return token_sha256_; }
  // True after a durable write failed: the in-memory state may hold a change the store does not,
  // so the owner must reopen the run (Run::Open) before serving it again.
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  // Stops writing to the store (the run is being deleted); later changes stay in memory only.
  void DetachFromStore() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes a snapshot now and drops the events it covers, durably. No-op without a store.
  absl::Status Checkpoint() ABSL_LOCKS_EXCLUDED(mu_);

  // Seals (or unseals) the run: the fence of a move between servers. From the moment it is
  // sealed, UpsertQuestions, NextBatch and ReportRollouts return UNAVAILABLE naming the run;
  // SetSealed(true) returns once every change accepted before it is durable and the seal itself
  // is durable (the meta record), so an export taken afterwards holds every acknowledged change
  // and the sealed copy never changes again. Idempotent. Blocks on disk (one synced write).
  // Errors: the store's (the seal is then not in force).
  absl::Status SetSealed(bool sealed) ABSL_LOCKS_EXCLUDED(mu_);
  bool sealed() ABSL_LOCKS_EXCLUDED(mu_);

  // Adds new questions and replaces existing ones (same key). `embeddings` is empty or one row
  // per question. An invalid question (duplicate key in the upload, dimension mismatch, NaN,
  // prior outside [0, 1]...) fails the whole call with INVALID_ARGUMENT naming its index and
  // field, or, with reject_individually, is listed in the result while the valid ones are
  // applied. The estimator is rebuilt at the next planning; observation history is kept.
  // RESOURCE_EXHAUSTED, nothing applied, when the pool would outgrow max_questions_per_run or the
  // embeddings have more than max_embedding_dim columns (Options::limits). O(n * dim).
  absl::StatusOr<UpsertResult> UpsertQuestions(std::vector<Question> questions,
                                               const FloatMatrix& embeddings,
                                               bool reject_individually = false)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The batch of `step` for `rank` of `world_size`. Errors: INVALID_ARGUMENT for a negative
  // step or version or a rank outside [0, world_size); FAILED_PRECONDITION for a step more than
  // one round ahead of the last reported step, a pool too small for the config, or a round that
  // cannot be planned by `deadline` (the message says which items are missing); DEADLINE_EXCEEDED
  // when planning is still running at the deadline. Blocks at most until `deadline`.
  absl::StatusOr<BatchSlice> NextBatch(int64_t step, int rank, int world_size,
                                       int64_t policy_version, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records rollout groups of `step`. Idempotent per (step, key): a repeat is counted as a
  // duplicate and ignored. A group whose key was not handed out at `step`, or with a wrong
  // reward count, a reward outside [0, 1] or a negative version is rejected (listed in the
  // result, nothing of it applied); the others are applied. INVALID_ARGUMENT only for a negative
  // step. O(groups * G) plus replay insertion.
  absl::StatusOr<ReportResult> ReportRollouts(int64_t step, std::vector<RolloutReport> groups)
      ABSL_LOCKS_EXCLUDED(mu_);

  RunStats Stats() ABSL_LOCKS_EXCLUDED(mu_);

  // RESOURCE_EXHAUSTED naming the first of Options::limits the run exceeds (pool size, embedding
  // dimension, replay capacity), e.g. for an imported run. O(1).
  absl::Status CheckLimits() ABSL_LOCKS_EXCLUDED(mu_);

  // Current estimates (of the latest plan; before any plan, the cold start). `keys` empty =
  // every question in pool order; an unknown key is NOT_FOUND naming it.
  absl::StatusOr<std::vector<QuestionEstimate>> GetEstimates(const std::vector<std::string>& keys)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct IssuedItem {
    int64_t question;
    ItemRole role;
    bool training;  // false for paper-mode reference batches (not trained on, not replayed)
  };
  struct StepRecord {
    int64_t round = 0;
    std::vector<IssuedItem> items;
    std::vector<ReplayGroup> replay;
    absl::flat_hash_map<int64_t, size_t> position;  // question -> index in items
    std::vector<uint8_t> settled;                   // per item: reported or lease expired
    int64_t unsettled = 0;
    int64_t reported = 0, effective = 0;
  };
  struct RoundPlan {
    int64_t round = 0;
    bool ready = false;               // fresh candidates drawn
    std::vector<int64_t> paper_refs;  // paper mode: this round's reference batch
    int64_t paper_refs_unsettled = 0;
    std::vector<int64_t> inline_refs;  // inline mode: next round's references, spread over steps
    std::vector<int64_t> candidates;   // fresh questions in draw order
    size_t cursor = 0;                 // next unused candidate
    std::vector<float> p_hat;          // estimates the plan used
  };
  struct Lease {
    int64_t step;
    int64_t question;
  };

  Run(std::string id, RunConfig config, Options options, std::shared_ptr<const Adapter> adapter);
  // Validates the config, loads the adapter, constructs; no store access, no planner.
  static absl::StatusOr<std::unique_ptr<Run>> Build(std::string id, RunConfig config,
                                                    Options options);

  // The methods' bodies; the public wrappers add the wait for durability.
  // RESOURCE_EXHAUSTED when config.replay.capacity_bytes exceeds the limits. O(1).
  static absl::Status CheckReplayLimit(const RunConfig& config, const RunLimits& limits);
  // RESOURCE_EXHAUSTED when applying questions[valid] (embeddings of `dim` columns) would exceed
  // the pool-size or dimension limit. O(valid).
  absl::Status CheckUpsertLimitsLocked(const std::vector<Question>& questions,
                                       const std::vector<int64_t>& valid, int64_t dim)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<UpsertResult> UpsertLocked(std::vector<Question>& questions,
                                            const FloatMatrix& embeddings, bool reject_individually)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<BatchSlice> NextBatchLocked(int64_t step, int rank, int world_size,
                                             int64_t policy_version, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<ReportResult> ReportLocked(int64_t step, std::vector<RolloutReport>& groups)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The record and position of `question` handed out at `step`, or false.
  bool FindIssuedLocked(int64_t step, int64_t question, StepRecord** record, size_t* pos)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies one validated, non-duplicate report (live and replayed).
  absl::Status ApplyReportLocked(int64_t step, int64_t q, StepRecord& record, size_t pos,
                                 RolloutReport group, ReportResult* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops settled step records and plans older than kRetainedRounds rounds.
  void RetireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Persistence (core/run/run_persist.cc). LogLocked records an event (and `extra` writes, e.g.
  // pool rows) in the store's queue; AwaitDurable waits until everything logged so far is durable.
  void LogLocked(state::v1::RunEvent& event, std::vector<rocksdb::WriteBatch> extra = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AwaitDurable() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyEventLocked(const state::v1::RunEvent& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillSnapshotLocked(state::v1::RunSnapshot* snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RestoreSnapshotLocked(const state::v1::RunSnapshot& snapshot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SnapshotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records round `round`'s freshly made plan (its result, so replay need not recompute it).
  void LogPlanLocked(int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void PlanToRecord(int64_t round, const RoundPlan& plan, state::v1::RoundPlanRecord* r);
  // DATA_LOSS naming `where` when a question index read back from the store is outside the
  // pool (a hostile or corrupted archive must not index past it).
  absl::Status CheckStoredQuestionLocked(int64_t q, std::string_view where) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Restores a recorded plan into plans_; DATA_LOSS for questions outside the pool.
  absl::Status PlanFromRecordLocked(const state::v1::RoundPlanRecord& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<rocksdb::WriteBatch> PoolRowsLocked(const std::vector<int64_t>& indices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // UNAVAILABLE naming the run while it is sealed (SetSealed), else OK. O(1).
  absl::Status CheckNotSealedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartPlanner();

  void PlannerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Expires leases whose deadline passed. O(expired * log leases).
  void ExpireLeasesLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SettleLocked(int64_t step, int64_t question) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why round `round` cannot be planned yet, or OK when it can.
  absl::Status RoundInputsCompleteLocked(int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans as far as possible (paper refs, then candidates) for round `round`.
  absl::Status PlanRoundLocked(int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RebuildEstimatorLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<dots::Estimates> EstimateLocked(absl::Span<const int64_t> refs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before round `round` is estimated: retrains what the run learns from its own outcomes on the
  // estimator's current state (core/run/run_learning.cc). Default mode with estimator.model
  // enabled: the online probe (cost: TrainOnlineModel plus O(N * D) to predict the pool; errors
  // are the training's, the previous model stays). Paper mode with estimator.adapter_training
  // online: fine-tunes the run's adapter (cost: TrainAdapterOnline plus O(N * D * h) to project
  // the pool); a failed pass (e.g. a non-finite loss) keeps the estimator as it was. A no-op
  // otherwise, and while too few questions are observed.
  absl::Status RefreshLearnedModelLocked(int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefreshOnlineModelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefreshOnlineAdapterLocked(int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ComposeStepLocked(int64_t step, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IssueLocked(int64_t step, StepRecord& record, int64_t question, ItemRole role, bool training,
                   absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BatchSlice SliceLocked(int64_t step, const StepRecord& record, bool reference_batch, int rank,
                         int world_size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WantPlanningLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  const RunConfig config_;
  const Options options_;
  const std::shared_ptr<const Adapter> adapter_;
  absl::Time created_ = absl::Now();
  std::string token_sha256_;  // set before the run is shared, constant afterwards
  std::atomic<bool> broken_{false};

  // dots::Mutex (core/util/mutex.h): std::mutex, which TSan sees, with the capability attributes
  // that let clang check the ABSL_GUARDED_BY fields below.
  Mutex mu_;
  CondVar changed_;  // plan ready, reports arrived, leases expired, shutdown
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  Pool pool_ ABSL_GUARDED_BY(mu_);
  FloatMatrix text_embeddings_ ABSL_GUARDED_BY(mu_);  // when the pool has none
  std::unique_ptr<Estimator> estimator_ ABSL_GUARDED_BY(mu_);
  bool estimator_stale_ ABSL_GUARDED_BY(mu_) = true;
  // The latest online model, kept across estimator rebuilds (scored against the next one).
  std::shared_ptr<const OnlineModel> online_model_ ABSL_GUARDED_BY(mu_);
  absl::Status planning_error_ ABSL_GUARDED_BY(mu_);  // of the planner thread's last attempt
  ReplayStore replay_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, RoundPlan> plans_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, StepRecord> steps_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, StepRecord> paper_ref_steps_ ABSL_GUARDED_BY(mu_);  // by first step of round
  absl::flat_hash_map<int64_t, int64_t> leased_ ABSL_GUARDED_BY(mu_);   // question -> step
  std::multimap<absl::Time, Lease> lease_deadlines_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, int64_t> last_fresh_step_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<int64_t, int64_t>> reported_ ABSL_GUARDED_BY(mu_);  // (step, question)
  std::vector<float> latest_p_hat_ ABSL_GUARDED_BY(mu_);
  int64_t last_reported_step_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t max_policy_version_ ABSL_GUARDED_BY(mu_) = 0;
  RunStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t retired_below_ ABSL_GUARDED_BY(mu_) = 0;  // steps below this were retired
  // Persistence.
  StateStore* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool replaying_ ABSL_GUARDED_BY(mu_) = false;
  bool sealed_ ABSL_GUARDED_BY(mu_) = false;  // SetSealed; restored from the meta record
  int64_t last_event_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t log_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // events since the last snapshot
  int64_t snapshot_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Estimator state read from a snapshot, applied when the estimator is next built.
  std::optional<EstimatorState> restored_estimator_ ABSL_GUARDED_BY(mu_);
  std::thread planner_;  // started in Create when background planning is on
};

}  // namespace dots

#endif  // DOTS_CORE_RUN_RUN_H_
