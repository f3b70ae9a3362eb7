// The difficulty model a run learns from its own outcomes (docs/design.md §2.6): a logistic probe
// on the question embeddings (core/estimation/probe.h), refitted between rounds on every recently
// observed question, weighted towards the current policy version. It predicts every question of
// the pool, observed or not; the default estimator stacks that prediction with attention over
// similar questions and the static prior (core/estimation/estimator.h).
//
// One training (TrainOnlineModel) is a pure function of the estimator's histories at a policy
// version, the embeddings, the options and the previous model: a run calls it on a snapshot
// taken at a round boundary, outside its lock, and records the result in its event log, so that
// a restarted run holds exactly the model the uninterrupted one would.
//
// Out-of-fold predictions: the stack is fitted on labelled questions, for which an in-sample
// probe prediction would be optimistic (the probe saw the label). Training therefore also fits
// `folds` probes, each without one fold of the labels, and keeps every training label's
// prediction from the probe that did not see it.
#ifndef DOTS_CORE_ESTIMATION_ONLINE_MODEL_H_
#define DOTS_CORE_ESTIMATION_ONLINE_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/history.h"
#include "core/estimation/probe.h"
#include "core/types.h"

namespace dots {

struct OnlineModelOptions {
  bool enabled = true;
  ProbeOptions probe;
  // A label observed at policy version u weighs label_decay^(v - u) in a training at version v.
  double label_decay = 0.9;
  // Labels of a training: the most recently observed questions, at most this many.
  int64_t max_labels = 4096;
  // Out-of-fold probes per training (0 = none: the stack then sees in-sample predictions).
  int folds = 5;
  // Fewer labels than this and no model is trained (the estimator keeps the previous one).
  int64_t min_labels = 16;
  // Start the probe's optimisation from the previous model's weights. Faster, but the result
  // then depends on the whole chain of trainings; a run turns it off so that each model is a
  // pure function of the estimator state it was trained on (and a restarted run, whose state is
  // restored, trains the same model). Not a configuration key.
  bool warm_start = true;

  // INVALID_ARGUMENT naming the field (estimator.model.*).
  absl::Status Validate() const;
};

struct OnlineModel {
  int64_t version = 0;                  // trainings so far; 0 = no model yet
  int64_t trained_policy_version = -1;  // policy version of the labels it was trained on
  Probe probe;
  // Out-of-fold prediction of every question the probe was trained on (sorted by question).
  std::vector<int64_t> oof_questions;
  std::vector<float> oof_predictions;
  // Metrics of the training that produced it.
  int64_t labels = 0;
  double training_loss = 0;     // weighted mean BCE on its labels, nats
  double training_seconds = 0;  // wall time of the training (all folds)
  // Pearson correlation, over the questions observed since the previous model's training, of
  // the previous model's prediction and the observed rate: out of sample, since the previous
  // model never saw those labels. NaN when undefined (no previous model, < 3 such labels, or a
  // constant side).
  double out_of_sample_pearson = 0;
  int64_t out_of_sample_labels = 0;

  bool empty() const { return probe.empty(); }
  // The prediction the estimator's stack uses for question q: its out-of-fold prediction when q
  // was a training label, else the probe's. `all` is the probe's prediction of every question.
  // O(log labels).
  float StackFeature(int64_t q, absl::Span<const float> all) const;
};

// Trains the next model from `histories` (one per question; only questions with observations
// are labels, their label the decayed success rate) at policy version `policy_version`, on
// `embeddings` (N x D). `previous` (may be null or empty) is scored out of sample, numbers the
// new model (version + 1) and, with options.warm_start, starts its optimisation. Returns
// FAILED_PRECONDITION with fewer than options.min_labels labels, and the probe's errors otherwise
// (nothing changes for the caller: the result is a new value). Cost: (folds + 1) probe trainings,
// O((folds + 1) * iterations * L * D) flops, plus O(N * D) when scoring the previous model.
// Deterministic; blocks the caller; no locks.
absl::StatusOr<OnlineModel> TrainOnlineModel(const FloatMatrix& embeddings,
                                             const std::vector<QuestionHistory>& histories,
                                             int64_t policy_version,
                                             const OnlineModelOptions& options,
                                             const OnlineModel* previous);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ONLINE_MODEL_H_
