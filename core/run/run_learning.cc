// What a run learns from its own outcomes between rounds: the default mode's online probe
// (core/estimation/online_model.h) and paper mode's online adapter fine-tuning
// (core/estimation/adapter_online.h). Both are retrained before every round plan from the
// estimator's state alone, so a restarted run (whose state is restored) plans exactly as the
// uninterrupted one.
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "core/estimation/adapter_online.h"
#include "core/estimation/online_model.h"
#include "core/run/run.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

constexpr uint64_t kTagAdapter = 0x616470;  // "adp"

}  // namespace

absl::Status Run::RefreshLearnedModelLocked(int64_t round) {
  const EstimatorOptions& options = config_.estimator.options;
  const bool probe = options.mode == EstimatorMode::kDefault && options.model.enabled;
  const bool adapter = options.mode == EstimatorMode::kPaper && options.adapter_training.enabled;
  if (!probe && !adapter) return absl::OkStatus();
  if (estimator_ == nullptr || estimator_stale_) DOTS_RETURN_IF_ERROR(RebuildEstimatorLocked());
  return probe ? RefreshOnlineModelLocked() : RefreshOnlineAdapterLocked(round);
}

absl::Status Run::RefreshOnlineModelLocked() {
  const EstimatorOptions& estimator_options = config_.estimator.options;
  const FloatMatrix& embeddings = pool_.has_embeddings() ? pool_.embeddings() : text_embeddings_;
  // Cold-started: the model is then a function of the estimator state alone, which a restart
  // restores, so a restarted run plans with the model the uninterrupted run would have had.
  OnlineModelOptions options = estimator_options.model;
  options.warm_start = false;
  absl::StatusOr<OnlineModel> trained = TrainOnlineModel(
      embeddings, estimator_->histories(), max_policy_version_, options, online_model_.get());
  if (absl::IsFailedPrecondition(trained.status())) return absl::OkStatus();  // too few labels
  if (!trained.ok()) return trained.status();
  auto model = std::make_shared<const OnlineModel>(*std::move(trained));
  auto predictions = std::make_shared<std::vector<float>>(static_cast<size_t>(pool_.size()));
  DOTS_RETURN_IF_ERROR(model->probe.PredictAll(embeddings, absl::MakeSpan(*predictions)));
  DOTS_RETURN_IF_ERROR(estimator_->SetOnlineModel(model, std::move(predictions)));
  online_model_ = model;
  ++stats_.model_version;  // counts on across restarts (the stats are durable)
  stats_.model_labels = model->labels;
  stats_.model_training_loss = model->training_loss;
  stats_.model_training_seconds = model->training_seconds;
  stats_.model_out_of_sample_pearson = model->out_of_sample_pearson;
  return absl::OkStatus();
}

absl::Status Run::RefreshOnlineAdapterLocked(int64_t round) {
  const EstimatorOptions& options = config_.estimator.options;
  const FloatMatrix& embeddings = pool_.has_embeddings() ? pool_.embeddings() : text_embeddings_;
  // Always from the run's own adapter, never from the previous pass: see adapter_online.h.
  const absl::Time start = absl::Now();
  absl::StatusOr<AdapterTrainingResult> trained =
      TrainAdapterOnline(embeddings, estimator_->histories(), max_policy_version_, adapter_,
                         options.adapter_training, MixSeed(config_.seed, round, kTagAdapter));
  // Too few labels, or a pass that failed (a diverged loss): the round is estimated with the
  // estimator as it is, and model_version does not move.
  if (!trained.ok()) return absl::OkStatus();
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Estimator> tuned,
                        Estimator::Create(pool_, trained->adapter, options,
                                          pool_.has_embeddings() ? nullptr : &text_embeddings_));
  DOTS_RETURN_IF_ERROR(tuned->RestoreState(estimator_->ExportState()));
  estimator_ = std::move(tuned);
  ++stats_.model_version;
  stats_.model_labels = trained->examples_per_epoch;
  stats_.model_training_loss = trained->epoch_losses.empty() ? 0 : trained->epoch_losses.back();
  stats_.model_training_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stats_.model_out_of_sample_pearson = std::numeric_limits<double>::quiet_NaN();
  return absl::OkStatus();
}

}  // namespace dots
