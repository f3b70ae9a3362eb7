// Run's durability: the event log, snapshots, and rebuilding a run from the store (core/run/run.h).
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/run/run.h"
#include "core/util/mutex.h"
#include "core/util/status_macros.h"
#include "dots/state/v1/state.pb.h"

namespace dots {
namespace {

using state::v1::RunEvent;
using state::v1::RunSnapshot;

// A snapshot is written when the events since the last one exceed the larger of this and twice
// the last snapshot's size: restart replays a bounded tail (a few seconds of reading), and
// snapshots add at most half again to the bytes written.
constexpr int64_t kMinSnapshotIntervalBytes = int64_t{256} << 20;
// Pool rows are enqueued in batches of about this size.
constexpr int64_t kPoolBatchBytes = int64_t{64} << 20;

absl::Time FromMicros(int64_t micros) { return absl::FromUnixMicros(micros); }

void ToRecord(const ReplayGroup& g, state::v1::ReplayGroupRecord* r, bool with_payload = true) {
  r->set_key(g.key);
  r->set_question(g.question);
  r->set_step(g.step);
  r->set_policy_version(g.policy_version);
  r->mutable_rewards()->Add(g.rewards.begin(), g.rewards.end());
  if (with_payload) r->set_payload(g.payload);
  r->set_payload_in_store(!with_payload);
  r->set_replays(g.replays);
  r->set_sequence(g.sequence);
}

ReplayGroup FromRecord(const state::v1::ReplayGroupRecord& r) {
  ReplayGroup g;
  g.key = r.key();
  g.question = r.question();
  g.step = r.step();
  g.policy_version = r.policy_version();
  g.rewards.assign(r.rewards().begin(), r.rewards().end());
  g.payload = r.payload();
  g.replays = r.replays();
  g.sequence = r.sequence();
  return g;
}

template <typename T>
std::vector<T> ToVector(const google::protobuf::RepeatedField<T>& field) {
  return std::vector<T>(field.begin(), field.end());
}

absl::Status DataLoss(const std::string& run, std::string_view what) {
  return absl::DataLossError(absl::StrCat("state of run \"", run, "\": ", std::string(what),
                                          "; the state directory is left untouched"));
}

}  // namespace

void Run::LogLocked(RunEvent& event, std::vector<rocksdb::WriteBatch> extra) {
  if (store_ == nullptr || replaying_) return;
  for (rocksdb::WriteBatch& batch : extra) last_ticket_ = store_->Enqueue(std::move(batch));
  const std::string bytes = event.SerializeAsString();
  rocksdb::WriteBatch batch;
  batch.Put(EventKey(id_, ++last_event_), bytes);
  last_ticket_ = store_->Enqueue(std::move(batch));
  log_bytes_ += static_cast<int64_t>(bytes.size());
  if (log_bytes_ > std::max(kMinSnapshotIntervalBytes, 2 * snapshot_bytes_)) SnapshotLocked();
}

absl::Status Run::AwaitDurable() {
  StateStore* store;
  uint64_t ticket;
  {
    MutexLock lock(&mu_);
    store = store_;
    ticket = last_ticket_;
  }
  if (store == nullptr || ticket == 0) return absl::OkStatus();
  absl::Status s = store->WaitDurable(ticket);
  if (!s.ok()) broken_.store(true, std::memory_order_release);
  return s;
}

absl::Status Run::CheckNotSealedLocked() const {
  if (!sealed_) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "run \"", id_,
      "\" is sealed: it is being moved to another server (dotsctl cluster rebalance); retry"));
}

bool Run::sealed() {
  MutexLock lock(&mu_);
  return sealed_;
}

absl::Status Run::SetSealed(bool sealed) {
  StateStore* store;
  bool was_sealed;
  {
    MutexLock lock(&mu_);
    was_sealed = sealed_;
    if (sealed) sealed_ = true;  // no change is accepted from here on
    store = store_;
  }
  absl::Status written = AwaitDurable();  // the changes accepted before the seal
  if (written.ok() && store != nullptr) {
    written =
        UpdateRunMeta(*store, id_, [sealed](state::v1::RunMeta& meta) { meta.set_sealed(sealed); });
  }
  MutexLock lock(&mu_);
  sealed_ = written.ok() ? sealed : was_sealed;
  return written;
}

void Run::DetachFromStore() {
  MutexLock lock(&mu_);
  store_ = nullptr;
}

absl::Status Run::Checkpoint() {
  {
    MutexLock lock(&mu_);
    if (store_ == nullptr) return absl::OkStatus();
    SnapshotLocked();
  }
  return AwaitDurable();
}

void Run::SnapshotLocked() {
  RunSnapshot snapshot;
  FillSnapshotLocked(&snapshot);
  const std::string bytes = snapshot.SerializeAsString();
  rocksdb::WriteBatch batch;
  batch.Put(RunSnapshotKey(id_), bytes);
  batch.DeleteRange(EventKey(id_, 0), EventKey(id_, last_event_ + 1));
  last_ticket_ = store_->Enqueue(std::move(batch));
  snapshot_bytes_ = static_cast<int64_t>(bytes.size());
  log_bytes_ = 0;
}

std::vector<rocksdb::WriteBatch> Run::PoolRowsLocked(const std::vector<int64_t>& indices) {
  std::vector<rocksdb::WriteBatch> batches(1);
  int64_t bytes = 0;
  state::v1::QuestionRecord record;
  const int dim = pool_.dim();
  for (int64_t i : indices) {
    const Question& q = pool_.question(i);
    record.set_key(q.key);
    record.set_prompt(q.prompt);
    record.set_metadata_json(q.metadata_json);
    record.set_has_prior(q.prior.has_value());
    record.set_prior(q.prior.value_or(0));
    if (dim > 0) {
      record.set_embedding(pool_.embeddings().row(i), sizeof(float) * static_cast<size_t>(dim));
    } else {
      record.clear_embedding();
    }
    const std::string value = record.SerializeAsString();
    if (bytes + static_cast<int64_t>(value.size()) > kPoolBatchBytes && bytes > 0) {
      batches.emplace_back();
      bytes = 0;
    }
    batches.back().Put(QuestionKey(id_, i), value);
    bytes += static_cast<int64_t>(value.size());
  }
  batches.back().Put(PoolSizeKey(id_), std::to_string(pool_.size()));
  return batches;
}

void Run::PlanToRecord(int64_t round, const RoundPlan& plan, state::v1::RoundPlanRecord* r) {
  r->set_round(round);
  r->set_ready(plan.ready);
  r->mutable_paper_refs()->Add(plan.paper_refs.begin(), plan.paper_refs.end());
  r->set_paper_refs_unsettled(plan.paper_refs_unsettled);
  r->mutable_inline_refs()->Add(plan.inline_refs.begin(), plan.inline_refs.end());
  r->mutable_candidates()->Add(plan.candidates.begin(), plan.candidates.end());
  r->set_cursor(static_cast<int64_t>(plan.cursor));
  r->mutable_p_hat()->Add(plan.p_hat.begin(), plan.p_hat.end());
}

absl::Status Run::CheckStoredQuestionLocked(int64_t q, std::string_view where) const {
  if (q >= 0 && q < pool_.size()) return absl::OkStatus();
  return DataLoss(id_, absl::StrFormat("%s: question %d outside the pool of %d", std::string(where),
                                       q, pool_.size()));
}

absl::Status Run::PlanFromRecordLocked(const state::v1::RoundPlanRecord& r) {
  const std::string where = absl::StrCat("plan of round ", r.round());
  for (const auto* list : {&r.candidates(), &r.inline_refs(), &r.paper_refs()}) {
    for (int64_t q : *list) DOTS_RETURN_IF_ERROR(CheckStoredQuestionLocked(q, where));
  }
  RoundPlan& plan = plans_[r.round()];
  plan.round = r.round();
  plan.ready = r.ready();
  plan.paper_refs = ToVector(r.paper_refs());
  plan.paper_refs_unsettled = r.paper_refs_unsettled();
  plan.inline_refs = ToVector(r.inline_refs());
  plan.candidates = ToVector(r.candidates());
  plan.cursor = static_cast<size_t>(r.cursor());
  plan.p_hat = ToVector(r.p_hat());
  return absl::OkStatus();
}

namespace {

void ModelStatsToRecord(const RunStats& stats, state::v1::ModelStatsRecord* r) {
  r->set_version(stats.model_version);
  r->set_labels(stats.model_labels);
  r->set_training_loss(stats.model_training_loss);
  r->set_training_seconds(stats.model_training_seconds);
  r->set_out_of_sample_pearson(stats.model_out_of_sample_pearson);
}

void ModelStatsFromRecord(const state::v1::ModelStatsRecord& r, RunStats* stats) {
  stats->model_version = r.version();
  stats->model_labels = r.labels();
  stats->model_training_loss = r.training_loss();
  stats->model_training_seconds = r.training_seconds();
  stats->model_out_of_sample_pearson = r.out_of_sample_pearson();
}

}  // namespace

void Run::LogPlanLocked(int64_t round) {
  if (store_ == nullptr || replaying_) return;
  RunEvent event;
  RunEvent::Plan* recorded = event.mutable_plan();
  PlanToRecord(round, plans_[round], recorded->mutable_plan());
  recorded->set_planning_seconds(stats_.last_planning_seconds);
  const std::vector<float>& raw = estimator_->last_estimate();
  recorded->mutable_raw_estimate()->Add(raw.begin(), raw.end());
  recorded->set_estimate_version(max_policy_version_);
  if (stats_.model_version > 0) ModelStatsToRecord(stats_, recorded->mutable_model());
  LogLocked(event);
}

void Run::FillSnapshotLocked(RunSnapshot* snap) {
  snap->set_last_event(last_event_);
  state::v1::RunStatsRecord* st = snap->mutable_stats();
  st->set_step(stats_.step);
  st->set_round(stats_.round);
  st->set_reported_groups(stats_.reported_groups);
  st->set_duplicate_reports(stats_.duplicate_reports);
  st->set_rejected_reports(stats_.rejected_reports);
  st->set_effective_groups(stats_.effective_groups);
  st->set_solve_all_groups(stats_.solve_all_groups);
  st->set_solve_none_groups(stats_.solve_none_groups);
  st->set_replayed_groups(stats_.replayed_groups);
  st->set_leases_expired(stats_.leases_expired);
  st->set_rounds_planned(stats_.rounds_planned);
  st->set_last_planning_seconds(stats_.last_planning_seconds);
  ModelStatsToRecord(stats_, st->mutable_model());
  snap->set_max_policy_version(max_policy_version_);
  snap->set_last_reported_step(last_reported_step_);
  snap->set_retired_below(retired_below_);
  snap->mutable_latest_p_hat()->Add(latest_p_hat_.begin(), latest_p_hat_.end());

  std::optional<EstimatorState> learned;
  if (estimator_ != nullptr) {
    learned = estimator_->ExportState();
  } else if (restored_estimator_.has_value()) {
    learned = *restored_estimator_;
  }
  if (learned.has_value()) {
    state::v1::EstimatorStateRecord* e = snap->mutable_estimator();
    for (const QuestionHistory& h : learned->histories) {
      state::v1::HistoryRecord* r = e->add_histories();
      r->set_successes(h.successes);
      r->set_failures(h.failures);
      r->set_last_version(h.last_version);
      r->set_last_rate(h.last_rate);
      r->set_observations(h.observations);
    }
    e->mutable_last_estimate()->Add(learned->last_estimate.begin(), learned->last_estimate.end());
    for (const EstimatorOutcome& o : learned->outcomes) {
      state::v1::OutcomeRecord* r = e->add_outcomes();
      r->set_version(o.version);
      r->set_estimate(o.estimate);
      r->set_observed(o.observed);
    }
  }
  for (const ReplayGroup* g : replay_.Groups()) ToRecord(*g, snap->add_replay_store());
  const ReplayStore::Counters counters = replay_.counters();
  state::v1::ReplayCountersRecord* c = snap->mutable_replay_counters();
  c->set_evicted(counters.evicted);
  c->set_dropped_uninformative(counters.dropped_uninformative);
  c->set_superseded(counters.superseded);
  c->set_next_sequence(counters.next_sequence);
  c->set_last_sample_mean_age(counters.last_sample_mean_age);

  for (const auto& [round, plan] : plans_) PlanToRecord(round, plan, snap->add_plans());
  // A step's replay groups are copies of groups the store usually still holds: their payloads
  // go into the snapshot once, with the store's group.
  absl::flat_hash_set<std::pair<std::string, int64_t>> in_store;
  for (const ReplayGroup* g : replay_.Groups()) in_store.insert({g->key, g->step});
  auto fill_steps = [&in_store](
                        const std::map<int64_t, StepRecord>& records,
                        google::protobuf::RepeatedPtrField<state::v1::StepRecordProto>* out) {
    for (const auto& [step, record] : records) {
      state::v1::StepRecordProto* r = out->Add();
      r->set_step(step);
      r->set_round(record.round);
      for (size_t i = 0; i < record.items.size(); ++i) {
        state::v1::IssuedItemRecord* item = r->add_items();
        item->set_question(record.items[i].question);
        item->set_reference(record.items[i].role == ItemRole::kReference);
        item->set_training(record.items[i].training);
        item->set_settled(record.settled[i] != 0);
      }
      for (const ReplayGroup& g : record.replay) {
        ToRecord(g, r->add_replay(), /*with_payload=*/!in_store.contains({g.key, g.step}));
      }
      r->set_reported(record.reported);
      r->set_effective(record.effective);
    }
  };
  fill_steps(steps_, snap->mutable_steps());
  fill_steps(paper_ref_steps_, snap->mutable_paper_ref_steps());
  for (const auto& [deadline, lease] : lease_deadlines_) {
    state::v1::LeaseRecord* r = snap->add_leases();
    r->set_step(lease.step);
    r->set_question(lease.question);
    r->set_deadline_unix_micros(absl::ToUnixMicros(deadline));
  }
  for (const auto& [question, step] : leased_) {
    snap->add_leased_question(question);
    snap->add_leased_step(step);
  }
  for (const auto& [question, step] : last_fresh_step_) {
    snap->add_last_fresh_question(question);
    snap->add_last_fresh_step(step);
  }
  for (const auto& [step, question] : reported_) {
    snap->add_reported_step(step);
    snap->add_reported_question(question);
  }
}

absl::Status Run::RestoreSnapshotLocked(const RunSnapshot& snap) {
  const int64_t n = pool_.size();
  auto check_question = [&](int64_t q, std::string_view where) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return CheckStoredQuestionLocked(q, absl::StrCat("snapshot ", std::string(where)));
  };
  last_event_ = snap.last_event();
  const state::v1::RunStatsRecord& st = snap.stats();
  stats_.step = st.step();
  stats_.round = st.round();
  stats_.reported_groups = st.reported_groups();
  stats_.duplicate_reports = st.duplicate_reports();
  stats_.rejected_reports = st.rejected_reports();
  stats_.effective_groups = st.effective_groups();
  stats_.solve_all_groups = st.solve_all_groups();
  stats_.solve_none_groups = st.solve_none_groups();
  stats_.replayed_groups = st.replayed_groups();
  stats_.leases_expired = st.leases_expired();
  stats_.rounds_planned = st.rounds_planned();
  stats_.last_planning_seconds = st.last_planning_seconds();
  ModelStatsFromRecord(st.model(), &stats_);
  max_policy_version_ = snap.max_policy_version();
  last_reported_step_ = snap.last_reported_step();
  retired_below_ = snap.retired_below();
  latest_p_hat_ = ToVector(snap.latest_p_hat());

  if (snap.has_estimator()) {
    EstimatorState learned;
    for (const state::v1::HistoryRecord& r : snap.estimator().histories()) {
      learned.histories.push_back(
          {r.successes(), r.failures(), r.last_version(), r.last_rate(), r.observations()});
    }
    learned.last_estimate = ToVector(snap.estimator().last_estimate());
    for (const state::v1::OutcomeRecord& r : snap.estimator().outcomes()) {
      learned.outcomes.push_back({r.version(), r.estimate(), r.observed()});
    }
    if (static_cast<int64_t>(learned.histories.size()) > n ||
        static_cast<int64_t>(learned.last_estimate.size()) > n) {
      return DataLoss(id_, "snapshot estimator: more questions than the pool holds");
    }
    restored_estimator_ = std::move(learned);
  }
  std::vector<ReplayGroup> groups;
  for (const state::v1::ReplayGroupRecord& r : snap.replay_store()) {
    groups.push_back(FromRecord(r));
  }
  if (absl::Status s = replay_.Restore(std::move(groups)); !s.ok()) {
    return DataLoss(id_, absl::StrCat("snapshot replay store: ", s.message()));
  }
  const state::v1::ReplayCountersRecord& c = snap.replay_counters();
  replay_.RestoreCounters({c.evicted(), c.dropped_uninformative(), c.superseded(),
                           c.next_sequence(), c.last_sample_mean_age()});

  for (const state::v1::RoundPlanRecord& r : snap.plans()) {
    DOTS_RETURN_IF_ERROR(PlanFromRecordLocked(r));
  }
  absl::flat_hash_map<std::pair<std::string, int64_t>, std::string> store_payloads;
  for (const state::v1::ReplayGroupRecord& r : snap.replay_store()) {
    store_payloads[{r.key(), r.step()}] = r.payload();
  }
  auto restore_steps = [&](const google::protobuf::RepeatedPtrField<state::v1::StepRecordProto>& in,
                           std::map<int64_t, StepRecord>* out)
                           ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    for (const state::v1::StepRecordProto& r : in) {
      StepRecord& record = (*out)[r.step()];
      record.round = r.round();
      for (const state::v1::IssuedItemRecord& item : r.items()) {
        DOTS_RETURN_IF_ERROR(check_question(item.question(), "step"));
        record.position[item.question()] = record.items.size();
        record.items.push_back({item.question(),
                                item.reference() ? ItemRole::kReference : ItemRole::kFresh,
                                item.training()});
        record.settled.push_back(item.settled() ? 1 : 0);
        if (!item.settled()) ++record.unsettled;
      }
      for (const state::v1::ReplayGroupRecord& g : r.replay()) {
        if (g.question() != -1) DOTS_RETURN_IF_ERROR(check_question(g.question(), "step replay"));
        record.replay.push_back(FromRecord(g));
        if (g.payload_in_store()) {
          auto it = store_payloads.find({g.key(), g.step()});
          if (it == store_payloads.end()) {
            return DataLoss(id_, absl::StrFormat("snapshot step %d: replayed group \"%s\"@%d has "
                                                 "no payload",
                                                 r.step(), g.key(), g.step()));
          }
          record.replay.back().payload = it->second;
        }
      }
      record.reported = r.reported();
      record.effective = r.effective();
    }
    return absl::OkStatus();
  };
  DOTS_RETURN_IF_ERROR(restore_steps(snap.steps(), &steps_));
  DOTS_RETURN_IF_ERROR(restore_steps(snap.paper_ref_steps(), &paper_ref_steps_));
  for (const state::v1::ReplayGroupRecord& r : snap.replay_store()) {
    if (r.question() != -1) DOTS_RETURN_IF_ERROR(check_question(r.question(), "replay store"));
  }
  for (const state::v1::LeaseRecord& r : snap.leases()) {
    DOTS_RETURN_IF_ERROR(check_question(r.question(), "lease"));
    lease_deadlines_.emplace(FromMicros(r.deadline_unix_micros()), Lease{r.step(), r.question()});
  }
  if (snap.leased_question_size() != snap.leased_step_size() ||
      snap.last_fresh_question_size() != snap.last_fresh_step_size() ||
      snap.reported_step_size() != snap.reported_question_size()) {
    return DataLoss(id_, "snapshot: paired lists of different lengths");
  }
  for (int i = 0; i < snap.leased_question_size(); ++i) {
    DOTS_RETURN_IF_ERROR(check_question(snap.leased_question(i), "leased"));
    leased_[snap.leased_question(i)] = snap.leased_step(i);
  }
  for (int i = 0; i < snap.last_fresh_question_size(); ++i) {
    DOTS_RETURN_IF_ERROR(check_question(snap.last_fresh_question(i), "last fresh step"));
    last_fresh_step_[snap.last_fresh_question(i)] = snap.last_fresh_step(i);
  }
  for (int i = 0; i < snap.reported_step_size(); ++i) {
    DOTS_RETURN_IF_ERROR(check_question(snap.reported_question(i), "reported"));
    reported_.insert({snap.reported_step(i), snap.reported_question(i)});
  }
  if (static_cast<int64_t>(latest_p_hat_.size()) > n) {
    return DataLoss(id_, "snapshot: more estimates than the pool holds");
  }
  return absl::OkStatus();
}

absl::Status Run::ApplyEventLocked(const RunEvent& event) {
  switch (event.kind_case()) {
    case RunEvent::kCompose: {
      const RunEvent::Compose& c = event.compose();
      if (steps_.contains(c.step())) {
        return DataLoss(id_, absl::StrFormat("step %d composed twice", c.step()));
      }
      RoundPlan* plan = plans_.contains(c.step() / config_.steps_per_round)
                            ? &plans_[c.step() / config_.steps_per_round]
                            : nullptr;
      if (plan == nullptr || !plan->ready) {
        return DataLoss(id_,
                        absl::StrFormat("step %d composed before its round was planned", c.step()));
      }
      DOTS_RETURN_IF_ERROR(ComposeStepLocked(c.step(), FromMicros(c.now_unix_micros())));
      const int64_t items = static_cast<int64_t>(steps_[c.step()].items.size());
      if (items != c.items()) {
        return DataLoss(id_, absl::StrFormat("step %d replays to %d items, %d were served",
                                             c.step(), items, c.items()));
      }
      return absl::OkStatus();
    }
    case RunEvent::kReport: {
      const RunEvent::Report& r = event.report();
      for (const state::v1::ReplayGroupRecord& g : r.groups()) {
        std::optional<int64_t> q = pool_.IndexOf(g.key());
        StepRecord* record = nullptr;
        size_t pos = 0;
        if (!q.has_value() || !FindIssuedLocked(r.step(), *q, &record, &pos) ||
            !reported_.insert({r.step(), *q}).second) {
          return DataLoss(id_, absl::StrFormat("report of \"%s\" at step %d does not replay",
                                               g.key(), r.step()));
        }
        RolloutReport report;
        report.key = g.key();
        report.rewards.assign(g.rewards().begin(), g.rewards().end());
        report.policy_version = g.policy_version();
        report.payload = g.payload();
        ReportResult ignored;
        DOTS_RETURN_IF_ERROR(
            ApplyReportLocked(r.step(), *q, *record, pos, std::move(report), &ignored));
      }
      stats_.duplicate_reports += r.duplicates();
      stats_.rejected_reports += r.rejected();
      return absl::OkStatus();
    }
    case RunEvent::kExpire:
      ExpireLeasesLocked(FromMicros(event.expire().now_unix_micros()));
      return absl::OkStatus();
    case RunEvent::kPaperReferences: {
      const RunEvent::PaperReferences& p = event.paper_references();
      const int64_t first_step = p.round() * config_.steps_per_round;
      RoundPlan& plan = plans_[p.round()];
      plan.round = p.round();
      plan.paper_refs = ToVector(p.questions());
      StepRecord& record = paper_ref_steps_[first_step];
      record.round = p.round();
      for (int64_t q : plan.paper_refs) {
        DOTS_RETURN_IF_ERROR(CheckStoredQuestionLocked(q, "paper references"));
        IssueLocked(first_step, record, q, ItemRole::kReference, /*training=*/false,
                    FromMicros(p.now_unix_micros()));
      }
      plan.paper_refs_unsettled = static_cast<int64_t>(plan.paper_refs.size());
      return absl::OkStatus();
    }
    case RunEvent::kPlan: {
      const state::v1::RoundPlanRecord& r = event.plan().plan();
      DOTS_RETURN_IF_ERROR(PlanFromRecordLocked(r));
      const RoundPlan& plan = plans_[r.round()];
      latest_p_hat_ = plan.p_hat;
      ++stats_.rounds_planned;
      stats_.last_planning_seconds = event.plan().planning_seconds();
      if (event.plan().has_model()) ModelStatsFromRecord(event.plan().model(), &stats_);
      if (event.plan().raw_estimate_size() > 0) {
        std::vector<float> raw = ToVector(event.plan().raw_estimate());
        if (estimator_ != nullptr) {
          estimator_->RecordEstimate(std::move(raw), event.plan().estimate_version());
        } else {
          if (!restored_estimator_.has_value()) restored_estimator_.emplace();
          restored_estimator_->last_estimate = std::move(raw);
          const int64_t oldest =
              event.plan().estimate_version() - config_.estimator.options.recalibration_window;
          std::erase_if(restored_estimator_->outcomes,
                        [&](const EstimatorOutcome& o) { return o.version < oldest; });
        }
      }
      return absl::OkStatus();
    }
    case RunEvent::kUpsert:
      estimator_stale_ = true;
      for (auto it = plans_.begin(); it != plans_.end();) {
        it = it->second.ready || !it->second.paper_refs.empty() ? std::next(it) : plans_.erase(it);
      }
      return absl::OkStatus();
    case RunEvent::kPolicyVersion:
      max_policy_version_ = std::max(max_policy_version_, event.policy_version());
      return absl::OkStatus();
    case RunEvent::KIND_NOT_SET:
      break;
  }
  return DataLoss(id_, "an event of an unknown kind (written by a newer dots-server?)");
}

absl::Status Run::LoadLocked() {
  StateStore* store = options_.store;
  // The pool, in index order, into memory reserved up front when its size is known.
  if (absl::StatusOr<std::string> size = store->Get(PoolSizeKey(id_)); size.ok()) {
    int64_t n = 0;
    if (absl::SimpleAtoi(*size, &n) && n > 0) pool_.Reserve(n);
  }
  int64_t expected = 0;
  std::vector<float> embedding;  // reused: one allocation for the whole pool
  DOTS_RETURN_IF_ERROR(store->Scan(
      QuestionPrefix(id_),
      // Called by Scan on this thread, under the lock LoadLocked holds.
      [&](std::string_view key, std::string_view value)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
            if (key != QuestionKey(id_, expected)) {
              return DataLoss(id_, absl::StrFormat("pool row %d is missing", expected));
            }
            state::v1::QuestionRecord record;
            if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
              return DataLoss(id_, absl::StrFormat("pool row %d does not parse", expected));
            }
            Question q;
            q.key = record.key();
            q.prompt = record.prompt();
            q.metadata_json = record.metadata_json();
            if (record.has_prior()) q.prior = record.prior();
            embedding.resize(record.embedding().size() / sizeof(float));
            if (!embedding.empty()) {
              std::memcpy(embedding.data(), record.embedding().data(),
                          embedding.size() * sizeof(float));
            }
            if (absl::Status s = pool_.Add(std::move(q), embedding); !s.ok()) {
              return DataLoss(id_, absl::StrFormat("pool row %d: %s", expected, s.message()));
            }
            ++expected;
            return absl::OkStatus();
          }));
  absl::StatusOr<std::string> snapshot = store->Get(RunSnapshotKey(id_));
  if (snapshot.ok()) {
    RunSnapshot snap;
    if (!snap.ParseFromString(*snapshot)) return DataLoss(id_, "the snapshot does not parse");
    DOTS_RETURN_IF_ERROR(RestoreSnapshotLocked(snap));
    snapshot_bytes_ = static_cast<int64_t>(snapshot->size());
  } else if (!absl::IsNotFound(snapshot.status())) {
    return snapshot.status();
  }
  if (pool_.size() > 0) estimator_stale_ = true;
  DOTS_RETURN_IF_ERROR(store->Scan(
      EventPrefix(id_),
      // Called by Scan on this thread, under the lock LoadLocked holds.
      [&](std::string_view key, std::string_view value)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
            if (key < EventKey(id_, last_event_ + 1)) return absl::OkStatus();
            if (key != EventKey(id_, last_event_ + 1)) {
              return DataLoss(id_, absl::StrFormat("event %d is missing", last_event_ + 1));
            }
            RunEvent event;
            if (!event.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
              return DataLoss(id_, absl::StrFormat("event %d does not parse", last_event_ + 1));
            }
            DOTS_RETURN_IF_ERROR(ApplyEventLocked(event));
            ++last_event_;
            log_bytes_ += static_cast<int64_t>(value.size());
            return absl::OkStatus();
          }));
  // A run that had an estimator gets it back now (embedding matrix, cached projections), so
  // the restart, not the first call after it, pays for the rebuild.
  if (pool_.size() > 0 && (estimator_ != nullptr || restored_estimator_.has_value()) &&
      (estimator_ == nullptr || estimator_stale_)) {
    absl::Status rebuilt = RebuildEstimatorLocked();
    if (!rebuilt.ok()) return DataLoss(id_, absl::StrCat("estimator: ", rebuilt.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Run>> Run::Open(const std::string& id, Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("Run::Open needs a store");
  StateStore* store = options.store;
  DOTS_ASSIGN_OR_RETURN(std::string meta_bytes, store->Get(RunMetaKey(id)));
  state::v1::RunMeta meta;
  if (!meta.ParseFromString(meta_bytes)) return DataLoss(id, "the meta record does not parse");
  absl::StatusOr<RunConfig> config = ParseRunConfig(meta.config_json());
  if (!config.ok()) return DataLoss(id, absl::StrCat("stored config: ", config.status().message()));
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run,
                        Build(id, *std::move(config), std::move(options)));
  run->created_ = absl::FromUnixMicros(meta.created_unix_micros());
  run->token_sha256_ = meta.token_sha256();
  {
    MutexLock lock(&run->mu_);
    run->sealed_ = meta.sealed();
    run->replaying_ = true;
    DOTS_RETURN_IF_ERROR(run->LoadLocked());
    run->replaying_ = false;
    run->store_ = store;
  }
  run->StartPlanner();
  return run;
}

}  // namespace dots
