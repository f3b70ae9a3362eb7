#include "core/estimation/estimator_config.h"

#include <cmath>
#include <string>

#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

absl::Status WrongType(const std::string& key, const char* want, const JsonValue& got) {
  return absl::InvalidArgumentError(absl::StrFormat("estimator.%s: want %s, got %s", key, want,
                                                    JsonValue::DescribeType(got.type())));
}

absl::StatusOr<int64_t> Integer(const std::string& key, const JsonValue& v) {
  if (!v.is_number() || std::floor(v.as_number()) != v.as_number() ||
      std::abs(v.as_number()) > 9e15) {
    return WrongType(key, "an integer", v);
  }
  return static_cast<int64_t>(v.as_number());
}

absl::Status ParseModelConfig(const JsonValue& block, OnlineModelOptions* m) {
  if (!block.is_object()) {
    return absl::InvalidArgumentError(absl::StrFormat("estimator.model: want an object, got %s",
                                                      JsonValue::DescribeType(block.type())));
  }
  for (const auto& [key, v] : block.members()) {
    const std::string path = "model." + key;
    if (key == "enabled") {
      if (!v.is_bool()) return WrongType(path, "true or false", v);
      m->enabled = v.as_bool();
    } else if (key == "l2") {
      if (!v.is_number()) return WrongType(path, "a number >= 0", v);
      m->probe.l2 = v.as_number();
    } else if (key == "iterations") {
      DOTS_ASSIGN_OR_RETURN(int64_t iterations, Integer(path, v));
      if (iterations < 1 || iterations > 100000) {
        return absl::InvalidArgumentError(
            absl::StrFormat("estimator.model.iterations: %d must be in [1, 100000]", iterations));
      }
      m->probe.max_iterations = static_cast<int>(iterations);
    } else if (key == "label_decay") {
      if (!v.is_number()) return WrongType(path, "a number in (0, 1]", v);
      m->label_decay = v.as_number();
    } else if (key == "max_labels") {
      DOTS_ASSIGN_OR_RETURN(m->max_labels, Integer(path, v));
    } else if (key == "min_labels") {
      DOTS_ASSIGN_OR_RETURN(m->min_labels, Integer(path, v));
    } else if (key == "folds") {
      DOTS_ASSIGN_OR_RETURN(int64_t folds, Integer(path, v));
      if (folds < 0 || folds > 20) {
        return absl::InvalidArgumentError(
            absl::StrFormat("estimator.model.folds: %d must be 0 or in [2, 20]", folds));
      }
      m->folds = static_cast<int>(folds);
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "estimator.model.%s: unknown key (known: enabled, l2, iterations, label_decay, "
          "max_labels, min_labels, folds)",
          key));
    }
  }
  return absl::OkStatus();
}

// "adapter_training": "off" | "online" | {"mode": "online", "epochs": 2, ...}.
absl::Status ParseAdapterTrainingConfig(const JsonValue& block, AdapterOnlineOptions* a) {
  auto parse_mode = [a](const JsonValue& v, const std::string& path) -> absl::Status {
    if (v.is_string() && (v.as_string() == "off" || v.as_string() == "online")) {
      a->enabled = v.as_string() == "online";
      return absl::OkStatus();
    }
    return WrongType(path, "\"off\" or \"online\"", v);
  };
  if (!block.is_object()) return parse_mode(block, "adapter_training");
  for (const auto& [key, v] : block.members()) {
    const std::string path = "adapter_training." + key;
    if (key == "mode") {
      DOTS_RETURN_IF_ERROR(parse_mode(v, path));
    } else if (key == "learning_rate") {
      if (!v.is_number()) return WrongType(path, "a number in (0, 1]", v);
      a->learning_rate = v.as_number();
    } else if (key == "label_decay") {
      if (!v.is_number()) return WrongType(path, "a number in (0, 1]", v);
      a->label_decay = v.as_number();
    } else if (key == "max_labels") {
      DOTS_ASSIGN_OR_RETURN(a->max_labels, Integer(path, v));
    } else if (key == "min_labels") {
      DOTS_ASSIGN_OR_RETURN(a->min_labels, Integer(path, v));
    } else if (key == "epochs" || key == "batch_size" || key == "ref_size" ||
               key == "hidden_size" || key == "num_layers") {
      DOTS_ASSIGN_OR_RETURN(int64_t n, Integer(path, v));
      if (n < 0 || n > (1 << 30)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("estimator.%s: %d is outside [0, 2^30]", path, n));
      }
      const int value = static_cast<int>(n);
      if (key == "epochs") a->epochs = value;
      if (key == "batch_size") a->batch_size = value;
      if (key == "ref_size") a->ref_size = value;
      if (key == "hidden_size") a->hidden_size = value;
      if (key == "num_layers") a->num_layers = value;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "estimator.adapter_training.%s: unknown key (known: mode, epochs, learning_rate, "
          "batch_size, ref_size, max_labels, min_labels, label_decay, hidden_size, num_layers)",
          key));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseEstimatorConfig(const JsonValue& block, EstimatorConfig* config) {
  if (!block.is_object()) {
    return absl::InvalidArgumentError(absl::StrFormat("estimator: want an object, got %s",
                                                      JsonValue::DescribeType(block.type())));
  }
  EstimatorOptions& o = config->options;
  for (const auto& [key, v] : block.members()) {
    if (key == "mode") {
      if (!v.is_string()) return WrongType(key, "a string", v);
      DOTS_ASSIGN_OR_RETURN(o.mode, ParseEstimatorMode(v.as_string()));
    } else if (key == "adapter_path") {
      if (!v.is_string() && !v.is_null()) return WrongType(key, "a path string", v);
      config->adapter_path = v.is_string() ? v.as_string() : "";
    } else if (key == "attention_tau") {
      if (v.is_null()) {
        o.attention_tau.reset();
      } else if (v.is_number()) {
        o.attention_tau = static_cast<float>(v.as_number());
      } else {
        return WrongType(key, "a number", v);
      }
    } else if (key == "top_k") {
      if (v.is_null()) {
        o.top_k.reset();
      } else {
        DOTS_ASSIGN_OR_RETURN(int64_t k, Integer(key, v));
        if (k < 0 || k > (1 << 30)) {
          return absl::InvalidArgumentError(
              absl::StrFormat("estimator.top_k: %d must be in [0, 2^30]", k));
        }
        o.top_k = static_cast<int>(k);
      }
    } else if (key == "label_window") {
      DOTS_ASSIGN_OR_RETURN(o.label_window, Integer(key, v));
    } else if (key == "max_labeled") {
      DOTS_ASSIGN_OR_RETURN(o.max_labeled, Integer(key, v));
    } else if (key == "recalibration_window") {
      DOTS_ASSIGN_OR_RETURN(o.recalibration_window, Integer(key, v));
    } else if (key == "decay") {
      if (!v.is_number()) return WrongType(key, "a number in (0, 1]", v);
      o.decay = v.as_number();
    } else if (key == "prior_strength") {
      if (!v.is_number()) return WrongType(key, "a number > 0", v);
      o.prior_strength = v.as_number();
    } else if (key == "use_priors") {
      if (!v.is_bool()) return WrongType(key, "true or false", v);
      o.use_priors = v.as_bool();
    } else if (key == "model") {
      DOTS_RETURN_IF_ERROR(ParseModelConfig(v, &o.model));
    } else if (key == "adapter_training") {
      DOTS_RETURN_IF_ERROR(ParseAdapterTrainingConfig(v, &o.adapter_training));
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "estimator.%s: unknown key (known: mode, adapter_path, attention_tau, top_k, "
          "label_window, max_labeled, recalibration_window, decay, prior_strength, use_priors, "
          "model, adapter_training)",
          key));
    }
  }
  return o.Validate();
}

}  // namespace dots
