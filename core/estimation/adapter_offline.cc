#include "core/estimation/adapter_offline.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

constexpr uint64_t kHoldoutTag = 0x686f6c64;  // "hold"
constexpr size_t kMinEvalRows = 8;

struct Split {
  std::vector<AdapterLabel> train;
  std::vector<HeldOutSet> question_sets;
  std::optional<HeldOutSet> source_set;
  int64_t heldout_labels = 0;
};

absl::StatusOr<Split> SplitLabels(const Pool& pool, const LabelFile& labels,
                                  const OfflineTrainingConfig& config) {
  if (!(config.holdout_fraction >= 0 && config.holdout_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("holdout_fraction: ", config.holdout_fraction, " is not in [0, 1)"));
  }
  int32_t holdout_source = -1;
  if (!config.holdout_source.empty()) {
    auto it = std::find(labels.sources.begin(), labels.sources.end(), config.holdout_source);
    if (it == labels.sources.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "holdout_source: \"", config.holdout_source,
          "\" is not a source of the labels (sources: ", absl::StrJoin(labels.sources, ", "), ")"));
    }
    holdout_source = static_cast<int32_t>(it - labels.sources.begin());
  }
  // Held-out questions: a seeded random subset of the labelled ones.
  std::vector<int64_t> questions;
  for (const LabelRecord& l : labels.labels) questions.push_back(l.question);
  std::sort(questions.begin(), questions.end());
  questions.erase(std::unique(questions.begin(), questions.end()), questions.end());
  Rng rng(MixSeed(config.seed, kHoldoutTag));
  for (size_t i = questions.size(); i > 1; --i) {
    std::swap(questions[i - 1], questions[rng.Below(i)]);
  }
  const size_t held = static_cast<size_t>(config.holdout_fraction * questions.size());
  const absl::flat_hash_set<int64_t> heldout(questions.begin(), questions.begin() + held);

  Split split;
  std::vector<HeldOutSet> per_source(labels.sources.size());
  for (size_t s = 0; s < labels.sources.size(); ++s) per_source[s].name = labels.sources[s];
  for (const LabelRecord& l : labels.labels) {
    const bool question_out = heldout.contains(l.question);
    const bool source_out = l.source == holdout_source;
    if (!question_out && !source_out) {
      split.train.push_back(AdapterLabel{l.question, static_cast<float>(l.rate),
                                         static_cast<float>(l.weight), l.source});
      continue;
    }
    ++split.heldout_labels;
    if (question_out || (source_out && held == 0)) {
      per_source[l.source].rows.push_back(l.question);
      per_source[l.source].rates.push_back(static_cast<float>(l.rate));
    }
  }
  for (size_t s = 0; s < per_source.size(); ++s) {
    if (per_source[s].rows.size() < kMinEvalRows) continue;
    if (static_cast<int32_t>(s) == holdout_source) {
      split.source_set = std::move(per_source[s]);
    } else {
      split.question_sets.push_back(std::move(per_source[s]));
    }
  }
  return split;
}

absl::StatusOr<EvaluationReport> Evaluate(std::shared_ptr<const Adapter> adapter,
                                          const FloatMatrix& embeddings, const Split& split,
                                          const PaperProtocolOptions& options) {
  EvaluationReport report;
  std::vector<PredictionMetrics> metrics;
  for (const HeldOutSet& set : split.question_sets) {
    DOTS_ASSIGN_OR_RETURN(PredictionMetrics m,
                          EvaluatePaperProtocol(adapter, embeddings, set, options));
    report.question_sets.push_back({set.name, m});
    metrics.push_back(m);
  }
  report.questions_mean = AverageMetrics(metrics);
  if (split.source_set.has_value()) {
    DOTS_ASSIGN_OR_RETURN(PredictionMetrics m,
                          EvaluatePaperProtocol(adapter, embeddings, *split.source_set, options));
    report.source = HeldOutReport{split.source_set->name, m};
  }
  return report;
}

}  // namespace

absl::StatusOr<OfflineTrainingOutcome> TrainAdapterOffline(
    const Pool& pool, const LabelFile& labels, std::shared_ptr<const Adapter> start,
    const OfflineTrainingConfig& config, const OfflineTrainingCallbacks& callbacks,
    const std::map<std::string, std::string>& extra_metadata) {
  if (!pool.has_embeddings()) {
    return absl::InvalidArgumentError("pool: has no embeddings (embed the prompts first)");
  }
  if (config.eval_every < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval_every: ", config.eval_every, " is not >= 0"));
  }
  const FloatMatrix& embeddings = pool.embeddings();
  DOTS_ASSIGN_OR_RETURN(Split split, SplitLabels(pool, labels, config));
  DOTS_ASSIGN_OR_RETURN(
      std::unique_ptr<AdapterTrainer> trainer,
      AdapterTrainer::Create(embeddings, split.train, start, config.training, config.seed));

  OfflineTrainingOutcome out;
  out.train_labels = static_cast<int64_t>(split.train.size());
  out.heldout_labels = split.heldout_labels;
  out.skipped_labels = trainer->skipped_labels();
  const bool evaluate = !split.question_sets.empty() || split.source_set.has_value();
  auto report = [&](std::shared_ptr<const Adapter> adapter, std::string name, int epoch,
                    double loss) -> absl::Status {
    if (!evaluate) return absl::OkStatus();
    DOTS_ASSIGN_OR_RETURN(EvaluationReport r,
                          Evaluate(std::move(adapter), embeddings, split, config.eval));
    r.model = std::move(name);
    r.epoch = epoch;
    r.train_loss = loss;
    if (callbacks.on_report) callbacks.on_report(r);
    out.reports.push_back(std::move(r));
    return absl::OkStatus();
  };
  DOTS_RETURN_IF_ERROR(
      report(Adapter::Identity(static_cast<int>(embeddings.cols)), "identity", 0, 0));
  if (start != nullptr) DOTS_RETURN_IF_ERROR(report(start, "start", 0, 0));

  const int epochs = config.training.epochs;
  for (int e = 1; e <= epochs; ++e) {
    DOTS_ASSIGN_OR_RETURN(double loss, trainer->RunEpoch(callbacks.on_step));
    out.epoch_losses.push_back(loss);
    const bool due = e == epochs || (config.eval_every > 0 && e % config.eval_every == 0);
    if (due && evaluate) {
      DOTS_ASSIGN_OR_RETURN(std::shared_ptr<const Adapter> snapshot, trainer->Snapshot());
      DOTS_RETURN_IF_ERROR(report(snapshot, absl::StrCat("epoch ", e), e, loss));
    }
  }
  out.tensors = trainer->Tensors(extra_metadata);
  DOTS_ASSIGN_OR_RETURN(out.adapter, Adapter::FromTensors(out.tensors, "trained adapter"));
  out.steps = trainer->steps_done();
  out.flops = trainer->StepFlops() * static_cast<double>(out.steps);
  return out;
}

}  // namespace dots
