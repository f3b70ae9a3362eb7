#include "core/run/run.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "core/estimation/text_embedder.h"
#include "core/run/round_plan.h"
#include "core/selection/reference_set.h"
#include "core/selection/selector.h"
#include "core/util/mutex.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"
#include "dots/state/v1/state.pb.h"

namespace dots {
namespace {

using state::v1::RunEvent;

int64_t UnixMicros(absl::Time t) { return absl::ToUnixMicros(t); }

// Stream tags, so that every use of randomness has its own sequence (core/util/random.h).
constexpr uint64_t kTagReference = 0x726566;  // "ref"
constexpr uint64_t kTagSelect = 0x73656c;     // "sel"
constexpr uint64_t kTagReplay = 0x72706c;     // "rpl"
constexpr uint64_t kTagPaperRef = 0x707266;   // "prf"
// How often the planner thread wakes without a signal, to expire leases.
constexpr absl::Duration kPlannerTick = absl::Milliseconds(200);

}  // namespace

absl::StatusOr<std::unique_ptr<Run>> Run::Build(std::string id, RunConfig config, Options options) {
  DOTS_RETURN_IF_ERROR(config.Validate());
  std::shared_ptr<const Adapter> adapter;
  if (!config.estimator.adapter_path.empty()) {
    DOTS_ASSIGN_OR_RETURN(adapter, Adapter::Load(config.estimator.adapter_path));
  }
  config.replay.alpha = config.alpha;
  return std::unique_ptr<Run>(
      new Run(std::move(id), std::move(config), std::move(options), std::move(adapter)));
}

absl::StatusOr<std::unique_ptr<Run>> Run::Create(std::string id, RunConfig config, Options options,
                                                 std::string token_sha256) {
  DOTS_RETURN_IF_ERROR(CheckReplayLimit(config, options.limits));
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run,
                        Build(std::move(id), std::move(config), std::move(options)));
  run->token_sha256_ = std::move(token_sha256);
  if (run->options_.store != nullptr) {
    state::v1::RunMeta meta;
    meta.set_run_id(run->id_);
    meta.set_config_json(RunConfigToJson(run->config_));
    meta.set_created_unix_micros(UnixMicros(run->created_));
    meta.set_token_sha256(run->token_sha256_);
    rocksdb::WriteBatch batch;
    // Leftovers of an import that never finished (keys without a meta record) must not leak
    // into the new run.
    batch.DeleteRange(RunPrefix(run->id_), RunPrefixEnd(run->id_));
    batch.Put(RunMetaKey(run->id_), meta.SerializeAsString());
    DOTS_RETURN_IF_ERROR(run->options_.store->Write(std::move(batch)));
    MutexLock lock(&run->mu_);
    run->store_ = run->options_.store;
  }
  run->StartPlanner();
  return run;
}

void Run::StartPlanner() {
  if (options_.background_planning) planner_ = std::thread([this] { PlannerLoop(); });
}

Run::Run(std::string id, RunConfig config, Options options, std::shared_ptr<const Adapter> adapter)
    : id_(std::move(id)),
      config_(std::move(config)),
      options_(std::move(options)),
      adapter_(std::move(adapter)),
      replay_(config_.replay) {}

Run::~Run() {
  {
    MutexLock lock(&mu_);
    shutdown_ = true;
    changed_.SignalAll();
  }
  if (planner_.joinable()) planner_.join();
}

absl::StatusOr<UpsertResult> Run::UpsertQuestions(std::vector<Question> questions,
                                                  const FloatMatrix& embeddings,
                                                  bool reject_individually) {
  absl::StatusOr<UpsertResult> result;
  {
    MutexLock lock(&mu_);
    DOTS_RETURN_IF_ERROR(CheckNotSealedLocked());
    result = UpsertLocked(questions, embeddings, reject_individually);
  }
  DOTS_RETURN_IF_ERROR(AwaitDurable());
  return result;
}

absl::Status Run::CheckReplayLimit(const RunConfig& config, const RunLimits& limits) {
  if (config.replay.capacity_bytes > limits.max_replay_bytes_per_run) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "max_replay_bytes_per_run: replay.capacity_bytes = %d exceeds this server's limit of %d "
        "bytes per run",
        config.replay.capacity_bytes, limits.max_replay_bytes_per_run));
  }
  return absl::OkStatus();
}

absl::Status Run::CheckUpsertLimitsLocked(const std::vector<Question>& questions,
                                          const std::vector<int64_t>& valid, int64_t dim) {
  const RunLimits& limits = options_.limits;
  if (!valid.empty() && dim > limits.max_embedding_dim) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("max_embedding_dim: embeddings of %d dimensions exceed this server's "
                        "limit of %d; nothing was applied",
                        dim, limits.max_embedding_dim));
  }
  int64_t added = 0;
  for (int64_t i : valid) added += pool_.IndexOf(questions[i].key).has_value() ? 0 : 1;
  if (pool_.size() + added > limits.max_questions_per_run) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "max_questions_per_run: %d new questions would grow run \"%s\" to %d questions, over "
        "this server's limit of %d; nothing was applied",
        added, id_, pool_.size() + added, limits.max_questions_per_run));
  }
  return absl::OkStatus();
}

absl::Status Run::CheckLimits() {
  DOTS_RETURN_IF_ERROR(CheckReplayLimit(config_, options_.limits));
  MutexLock lock(&mu_);
  const RunLimits& limits = options_.limits;
  if (pool_.size() > limits.max_questions_per_run) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("max_questions_per_run: run \"%s\" has %d questions, over this server's "
                        "limit of %d",
                        id_, pool_.size(), limits.max_questions_per_run));
  }
  if (pool_.dim() > limits.max_embedding_dim) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("max_embedding_dim: run \"%s\" has embeddings of %d dimensions, over "
                        "this server's limit of %d",
                        id_, pool_.dim(), limits.max_embedding_dim));
  }
  return absl::OkStatus();
}

absl::StatusOr<UpsertResult> Run::UpsertLocked(std::vector<Question>& questions,
                                               const FloatMatrix& embeddings,
                                               bool reject_individually) {
  const int64_t n = static_cast<int64_t>(questions.size());
  if (embeddings.rows != 0 && embeddings.rows != n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("embeddings: %d rows for %d questions", embeddings.rows, n));
  }
  auto embedding = [&](int64_t i) {
    return embeddings.rows > 0 ? absl::MakeConstSpan(embeddings.row(i), embeddings.cols)
                               : absl::Span<const float>();
  };
  // Validate before changing anything: a scratch pool checks each question's fields, the
  // uniqueness of keys within the upload and the consistency of its embeddings; then each
  // embedding is checked against the run's dimension.
  UpsertResult result;
  std::vector<int64_t> valid;
  Pool scratch;
  for (int64_t i = 0; i < n; ++i) {
    absl::Status s = scratch.Add(questions[i], embedding(i));
    if (s.ok() && pool_.size() > 0 && embedding(i).size() != static_cast<size_t>(pool_.dim())) {
      s = absl::InvalidArgumentError(
          pool_.dim() == 0
              ? std::string("field \"embedding\": the run's questions have no embeddings")
              : absl::StrFormat("field \"embedding\": %d values, the run's dimension is %d",
                                embedding(i).size(), pool_.dim()));
    }
    if (s.ok()) {
      valid.push_back(i);
      continue;
    }
    const std::string error = absl::StrFormat("questions[%d]: %s", i, std::string(s.message()));
    if (!reject_individually) return absl::InvalidArgumentError(error);
    result.rejected.push_back({i, questions[i].key, error});
  }
  DOTS_RETURN_IF_ERROR(CheckUpsertLimitsLocked(questions, valid, embeddings.cols));
  std::vector<int64_t> changed;
  changed.reserve(valid.size());
  for (int64_t i : valid) {
    std::optional<int64_t> existing = pool_.IndexOf(questions[i].key);
    changed.push_back(existing.value_or(pool_.size()));
    absl::Status s = existing.has_value()
                         ? pool_.Replace(*existing, std::move(questions[i]), embedding(i))
                         : pool_.Add(std::move(questions[i]), embedding(i));
    if (!s.ok()) return absl::InternalError(absl::StrCat("upsert after validation: ", s.message()));
    ++(existing.has_value() ? result.updated : result.added);
  }
  if (!valid.empty()) {
    estimator_stale_ = true;
    planning_error_ = absl::OkStatus();
    // Plans that failed for lack of questions may succeed now.
    for (auto it = plans_.begin(); it != plans_.end();) {
      it = it->second.ready || !it->second.paper_refs.empty() ? std::next(it) : plans_.erase(it);
    }
    changed_.SignalAll();
    RunEvent event;
    event.mutable_upsert()->set_pool_size(pool_.size());
    LogLocked(event, PoolRowsLocked(changed));
  }
  return result;
}

absl::Status Run::RebuildEstimatorLocked() {
  if (pool_.size() == 0) {
    return absl::FailedPreconditionError("the run's question pool is empty: upload questions");
  }
  // The learned state survives the rebuild (and a restart: restored_estimator_).
  EstimatorState learned;
  if (estimator_ != nullptr) {
    learned = estimator_->ExportState();
  } else if (restored_estimator_.has_value()) {
    learned = std::move(*restored_estimator_);
  }
  restored_estimator_.reset();
  const FloatMatrix* embeddings = nullptr;
  if (config_.estimator.options.mode != EstimatorMode::kHistory && !pool_.has_embeddings()) {
    std::vector<std::string> prompts;
    prompts.reserve(static_cast<size_t>(pool_.size()));
    for (const Question& q : pool_.questions()) prompts.push_back(q.prompt);
    const TextEmbedder embedder = TextEmbedder::Fit(prompts, TextEmbedderOptions());
    text_embeddings_ = embedder.EmbedAll(prompts);
    embeddings = &text_embeddings_;
  }
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Estimator> rebuilt,
                        Estimator::Create(pool_, adapter_, config_.estimator.options, embeddings));
  DOTS_RETURN_IF_ERROR(rebuilt->RestoreState(std::move(learned)));
  // The online model is not carried over: the next plan retrains it (RefreshOnlineModelLocked),
  // so an estimate between a rebuild and that plan is the same with or without a restart.
  estimator_ = std::move(rebuilt);
  estimator_stale_ = false;
  return absl::OkStatus();
}

absl::StatusOr<dots::Estimates> Run::EstimateLocked(absl::Span<const int64_t> refs) {
  if (estimator_ == nullptr || estimator_stale_) DOTS_RETURN_IF_ERROR(RebuildEstimatorLocked());
  return estimator_->Estimate(max_policy_version_, refs);
}

void Run::ExpireLeasesLocked(absl::Time now) {
  int64_t expired = 0;
  while (!lease_deadlines_.empty() && lease_deadlines_.begin()->first <= now) {
    const Lease lease = lease_deadlines_.begin()->second;
    lease_deadlines_.erase(lease_deadlines_.begin());
    auto it = leased_.find(lease.question);
    if (it == leased_.end() || it->second != lease.step) continue;  // reported meanwhile
    ++stats_.leases_expired;
    ++expired;
    SettleLocked(lease.step, lease.question);
    changed_.SignalAll();
  }
  if (expired > 0) {
    RunEvent event;
    event.mutable_expire()->set_now_unix_micros(UnixMicros(now));
    LogLocked(event);
  }
}

void Run::SettleLocked(int64_t step, int64_t question) {
  if (auto it = leased_.find(question); it != leased_.end() && it->second == step) {
    leased_.erase(it);
  }
  for (auto* records : {&steps_, &paper_ref_steps_}) {
    auto rec = records->find(step);
    if (rec == records->end()) continue;
    auto pos = rec->second.position.find(question);
    if (pos == rec->second.position.end() || rec->second.settled[pos->second]) continue;
    rec->second.settled[pos->second] = 1;
    --rec->second.unsettled;
    if (records == &paper_ref_steps_) --plans_[rec->second.round].paper_refs_unsettled;
  }
}

absl::Status Run::RoundInputsCompleteLocked(int64_t round) {
  if (round == 0) return absl::OkStatus();
  const int64_t mu = config_.steps_per_round;
  const int64_t first = (round - 1) * mu, last = round * mu - 1;
  int64_t missing = 0;
  for (int64_t t = first; t <= last; ++t) {
    auto it = steps_.find(t);
    if (it == steps_.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "round %d cannot be planned: step %d of round %d has not been requested yet", round, t,
          round - 1));
    }
    missing += it->second.unsettled;
  }
  if (missing > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "round %d cannot be planned: %d rollout groups of steps %d-%d are neither reported nor "
        "expired (leases expire after %g s)",
        round, missing, first, last, config_.lease_timeout_seconds));
  }
  return absl::OkStatus();
}

void Run::IssueLocked(int64_t step, StepRecord& record, int64_t question, ItemRole role,
                      bool training, absl::Time now) {
  record.position[question] = record.items.size();
  record.items.push_back({question, role, training});
  record.settled.push_back(0);
  ++record.unsettled;
  leased_[question] = step;
  lease_deadlines_.emplace(now + absl::Seconds(config_.lease_timeout_seconds),
                           Lease{step, question});
}

absl::Status Run::PlanRoundLocked(int64_t round) {
  const absl::Time start = absl::Now();
  if (pool_.size() == 0) {
    return absl::FailedPreconditionError("the run's question pool is empty: upload questions");
  }
  DOTS_RETURN_IF_ERROR(config_.ValidateForPool(pool_.size()));
  RoundPlan& plan = plans_[round];
  plan.round = round;
  const int64_t mu = config_.steps_per_round, first_step = round * mu;
  const int64_t n = pool_.size();
  const int64_t k = config_.reference_mode == ReferenceMode::kNone ? 0 : config_.reference_size;
  std::vector<uint8_t> excluded(static_cast<size_t>(n), 0);
  for (const auto& [q, step] : leased_) excluded[q] = 1;

  if (config_.reference_mode == ReferenceMode::kPaper && k > 0) {
    if (plan.paper_refs.empty()) {
      // Phase one: the round's reference batch, rolled out and reported before training.
      if (estimator_ == nullptr || estimator_stale_) DOTS_RETURN_IF_ERROR(RebuildEstimatorLocked());
      ReferenceSamplingOptions uniform;
      uniform.strategy = ReferenceSampling::kUniform;
      DOTS_ASSIGN_OR_RETURN(plan.paper_refs,
                            SampleReferenceSet(*estimator_, dots::Estimates(), k, uniform, excluded,
                                               MixSeed(config_.seed, round, kTagPaperRef)));
      StepRecord& record = paper_ref_steps_[first_step];
      record.round = round;
      const absl::Time now = options_.clock();
      for (int64_t q : plan.paper_refs) {
        IssueLocked(first_step, record, q, ItemRole::kReference, /*training=*/false, now);
      }
      plan.paper_refs_unsettled = static_cast<int64_t>(plan.paper_refs.size());
      RunEvent event;
      RunEvent::PaperReferences* refs = event.mutable_paper_references();
      refs->set_round(round);
      refs->mutable_questions()->Add(plan.paper_refs.begin(), plan.paper_refs.end());
      refs->set_now_unix_micros(UnixMicros(now));
      LogLocked(event);
    }
    if (plan.paper_refs_unsettled > 0) return absl::OkStatus();  // phase two waits for reports
    for (int64_t q : plan.paper_refs) excluded[q] = 1;
  }

  std::vector<int64_t> label_refs;
  if (config_.reference_mode == ReferenceMode::kPaper) {
    label_refs = plan.paper_refs;
  } else if (config_.reference_mode == ReferenceMode::kInline && round > 0) {
    label_refs = plans_[round - 1].inline_refs;
  }
  DOTS_RETURN_IF_ERROR(RefreshLearnedModelLocked(round));
  DOTS_ASSIGN_OR_RETURN(dots::Estimates est, EstimateLocked(label_refs));
  if (config_.cooldown_steps > 0) {
    for (const auto& [q, step] : last_fresh_step_) {
      if (step >= first_step - config_.cooldown_steps) excluded[q] = 1;
    }
  }
  if (config_.reference_mode == ReferenceMode::kInline && k > 0) {
    ReferenceSamplingOptions ref_options;
    ref_options.strategy = config_.EffectiveReferenceSampling();
    ref_options.group_size = config_.group_size;
    DOTS_ASSIGN_OR_RETURN(plan.inline_refs,
                          SampleReferenceSet(*estimator_, est, k, ref_options, excluded,
                                             MixSeed(config_.seed, round, kTagReference)));
    for (int64_t q : plan.inline_refs) excluded[q] = 1;
  }
  // Enough candidates for the largest fresh share any step of the round can need (replay empty).
  const int64_t budget =
      std::max<int64_t>(0, mu * config_.batch_size - static_cast<int64_t>(plan.inline_refs.size()));
  SelectorOptions select;
  select.strategy = config_.selector_strategy;
  select.alpha = config_.alpha;
  select.tau = config_.tau;
  select.band_lo = config_.band_lo;
  select.band_hi = config_.band_hi;
  SelectorInput input;
  input.p_hat = est.p_hat;
  input.excluded = excluded;
  input.beta_a = est.beta_a;
  input.beta_b = est.beta_b;
  DOTS_ASSIGN_OR_RETURN(plan.candidates, SelectQuestions(input, budget, select,
                                                         MixSeed(config_.seed, round, kTagSelect)));
  plan.p_hat = est.p_hat;
  latest_p_hat_ = std::move(est.p_hat);
  plan.ready = true;
  ++stats_.rounds_planned;
  stats_.last_planning_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  changed_.SignalAll();
  LogPlanLocked(round);
  return absl::OkStatus();
}

absl::Status Run::ComposeStepLocked(int64_t step, absl::Time now) {
  const int64_t mu = config_.steps_per_round, round = step / mu, j = step % mu;
  RoundPlan& plan = plans_[round];
  StepRecord& record = steps_[step];
  record.round = round;
  // This step's share of the next round's inline references, balanced over the round's steps.
  const int64_t k = static_cast<int64_t>(plan.inline_refs.size());
  const int64_t ref_begin = j * k / mu, ref_end = (j + 1) * k / mu;
  // Round 0 trains on full fresh batches, as the paper does: replay starts with round 1.
  if (config_.replay_enabled && config_.fresh_fraction < 1 && round > 0) {
    replay_.EvictStale(max_policy_version_);
    ReplaySampleRequest request;
    request.step = step;
    request.policy_version = max_policy_version_;
    request.count = config_.batch_size - config_.FreshPerStep();
    request.p_hat = plan.p_hat;
    request.seed = MixSeed(config_.seed, static_cast<uint64_t>(step), kTagReplay);
    record.replay = replay_.Sample(request);
    // The paper's maintenance order: after sampling, keep only the newest C - delta*B old
    // groups, so the store holds at most C once this step's fresh groups arrive.
    replay_.TrimOldest(config_.replay.capacity_groups - config_.FreshPerStep());
  }
  const int64_t replayed = static_cast<int64_t>(record.replay.size());
  int64_t fresh = config_.batch_size - replayed;  // fill_fresh: the batch keeps its size B
  if (config_.replay_enabled && config_.underfill == ReplayUnderfill::kShrink && round > 0) {
    fresh = config_.FreshPerStep();
  }
  int64_t selected = std::max<int64_t>(0, fresh - (ref_end - ref_begin));
  while (selected > 0 && plan.cursor < plan.candidates.size()) {
    const int64_t q = plan.candidates[plan.cursor++];
    if (leased_.contains(q)) continue;
    IssueLocked(step, record, q, ItemRole::kFresh, /*training=*/true, now);
    last_fresh_step_[q] = step;
    --selected;
  }
  for (int64_t i = ref_begin; i < ref_end; ++i) {
    if (leased_.contains(plan.inline_refs[i])) continue;
    IssueLocked(step, record, plan.inline_refs[i], ItemRole::kReference, /*training=*/true, now);
  }
  stats_.replayed_groups += replayed;
  stats_.step = std::max(stats_.step, step);
  stats_.round = std::max(stats_.round, round);
  RetireLocked();
  return absl::OkStatus();
}

void Run::RetireLocked() {
  const int64_t mu = config_.steps_per_round;
  const int64_t keep_from = (stats_.round - kRetainedRounds) * mu;
  if (keep_from <= retired_below_) return;
  // Only whole settled steps go; an unsettled one (and everything after it) waits.
  int64_t below = retired_below_;
  while (below < keep_from) {
    auto it = steps_.find(below);
    if (it != steps_.end() && it->second.unsettled > 0) break;
    if (auto ref = paper_ref_steps_.find(below);
        ref != paper_ref_steps_.end() && ref->second.unsettled > 0) {
      break;
    }
    ++below;
  }
  if (below == retired_below_) return;
  steps_.erase(steps_.begin(), steps_.lower_bound(below));
  paper_ref_steps_.erase(paper_ref_steps_.begin(), paper_ref_steps_.lower_bound(below));
  reported_.erase(reported_.begin(), reported_.lower_bound({below, INT64_MIN}));
  // Plans of rounds whose steps are all gone, except the newest planned one.
  const int64_t first_kept_round = below / mu;
  for (auto it = plans_.begin(); it != plans_.end() && it->first < first_kept_round - 1;) {
    it = plans_.erase(it);
  }
  retired_below_ = below;
}

BatchSlice Run::SliceLocked(int64_t step, const StepRecord& record, bool reference_batch, int rank,
                            int world_size) {
  BatchSlice slice;
  slice.step = step;
  slice.round = record.round;
  slice.reference_batch = reference_batch;
  slice.batch_size = static_cast<int64_t>(record.items.size() + record.replay.size());
  const int64_t n = static_cast<int64_t>(record.items.size());
  for (int64_t i = rank * n / world_size; i < (rank + 1) * n / world_size; ++i) {
    const IssuedItem& item = record.items[i];
    const Question& q = pool_.question(item.question);
    slice.items.push_back({q.key, item.role, q.prompt, q.metadata_json});
  }
  const int64_t m = static_cast<int64_t>(record.replay.size());
  for (int64_t i = rank * m / world_size; i < (rank + 1) * m / world_size; ++i) {
    slice.replay.push_back(record.replay[i]);
  }
  return slice;
}

absl::StatusOr<BatchSlice> Run::NextBatch(int64_t step, int rank, int world_size,
                                          int64_t policy_version, absl::Time deadline) {
  absl::StatusOr<BatchSlice> slice;
  {
    MutexLock lock(&mu_);
    slice = NextBatchLocked(step, rank, world_size, policy_version, deadline);
  }
  // Also when the step was composed by another caller: nothing is returned before it is durable.
  DOTS_RETURN_IF_ERROR(AwaitDurable());
  return slice;
}

absl::StatusOr<BatchSlice> Run::NextBatchLocked(int64_t step, int rank, int world_size,
                                                int64_t policy_version, absl::Time deadline) {
  if (step < 0) return absl::InvalidArgumentError(absl::StrFormat("step: %d < 0", step));
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("world_size: %d < 1", world_size));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank: %d is outside [0, world_size = %d)", rank, world_size));
  }
  if (policy_version < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("policy_version: %d < 0", policy_version));
  }
  DOTS_RETURN_IF_ERROR(CheckNotSealedLocked());
  const int64_t mu = config_.steps_per_round, round = step / mu;
  ExpireLeasesLocked(options_.clock());
  if (auto it = steps_.find(step); it != steps_.end()) {
    return SliceLocked(step, it->second, false, rank, world_size);
  }
  if (step < retired_below_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "step %d was retired: a run keeps the batches of its last %d rounds (steps >= %d)", step,
        kRetainedRounds, retired_below_));
  }
  if (step > last_reported_step_ + mu) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "step %d is more than one round (%d steps) ahead of the last reported step %d: report "
        "the rollouts of earlier steps first",
        step, mu, last_reported_step_));
  }
  if (policy_version > max_policy_version_) {
    max_policy_version_ = policy_version;
    RunEvent event;
    event.set_policy_version(policy_version);
    LogLocked(event);
  }
  while (true) {
    DOTS_RETURN_IF_ERROR(CheckNotSealedLocked());  // a wait released the lock
    ExpireLeasesLocked(options_.clock());
    // Another caller may have composed the step while this one waited.
    if (auto it = steps_.find(step); it != steps_.end()) {
      return SliceLocked(step, it->second, false, rank, world_size);
    }
    RoundPlan* plan = plans_.contains(round) ? &plans_[round] : nullptr;
    if (plan != nullptr && !plan->paper_refs.empty() && plan->paper_refs_unsettled > 0) {
      if (step == round * mu) {
        return SliceLocked(step, paper_ref_steps_[step], true, rank, world_size);
      }
      return absl::FailedPreconditionError(absl::StrFormat(
          "step %d needs round %d's reference rollouts: %d of %d are not reported yet (NextBatch "
          "of step %d hands them out)",
          step, round, plan->paper_refs_unsettled, plan->paper_refs.size(), round * mu));
    }
    if (plan != nullptr && plan->ready) {
      const absl::Time now = options_.clock();
      DOTS_RETURN_IF_ERROR(ComposeStepLocked(step, now));
      RunEvent event;
      RunEvent::Compose* compose = event.mutable_compose();
      compose->set_step(step);
      compose->set_now_unix_micros(UnixMicros(now));
      compose->set_items(static_cast<int64_t>(steps_[step].items.size()));
      LogLocked(event);
      return SliceLocked(step, steps_[step], false, rank, world_size);
    }
    absl::Status inputs = RoundInputsCompleteLocked(round);
    if (inputs.ok()) {
      // Fail fast on what no amount of waiting fixes.
      if (pool_.size() == 0) {
        return absl::FailedPreconditionError(
            "the run's question pool is empty: upload questions first");
      }
      DOTS_RETURN_IF_ERROR(config_.ValidateForPool(pool_.size()));
      if (!planning_error_.ok()) return planning_error_;
    }
    if (inputs.ok() && !options_.background_planning) {
      DOTS_RETURN_IF_ERROR(PlanRoundLocked(round));
      continue;
    }
    if (inputs.ok()) changed_.SignalAll();  // wake the planner
    if (absl::Now() >= deadline) {
      if (!inputs.ok()) return inputs;
      return absl::DeadlineExceededError(
          absl::StrFormat("round %d is still being planned at the deadline", round));
    }
    changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + kPlannerTick));
  }
}

absl::StatusOr<ReportResult> Run::ReportRollouts(int64_t step, std::vector<RolloutReport> groups) {
  if (step < 0) return absl::InvalidArgumentError(absl::StrFormat("step: %d < 0", step));
  absl::StatusOr<ReportResult> result;
  {
    MutexLock lock(&mu_);
    DOTS_RETURN_IF_ERROR(CheckNotSealedLocked());
    result = ReportLocked(step, groups);
  }
  DOTS_RETURN_IF_ERROR(AwaitDurable());
  return result;
}

bool Run::FindIssuedLocked(int64_t step, int64_t question, StepRecord** record, size_t* pos) {
  *record = nullptr;
  for (auto* records : {&steps_, &paper_ref_steps_}) {
    auto it = records->find(step);
    if (it == records->end()) continue;
    if (auto p = it->second.position.find(question); p != it->second.position.end()) {
      *record = &it->second;
      *pos = p->second;
    }
  }
  return *record != nullptr;
}

absl::StatusOr<ReportResult> Run::ReportLocked(int64_t step, std::vector<RolloutReport>& groups) {
  ExpireLeasesLocked(options_.clock());
  ReportResult result;
  RunEvent event;
  RunEvent::Report* logged = event.mutable_report();
  logged->set_step(step);
  const int64_t rejected_before = stats_.rejected_reports;
  const int64_t duplicates_before = stats_.duplicate_reports;
  for (RolloutReport& g : groups) {
    auto reject = [&](const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      result.rejected.emplace_back(g.key, why);
      ++stats_.rejected_reports;
    };
    std::optional<int64_t> q = pool_.IndexOf(g.key);
    if (!q.has_value()) {
      reject("key: not in the run's question pool");
      continue;
    }
    StepRecord* record = nullptr;
    size_t pos = 0;
    if (step < retired_below_) {
      reject(absl::StrFormat(
          "step: %d was retired (a run keeps the batches of its last %d rounds, steps >= %d)", step,
          kRetainedRounds, retired_below_));
      continue;
    }
    if (!FindIssuedLocked(step, *q, &record, &pos)) {
      reject(absl::StrFormat("key: not handed out at step %d", step));
      continue;
    }
    if (static_cast<int>(g.rewards.size()) != config_.group_size) {
      reject(absl::StrFormat("rewards: %d values, the run's group_size is %d", g.rewards.size(),
                             config_.group_size));
      continue;
    }
    bool bad = false;
    for (float r : g.rewards) bad |= !(r >= 0 && r <= 1);
    if (bad) {
      reject("rewards: every reward must be a number in [0, 1]");
      continue;
    }
    if (g.policy_version < 0) {
      reject(absl::StrFormat("policy_version: %d < 0", g.policy_version));
      continue;
    }
    if (static_cast<int64_t>(g.payload.size() + g.key.size()) + 4 * config_.group_size +
            kReplayGroupOverheadBytes >
        config_.replay.capacity_bytes) {
      reject(
          absl::StrFormat("payload: %d bytes do not fit the replay store (replay.capacity_bytes "
                          "= %d)",
                          g.payload.size(), config_.replay.capacity_bytes));
      continue;
    }
    if (!reported_.insert({step, *q}).second) {
      ++result.duplicates;
      ++stats_.duplicate_reports;
      continue;
    }
    if (store_ != nullptr) {
      state::v1::ReplayGroupRecord* r = logged->add_groups();
      r->set_key(g.key);
      r->set_policy_version(g.policy_version);
      r->mutable_rewards()->Add(g.rewards.begin(), g.rewards.end());
      r->set_payload(g.payload);
    }
    DOTS_RETURN_IF_ERROR(ApplyReportLocked(step, *q, *record, pos, std::move(g), &result));
  }
  logged->set_rejected(stats_.rejected_reports - rejected_before);
  logged->set_duplicates(stats_.duplicate_reports - duplicates_before);
  if (logged->groups_size() > 0 || logged->rejected() > 0 || logged->duplicates() > 0) {
    LogLocked(event);
  }
  if (result.accepted > 0) changed_.SignalAll();
  return result;
}

absl::Status Run::ApplyReportLocked(int64_t step, int64_t q, StepRecord& record, size_t pos,
                                    RolloutReport g, ReportResult* result) {
  double sum = 0;
  for (float r : g.rewards) sum += r;
  // A replayed report can precede the rebuild that planning did live after the pool grew.
  if (estimator_ == nullptr || q >= estimator_->size()) {
    DOTS_RETURN_IF_ERROR(RebuildEstimatorLocked());
  }
  DOTS_RETURN_IF_ERROR(estimator_->Observe(q, sum, config_.group_size, g.policy_version));
  SettleLocked(step, q);
  const IssuedItem& item = record.items[pos];
  const double mean = sum / config_.group_size;
  if (item.role == ItemRole::kFresh) {
    auto plan = plans_.find(record.round);
    if (plan != plans_.end() && q < static_cast<int64_t>(plan->second.p_hat.size())) {
      result->fresh_abs_errors.push_back(std::abs(plan->second.p_hat[q] - mean));
    }
  }
  ++result->accepted;
  ++stats_.reported_groups;
  ++record.reported;
  if (mean > 0 && mean < 1) {
    ++record.effective;
    ++stats_.effective_groups;
  } else {
    ++(mean >= 1 ? stats_.solve_all_groups : stats_.solve_none_groups);
  }
  max_policy_version_ = std::max(max_policy_version_, g.policy_version);
  last_reported_step_ = std::max(last_reported_step_, step);
  if (item.training && config_.replay_enabled) {
    ReplayGroup group;
    group.key = std::move(g.key);
    group.question = q;
    group.step = step;
    group.policy_version = g.policy_version;
    group.rewards = std::move(g.rewards);
    group.payload = std::move(g.payload);
    DOTS_RETURN_IF_ERROR(replay_.Insert(std::move(group)).status());
  }
  return absl::OkStatus();
}

bool Run::WantPlanningLocked() {
  // The lowest round not planned yet whose inputs are complete.
  int64_t round = plans_.empty() ? 0 : plans_.begin()->first;
  while (plans_.contains(round) && plans_[round].ready) ++round;
  if (plans_.contains(round) && !plans_[round].paper_refs.empty() &&
      plans_[round].paper_refs_unsettled > 0) {
    return false;
  }
  return RoundInputsCompleteLocked(round).ok() && pool_.size() > 0;
}

void Run::PlannerLoop() {
  MutexLock lock(&mu_);
  while (!shutdown_) {
    ExpireLeasesLocked(options_.clock());
    if (WantPlanningLocked()) {
      int64_t round = plans_.empty() ? 0 : plans_.begin()->first;
      while (plans_.contains(round) && plans_[round].ready) ++round;
      planning_error_ = PlanRoundLocked(round);
      if (!planning_error_.ok()) {
        // Surfaced to the NextBatch that needs this round; retried after the next change.
        changed_.SignalAll();
        changed_.WaitWithTimeout(&mu_, kPlannerTick);
      }
      continue;
    }
    changed_.WaitWithTimeout(&mu_, kPlannerTick);
  }
}

RunStats Run::Stats() {
  MutexLock lock(&mu_);
  ExpireLeasesLocked(options_.clock());
  RunStats s = stats_;
  s.pool_size = pool_.size();
  s.replay_groups = replay_.size();
  s.replay_bytes = replay_.bytes();
  s.leases_outstanding = static_cast<int64_t>(leased_.size());
  s.policy_version = max_policy_version_;
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    if (it->second.unsettled == 0 && it->second.reported > 0) {
      s.effective_ratio_last_step =
          static_cast<double>(it->second.effective) / static_cast<double>(it->second.reported);
      s.effective_last_step_index = it->first;
      break;
    }
  }
  return s;
}

absl::StatusOr<std::vector<QuestionEstimate>> Run::GetEstimates(
    const std::vector<std::string>& keys) {
  MutexLock lock(&mu_);
  if (static_cast<int64_t>(latest_p_hat_.size()) != pool_.size() && pool_.size() > 0) {
    // A read: the estimator's recalibration bookkeeping must not change (it is not logged).
    if (estimator_ == nullptr || estimator_stale_) DOTS_RETURN_IF_ERROR(RebuildEstimatorLocked());
    EstimatorState saved = estimator_->ExportState();
    DOTS_ASSIGN_OR_RETURN(dots::Estimates est, EstimateLocked({}));
    DOTS_RETURN_IF_ERROR(estimator_->RestoreState(std::move(saved)));
    latest_p_hat_ = std::move(est.p_hat);
  }
  std::vector<int64_t> indices;
  if (keys.empty()) {
    for (int64_t q = 0; q < pool_.size(); ++q) indices.push_back(q);
  }
  for (const std::string& key : keys) {
    std::optional<int64_t> q = pool_.IndexOf(key);
    if (!q.has_value()) {
      return absl::NotFoundError(absl::StrFormat("keys: \"%s\" is not in the run's pool", key));
    }
    indices.push_back(*q);
  }
  // After a restart the learned state waits in restored_estimator_ until the estimator is built.
  const std::vector<QuestionHistory>* histories = estimator_ != nullptr ? &estimator_->histories()
                                                  : restored_estimator_.has_value()
                                                      ? &restored_estimator_->histories
                                                      : nullptr;
  std::vector<QuestionEstimate> out;
  out.reserve(indices.size());
  for (int64_t q : indices) {
    QuestionEstimate e;
    e.key = pool_.question(q).key;
    e.p_hat = latest_p_hat_[q];
    if (histories != nullptr && q < static_cast<int64_t>(histories->size())) {
      e.observations = (*histories)[q].observations;
      e.last_policy_version = (*histories)[q].last_version;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace dots
