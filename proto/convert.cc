#include "proto/convert.h"

#include <utility>

namespace dots {

void ToProto(const RunInfo& run, v1::RunInfo* out) {
  out->set_run_id(run.run_id);
  out->set_config_json(run.config_json);
  out->set_pool_size(run.pool_size);
  out->set_created_unix_seconds(run.created_unix_seconds);
  out->set_token(run.token);
  out->set_sealed(run.sealed);
}

RunInfo FromProto(const v1::RunInfo& run) {
  return RunInfo{run.run_id(), run.config_json(), run.pool_size(), run.created_unix_seconds(),
                 run.token(),  run.sealed()};
}

void ToProto(const ImportProgress& progress, v1::ImportPoolProgress* out) {
  out->set_questions_read(progress.questions_read);
  out->set_added(progress.added);
  out->set_updated(progress.updated);
  out->set_done(progress.done);
}

ImportProgress FromProto(const v1::ImportPoolProgress& progress) {
  return ImportProgress{progress.questions_read(), progress.added(), progress.updated(),
                        progress.done()};
}

void ToProto(const Question& question, const float* embedding, int64_t dim, v1::Question* out) {
  out->set_key(question.key);
  out->set_prompt(question.prompt);
  out->set_metadata_json(question.metadata_json);
  if (question.prior.has_value()) out->set_prior(*question.prior);
  if (embedding != nullptr) out->mutable_embedding()->Add(embedding, embedding + dim);
}

Question FromProto(v1::Question&& question) {
  Question q;
  q.key = std::move(*question.mutable_key());
  q.prompt = std::move(*question.mutable_prompt());
  if (!question.metadata_json().empty())
    q.metadata_json = std::move(*question.mutable_metadata_json());
  if (question.has_prior()) q.prior = question.prior();
  return q;
}

void ToProto(const UpsertResult& result, v1::UpsertQuestionsResponse* out) {
  out->set_added(result.added);
  out->set_updated(result.updated);
  for (const RejectedQuestion& r : result.rejected) {
    v1::RejectedQuestion* rejected = out->add_rejected();
    rejected->set_index(r.index);
    rejected->set_key(r.key);
    rejected->set_error(r.error);
  }
}

UpsertResult FromProto(const v1::UpsertQuestionsResponse& response) {
  UpsertResult result;
  result.added = response.added();
  result.updated = response.updated();
  for (const v1::RejectedQuestion& r : response.rejected()) {
    result.rejected.push_back(RejectedQuestion{r.index(), r.key(), r.error()});
  }
  return result;
}

v1::Role ToProto(ItemRole role) {
  return role == ItemRole::kFresh ? v1::ROLE_FRESH : v1::ROLE_REFERENCE;
}

ItemRole FromProto(v1::Role role) {
  return role == v1::ROLE_REFERENCE ? ItemRole::kReference : ItemRole::kFresh;
}

void ToProto(BatchItem&& item, v1::BatchItem* out) {
  out->set_key(std::move(item.key));
  out->set_role(ToProto(item.role));
  out->set_prompt(std::move(item.prompt));
  out->set_metadata_json(std::move(item.metadata_json));
}

BatchItem FromProto(v1::BatchItem&& item) {
  return BatchItem{std::move(*item.mutable_key()), FromProto(item.role()),
                   std::move(*item.mutable_prompt()), std::move(*item.mutable_metadata_json())};
}

void ToProto(const ReportResult& result, v1::ReportRolloutsResponse* out) {
  out->set_accepted(result.accepted);
  out->set_duplicates(result.duplicates);
  for (const auto& [key, error] : result.rejected) {
    v1::RejectedGroup* rejected = out->add_rejected();
    rejected->set_key(key);
    rejected->set_error(error);
  }
}

ReportResult FromProto(const v1::ReportRolloutsResponse& response) {
  ReportResult result;
  result.accepted = response.accepted();
  result.duplicates = response.duplicates();
  for (const v1::RejectedGroup& r : response.rejected()) {
    result.rejected.emplace_back(r.key(), r.error());
  }
  return result;
}

void ToProto(const QuestionEstimate& estimate, v1::QuestionEstimate* out) {
  out->set_key(estimate.key);
  out->set_p_hat(estimate.p_hat);
  out->set_observations(estimate.observations);
  out->set_last_policy_version(estimate.last_policy_version);
}

QuestionEstimate FromProto(const v1::QuestionEstimate& estimate) {
  return QuestionEstimate{estimate.key(), estimate.p_hat(), estimate.observations(),
                          estimate.last_policy_version()};
}

void ToProto(const RunStats& stats, v1::RunStats* out) {
  out->set_step(stats.step);
  out->set_round(stats.round);
  out->set_pool_size(stats.pool_size);
  out->set_reported_groups(stats.reported_groups);
  out->set_effective_ratio_last_step(stats.effective_ratio_last_step);
  out->set_replay_groups(stats.replay_groups);
  out->set_replay_bytes(stats.replay_bytes);
  out->set_leases_outstanding(stats.leases_outstanding);
  out->set_leases_expired(stats.leases_expired);
  out->set_duplicate_reports(stats.duplicate_reports);
  out->set_rejected_reports(stats.rejected_reports);
  out->set_effective_groups(stats.effective_groups);
  out->set_solve_all_groups(stats.solve_all_groups);
  out->set_solve_none_groups(stats.solve_none_groups);
  out->set_replayed_groups(stats.replayed_groups);
  out->set_rounds_planned(stats.rounds_planned);
  out->set_last_planning_seconds(stats.last_planning_seconds);
  out->set_policy_version(stats.policy_version);
  out->set_model_version(stats.model_version);
  out->set_model_labels(stats.model_labels);
  out->set_model_training_loss(stats.model_training_loss);
  out->set_model_training_seconds(stats.model_training_seconds);
  out->set_model_out_of_sample_pearson(stats.model_out_of_sample_pearson);
}

RunStats FromProto(const v1::RunStats& stats) {
  RunStats out;
  out.step = stats.step();
  out.round = stats.round();
  out.pool_size = stats.pool_size();
  out.reported_groups = stats.reported_groups();
  out.effective_ratio_last_step = stats.effective_ratio_last_step();
  out.replay_groups = stats.replay_groups();
  out.replay_bytes = stats.replay_bytes();
  out.leases_outstanding = stats.leases_outstanding();
  out.leases_expired = stats.leases_expired();
  out.duplicate_reports = stats.duplicate_reports();
  out.rejected_reports = stats.rejected_reports();
  out.effective_groups = stats.effective_groups();
  out.solve_all_groups = stats.solve_all_groups();
  out.solve_none_groups = stats.solve_none_groups();
  out.replayed_groups = stats.replayed_groups();
  out.rounds_planned = stats.rounds_planned();
  out.last_planning_seconds = stats.last_planning_seconds();
  out.policy_version = stats.policy_version();
  out.model_version = stats.model_version();
  out.model_labels = stats.model_labels();
  out.model_training_loss = stats.model_training_loss();
  out.model_training_seconds = stats.model_training_seconds();
  out.model_out_of_sample_pearson = stats.model_out_of_sample_pearson();
  return out;
}

}  // namespace dots
