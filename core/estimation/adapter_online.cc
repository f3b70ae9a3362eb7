#include "core/estimation/adapter_online.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"

namespace dots {

absl::Status AdapterOnlineOptions::Validate() const {
  auto outside = [](const char* field, double value, const char* range) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.adapter_training.%s: %g %s", field, value, range));
  };
  if (epochs < 1 || epochs > 1000) return outside("epochs", epochs, "is outside [1, 1000]");
  if (!(std::isfinite(learning_rate) && learning_rate > 0 && learning_rate <= 1)) {
    return outside("learning_rate", learning_rate, "is outside (0, 1]");
  }
  if (batch_size < 1) return outside("batch_size", batch_size, "must be >= 1");
  if (ref_size < 1) return outside("ref_size", ref_size, "must be >= 1");
  if (min_labels < 2) return outside("min_labels", static_cast<double>(min_labels), "must be >= 2");
  if (max_labels < min_labels) {
    return outside("max_labels", static_cast<double>(max_labels), "must be >= min_labels");
  }
  if (!(std::isfinite(label_decay) && label_decay > 0 && label_decay <= 1)) {
    return outside("label_decay", label_decay, "is outside (0, 1]");
  }
  if (hidden_size.has_value() && (*hidden_size < 1 || *hidden_size > 65536)) {
    return outside("hidden_size", *hidden_size, "is outside [1, 65536]");
  }
  if (num_layers.has_value() && (*num_layers < 1 || *num_layers > 16)) {
    return outside("num_layers", *num_layers, "is outside [1, 16]");
  }
  return absl::OkStatus();
}

std::vector<AdapterLabel> OnlineAdapterLabels(const std::vector<QuestionHistory>& histories,
                                              int64_t policy_version,
                                              const AdapterOnlineOptions& options) {
  std::vector<AdapterLabel> labels;
  for (int64_t q : RecentlyObserved(histories, options.max_labels)) {
    AdapterLabel label;
    label.row = q;
    label.rate = DecayedRate(histories[q]);
    label.weight = LabelWeight(histories[q], policy_version, options.label_decay);
    label.source = 0;
    labels.push_back(label);
  }
  return labels;
}

absl::StatusOr<AdapterTrainingResult> TrainAdapterOnline(
    const FloatMatrix& embeddings, const std::vector<QuestionHistory>& histories,
    int64_t policy_version, std::shared_ptr<const Adapter> start,
    const AdapterOnlineOptions& options, uint64_t seed) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const std::vector<AdapterLabel> labels = OnlineAdapterLabels(histories, policy_version, options);
  if (static_cast<int64_t>(labels.size()) < options.min_labels) {
    return absl::FailedPreconditionError(
        absl::StrFormat("online adapter: %d labelled questions, at least %d needed", labels.size(),
                        options.min_labels));
  }
  AdapterTrainingOptions training;
  training.epochs = options.epochs;
  training.learning_rate = options.learning_rate;
  training.batch_size = options.batch_size;
  training.ref_size = options.ref_size;
  if (start != nullptr && start->is_identity()) start = nullptr;
  if (start == nullptr) {
    training.hidden_size = options.hidden_size;
    training.num_layers = options.num_layers;
  }
  return TrainAdapter(
      embeddings, labels, std::move(start), training, seed, nullptr,
      {{"trained_online_at_policy_version", absl::StrFormat("%d", policy_version)}});
}

}  // namespace dots
