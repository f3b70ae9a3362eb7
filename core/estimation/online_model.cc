#include "core/estimation/online_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace dots {
namespace {

double PearsonOf(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 3) return std::numeric_limits<double>::quiet_NaN();
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= n;
  my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 1e-18 || syy <= 1e-18) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace

absl::Status OnlineModelOptions::Validate() const {
  if (absl::Status s = probe.Validate(); !s.ok()) return s;
  if (!(std::isfinite(label_decay) && label_decay > 0 && label_decay <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.label_decay: %g is outside (0, 1]", label_decay));
  }
  if (max_labels < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.max_labels: %d must be >= 1", max_labels));
  }
  if (folds < 0 || folds == 1 || folds > 20) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.folds: %d must be 0 or in [2, 20]", folds));
  }
  if (min_labels < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.min_labels: %d must be >= 2", min_labels));
  }
  return absl::OkStatus();
}

float OnlineModel::StackFeature(int64_t q, absl::Span<const float> all) const {
  auto it = std::lower_bound(oof_questions.begin(), oof_questions.end(), q);
  if (it != oof_questions.end() && *it == q) return oof_predictions[it - oof_questions.begin()];
  return all[q];
}

absl::StatusOr<OnlineModel> TrainOnlineModel(const FloatMatrix& embeddings,
                                             const std::vector<QuestionHistory>& histories,
                                             int64_t policy_version,
                                             const OnlineModelOptions& options,
                                             const OnlineModel* previous) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(histories.size());
  if (embeddings.rows < n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "online model: %d embeddings for %d questions", embeddings.rows, histories.size()));
  }
  const absl::Time start = absl::Now();
  // The labels: the most recently observed questions (ties by index), in index order.
  const std::vector<int64_t> labelled = RecentlyObserved(histories, options.max_labels);
  const int64_t count = static_cast<int64_t>(labelled.size());
  if (count < options.min_labels) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "online model: %d labelled questions, at least %d needed", count, options.min_labels));
  }
  ProbeLabels labels;
  for (int64_t q : labelled) {
    labels.questions.push_back(q);
    labels.rates.push_back(DecayedRate(histories[q]));
    labels.weights.push_back(LabelWeight(histories[q], policy_version, options.label_decay));
  }

  OnlineModel model;
  model.version = previous != nullptr ? previous->version + 1 : 1;
  model.trained_policy_version = policy_version;
  model.labels = count;
  // Out of sample: the previous model against what was observed after its training.
  model.out_of_sample_pearson = std::numeric_limits<double>::quiet_NaN();
  if (previous != nullptr && !previous->empty() && previous->probe.dim() == embeddings.cols) {
    std::vector<int64_t> fresh;
    std::vector<double> observed;
    for (int64_t q = 0; q < n; ++q) {
      const QuestionHistory& h = histories[q];
      if (h.observations > 0 && h.last_version > previous->trained_policy_version) {
        fresh.push_back(q);
        observed.push_back(h.last_rate);
      }
    }
    std::vector<float> predicted(fresh.size());
    if (!fresh.empty() &&
        previous->probe.Predict(embeddings, fresh, absl::MakeSpan(predicted)).ok()) {
      model.out_of_sample_pearson =
          PearsonOf(std::vector<double>(predicted.begin(), predicted.end()), observed);
    }
    model.out_of_sample_labels = static_cast<int64_t>(fresh.size());
  }

  const Probe* warm =
      options.warm_start && previous != nullptr && !previous->empty() ? &previous->probe : nullptr;
  const Standardization standardization = warm != nullptr && warm->dim() == embeddings.cols
                                              ? warm->standardization()
                                              : Standardize(embeddings);
  absl::StatusOr<Probe> probe =
      Probe::Train(embeddings, standardization, labels, options.probe, warm);
  if (!probe.ok()) return probe.status();
  model.probe = *std::move(probe);
  model.training_loss = model.probe.training_loss();

  model.oof_questions = labelled;
  model.oof_predictions.assign(labelled.size(), 0.0f);
  if (options.folds >= 2) {
    for (int fold = 0; fold < options.folds; ++fold) {
      ProbeLabels train;
      std::vector<int64_t> held_out, held_out_pos;
      for (int64_t i = 0; i < count; ++i) {
        if (i % options.folds == fold) {
          held_out.push_back(labels.questions[i]);
          held_out_pos.push_back(i);
          continue;
        }
        train.questions.push_back(labels.questions[i]);
        train.rates.push_back(labels.rates[i]);
        train.weights.push_back(labels.weights[i]);
      }
      std::vector<float> predicted(held_out.size());
      absl::StatusOr<Probe> fold_probe =
          Probe::Train(embeddings, standardization, train, options.probe, &model.probe);
      if (!fold_probe.ok()) return fold_probe.status();
      if (absl::Status s = fold_probe->Predict(embeddings, held_out, absl::MakeSpan(predicted));
          !s.ok()) {
        return s;
      }
      for (size_t i = 0; i < held_out.size(); ++i) {
        model.oof_predictions[held_out_pos[i]] = predicted[i];
      }
    }
  } else if (absl::Status s =
                 model.probe.Predict(embeddings, labelled, absl::MakeSpan(model.oof_predictions));
             !s.ok()) {
    return s;
  }
  model.training_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return model;
}

}  // namespace dots
