// A run's configuration (JSON, snake_case keys). Defaults are the paper's (docs/design.md §2.4):
//
//   {"batch_size": 512, "group_size": 8, "steps_per_round": 2, "reference_size": 256,
//    "reference_mode": "inline", "reference_sampling": null, "alpha": 0.5, "tau": 0.001,
//    "fresh_fraction": 0.5, "seed": 0, "lease_timeout_seconds": 3600,
//    "estimator": {"mode": "default", "adapter_path": "", "attention_tau": null, "top_k": null,
//                  "label_window": 0, "decay": 0.95, "prior_strength": 1.0, "max_labeled": 4096,
//                  "recalibration_window": 3, "use_priors": true},
//    "selector": {"strategy": "dots", "cooldown_steps": 0, "band_lo": 0.2, "band_hi": 0.8},
//    "replay": {"enabled": true, "capacity_groups": 512, "capacity_bytes": 1073741824,
//               "strategy": "uniform", "max_age_versions": 0, "max_replays": 0,
//               "underfill": "fill_fresh"}}
//
// Absent keys keep their defaults; unknown keys are errors (a typo never runs silently with a
// default). Errors name the key by its full path, e.g. "replay.capacity_groups: -1 must be >= 1".
// Integer keys take integral JSON numbers only (1.5 and 1e300 are errors); JSON numbers are
// doubles, so every integer, `seed` included, is limited to [0, 2^53].
//
// Keys that are ignored (but still type- and range-checked):
//   reference_size      with reference_mode "none" (any value >= 0; it must be >= 1 otherwise);
//   fresh_fraction      with replay.enabled false: every batch is then all fresh (B questions);
//   reference_sampling  with reference_mode "none";
//   replay.*            other than enabled, with replay.enabled false.
#ifndef DOTS_CORE_RUN_RUN_CONFIG_H_
#define DOTS_CORE_RUN_RUN_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/estimation/estimator_config.h"
#include "core/replay/replay_store.h"
#include "core/selection/reference_set.h"
#include "core/selection/selector.h"

namespace dots {

enum class ReferenceMode { kInline, kPaper, kNone };
absl::StatusOr<ReferenceMode> ParseReferenceMode(std::string_view name);  // inline|paper|none
std::string_view ReferenceModeName(ReferenceMode mode);

enum class ReplayUnderfill { kFillFresh, kShrink };
absl::StatusOr<ReplayUnderfill> ParseReplayUnderfill(std::string_view name);  // fill_fresh|shrink
std::string_view ReplayUnderfillName(ReplayUnderfill underfill);

struct RunConfig {
  int64_t batch_size = 512;      // B: questions per training step
  int group_size = 8;            // G: rollouts per question
  int64_t steps_per_round = 2;   // mu
  int64_t reference_size = 256;  // K
  ReferenceMode reference_mode = ReferenceMode::kInline;
  // Unset: informative for the default estimator, uniform for paper and history.
  std::optional<ReferenceSampling> reference_sampling;
  double alpha = 0.5;
  double tau = 1e-3;
  double fresh_fraction = 0.5;  // delta
  uint64_t seed = 0;
  double lease_timeout_seconds = 3600;
  EstimatorConfig estimator;
  SelectorStrategy selector_strategy = SelectorStrategy::kDots;
  int64_t cooldown_steps = 0;
  double band_lo = 0.2, band_hi = 0.8;
  bool replay_enabled = true;
  ReplayOptions replay;  // capacity_groups, capacity_bytes, strategy, max_age_versions,
                         // max_replays (alpha is copied from the run's alpha)
  ReplayUnderfill underfill = ReplayUnderfill::kFillFresh;

  // The reference sampling in force (resolving the unset default).
  ReferenceSampling EffectiveReferenceSampling() const;
  // Fresh questions per step once replay fills the rest: round(delta * B); B when replay is
  // disabled (fresh_fraction is then ignored). O(1).
  int64_t FreshPerStep() const;

  // Checks every field and the combinations that can never be served: delta * B < 1, an
  // inline reference set that does not fit in a round's fresh share (K > mu * FreshPerStep()),
  // band_lo > band_hi... INVALID_ARGUMENT naming the key. O(1).
  absl::Status Validate() const;
  // Checks the combinations that depend on the pool: K larger than the pool, a round's fresh
  // draw (mu * B) larger than the pool minus K (K counts as 0 with reference_mode "none").
  // FAILED_PRECONDITION naming the keys and the pool size; INVALID_ARGUMENT for a negative
  // pool_size. O(1).
  absl::Status ValidateForPool(int64_t pool_size) const;
};

// Parses and validates a JSON run config. Errors: INVALID_ARGUMENT naming the key path
// ("run config: invalid JSON: at byte N: ..." for text that is not JSON). replay.alpha is set to
// the run's alpha. O(size of text); does not block.
absl::StatusOr<RunConfig> ParseRunConfig(std::string_view json_text);

// The canonical JSON of a config: every key in the order of the file comment, on one line,
// doubles in their shortest exact form, so it can be echoed to users and stored, and
// ParseRunConfig(RunConfigToJson(c)) == c for every valid c. An unset reference_sampling,
// attention_tau or top_k is written as null (unset, not its resolved value). O(1).
std::string RunConfigToJson(const RunConfig& config);

}  // namespace dots

#endif  // DOTS_CORE_RUN_RUN_CONFIG_H_
