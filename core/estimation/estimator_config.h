// Reading the `estimator` block of a run configuration (JSON, snake_case keys):
//   {"mode": "default", "adapter_path": "", "attention_tau": 0.05, "top_k": 0,
//    "label_window": 0, "decay": 0.95, "prior_strength": 1.0,
//    "model": {"enabled": true, "l2": 0.01, "iterations": 100, "label_decay": 0.9,
//              "max_labels": 4096, "min_labels": 16, "folds": 5},
//    "adapter_training": "off"}
// `adapter_training` (paper mode only) is "off", "online", or an object with "mode" and any of
// epochs (2), learning_rate (1e-3), batch_size (256), ref_size (256), max_labels (4096),
// min_labels (16), label_decay (0.9), hidden_size and num_layers (fresh weights only).
// Absent keys keep their defaults (EstimatorOptions). Unknown keys are errors, so a typo never
// silently runs with a default.
#ifndef DOTS_CORE_ESTIMATION_ESTIMATOR_CONFIG_H_
#define DOTS_CORE_ESTIMATION_ESTIMATOR_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "core/estimation/estimator.h"
#include "core/util/json.h"

namespace dots {

struct EstimatorConfig {
  EstimatorOptions options;
  std::string adapter_path;  // empty = identity projection
};

// Fills *config from `block` (a JSON object). Errors: INVALID_ARGUMENT naming the key with its
// full path, e.g. "estimator.decay: want a number in (0, 1], got \"high\"". O(keys).
absl::Status ParseEstimatorConfig(const JsonValue& block, EstimatorConfig* config);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ESTIMATOR_CONFIG_H_
