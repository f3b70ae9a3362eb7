// Offline adapter training on a labelled pool (what `dotsctl adapter train` runs): splits the
// labels into training and held-out parts, trains with AdapterTrainer (adapter_training.h), and
// evaluates the adapter on the held-out parts with the released evaluation protocol
// (adapter_eval.h) before training (the identity projection, and the start adapter if any) and
// after every `eval_every` epochs.
//
// Held-out parts:
//   - holdout_fraction: that fraction of the labelled QUESTIONS (drawn with the seed) is kept out
//     of training for every source; each training source is then evaluated on its labels of
//     those questions (references and queries both unseen in training);
//   - holdout_source: one source kept out of training entirely, evaluated on its labels of the
//     held-out questions (or of all its questions when holdout_fraction is 0): the paper's
//     "predict a model that was not a labeller" case.
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_OFFLINE_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_OFFLINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_eval.h"
#include "core/estimation/adapter_training.h"
#include "core/formats/labels.h"
#include "core/formats/pool.h"

namespace dots {

struct OfflineTrainingConfig {
  AdapterTrainingOptions training;
  uint64_t seed = 1;
  double holdout_fraction = 0;  // in [0, 1)
  std::string holdout_source;   // empty = none
  int eval_every = 1;           // epochs between evaluations; 0 = at the end only
  PaperProtocolOptions eval;
};

struct HeldOutReport {
  std::string name;  // the source
  PredictionMetrics metrics;
};

struct EvaluationReport {
  std::string model;  // "identity", "start" or "epoch N"
  int epoch = 0;      // 0 before training
  double train_loss = 0;
  std::vector<HeldOutReport> question_sets;  // training sources on held-out questions
  PredictionMetrics questions_mean;          // their mean (when there are any)
  std::optional<HeldOutReport> source;       // the held-out source
};

struct OfflineTrainingOutcome {
  SafeTensorsFile tensors;
  std::shared_ptr<const Adapter> adapter;
  std::vector<EvaluationReport> reports;  // baselines first, then per evaluated epoch
  std::vector<double> epoch_losses;
  int64_t steps = 0;
  int64_t train_labels = 0;    // labels trained on (as queries and references)
  int64_t heldout_labels = 0;  // labels only evaluated on
  int64_t skipped_labels = 0;  // sources with fewer than 2 labelled questions
  double flops = 0;
};

struct OfflineTrainingCallbacks {
  AdapterTrainingCallback on_step;                         // every step (progress)
  std::function<void(const EvaluationReport&)> on_report;  // every evaluation, as it is made
};

// `pool` must have embeddings; `labels` refer to it. Errors: INVALID_ARGUMENT naming the field
// for a bad config ("holdout_fraction: ...", "holdout_source: \"x\" is not a source of the
// labels (sources: ...)"), a held-out set too small to evaluate is skipped rather than an
// error; otherwise as AdapterTrainer::Create / RunEpoch and EvaluatePaperProtocol. Cost: the
// training (AdapterTrainer) plus one EvaluatePaperProtocol per held-out set per evaluation.
absl::StatusOr<OfflineTrainingOutcome> TrainAdapterOffline(
    const Pool& pool, const LabelFile& labels, std::shared_ptr<const Adapter> start,
    const OfflineTrainingConfig& config, const OfflineTrainingCallbacks& callbacks = {},
    const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_OFFLINE_H_
