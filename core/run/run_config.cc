#include "core/run/run_config.h"

#include <cmath>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/run/round_plan.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

// JSON numbers are doubles: integers are exact only up to 2^53, so no integer key may exceed it
// (a larger value would not survive RunConfigToJson -> ParseRunConfig).
constexpr int64_t kMaxExactInteger = int64_t{1} << 53;
constexpr int64_t kMaxBatchSize = 1'000'000;
constexpr int64_t kMaxGroupSize = 4096;
constexpr int64_t kMaxStepsPerRound = 10'000;
constexpr double kMaxLeaseTimeoutSeconds = 30.0 * 24 * 3600;  // 30 days

// "a string \"512\"", "a number 1.5", "an array": what the user wrote, for error messages.
std::string Describe(const JsonValue& v) {
  std::string out = JsonValue::DescribeType(v.type());
  if (v.is_number() || v.is_string() || v.is_bool()) {
    std::string_view raw = v.raw();
    out += ' ';
    if (raw.size() > 40) {
      out += std::string(raw.substr(0, 37));
      out += "...";
    } else {
      out += std::string(raw);
    }
  }
  return out;
}

absl::Status WrongType(const std::string& path, std::string_view want, const JsonValue& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": want ", ToAbsl(want), ", got ", Describe(got)));
}

// Makes sure an error from a shared parser (e.g. ParseSelectorStrategy) names the key's path.
absl::Status WithPath(const std::string& path, const absl::Status& status) {
  if (status.ok()) return status;
  std::string_view message(status.message().data(), status.message().size());
  if (message.substr(0, path.size() + 1) == path + ":") return status;
  return absl::Status(status.code(), absl::StrCat(path, ": ", ToAbsl(message)));
}

absl::StatusOr<int64_t> ReadInteger(const std::string& path, std::string_view want,
                                    const JsonValue& v) {
  if (!v.is_number()) return WrongType(path, want, v);
  const double x = v.as_number();
  if (!std::isfinite(x) || std::floor(x) != x || std::abs(x) > kMaxExactInteger) {
    return WrongType(path, want, v);
  }
  return static_cast<int64_t>(x);
}

absl::StatusOr<double> ReadNumber(const std::string& path, std::string_view want,
                                  const JsonValue& v) {
  if (!v.is_number()) return WrongType(path, want, v);
  return v.as_number();  // range (and finiteness: 1e400 parses as inf) is checked by Validate
}

absl::StatusOr<bool> ReadBool(const std::string& path, const JsonValue& v) {
  if (!v.is_bool()) return WrongType(path, "true or false", v);
  return v.as_bool();
}

absl::StatusOr<std::string> ReadString(const std::string& path, std::string_view want,
                                       const JsonValue& v) {
  if (!v.is_string()) return WrongType(path, want, v);
  return v.as_string();
}

absl::Status CheckIntRange(const std::string& path, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  if (hi == kMaxExactInteger) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %d must be >= %d", path, value, lo));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: %d is outside [%d, %d]", path, value, lo, hi));
}

// One key of a JSON object: its name and how to store its value. `path` is the key's full path.
struct Field {
  std::string_view key;
  std::function<absl::Status(const std::string& path, const JsonValue& value)> read;
};

// Reads every member of `block` (the object at `path`, "" for the top level) through `fields`;
// unknown keys are errors listing the known ones. O(members * fields).
absl::Status ReadObject(const std::string& path, const JsonValue& block,
                        const std::vector<Field>& fields) {
  if (!block.is_object()) {
    return WrongType(path.empty() ? "run config" : path, "an object", block);
  }
  const std::string prefix = path.empty() ? "" : path + ".";
  for (const auto& [key, value] : block.members()) {
    const Field* field = nullptr;
    for (const Field& f : fields) {
      if (f.key == key) field = &f;
    }
    const std::string key_path = prefix + key;
    if (field == nullptr) {
      std::vector<std::string> known;
      for (const Field& f : fields) known.emplace_back(f.key);
      return absl::InvalidArgumentError(
          absl::StrCat(key_path, ": unknown key (known: ", absl::StrJoin(known, ", "), ")"));
    }
    DOTS_RETURN_IF_ERROR(field->read(key_path, value));
  }
  return absl::OkStatus();
}

Field IntField(std::string_view key, std::string_view want, int64_t* out) {
  return {key, [want, out](const std::string& path, const JsonValue& v) -> absl::Status {
            DOTS_ASSIGN_OR_RETURN(*out, ReadInteger(path, want, v));
            return absl::OkStatus();
          }};
}

Field NumberField(std::string_view key, std::string_view want, double* out) {
  return {key, [want, out](const std::string& path, const JsonValue& v) -> absl::Status {
            DOTS_ASSIGN_OR_RETURN(*out, ReadNumber(path, want, v));
            return absl::OkStatus();
          }};
}

Field BoolField(std::string_view key, bool* out) {
  return {key, [out](const std::string& path, const JsonValue& v) -> absl::Status {
            DOTS_ASSIGN_OR_RETURN(*out, ReadBool(path, v));
            return absl::OkStatus();
          }};
}

// A string key whose value names an enumerator; `parse` is the enum's own parser.
template <typename Enum, typename Parser>
Field EnumField(std::string_view key, std::string_view want, Parser parse, Enum* out) {
  return {key, [want, parse, out](const std::string& path, const JsonValue& v) -> absl::Status {
            DOTS_ASSIGN_OR_RETURN(std::string name, ReadString(path, want, v));
            absl::StatusOr<Enum> parsed = parse(name);
            if (!parsed.ok()) return WithPath(path, parsed.status());
            *out = *parsed;
            return absl::OkStatus();
          }};
}

absl::Status ReadSelector(const std::string& path, const JsonValue& block, RunConfig* c) {
  return ReadObject(
      path, block,
      {EnumField("strategy", "a strategy name (dots, uniform, greedy, band, thompson, posterior)",
                 ParseSelectorStrategy, &c->selector_strategy),
       IntField("cooldown_steps", "an integer >= 0", &c->cooldown_steps),
       NumberField("band_lo", "a number", &c->band_lo),
       NumberField("band_hi", "a number", &c->band_hi)});
}

absl::Status ReadReplay(const std::string& path, const JsonValue& block, RunConfig* c) {
  return ReadObject(path, block,
                    {BoolField("enabled", &c->replay_enabled),
                     IntField("capacity_groups", "an integer", &c->replay.capacity_groups),
                     IntField("capacity_bytes", "an integer", &c->replay.capacity_bytes),
                     EnumField("strategy", "\"uniform\" or \"targeted\"", ParseReplayStrategy,
                               &c->replay.strategy),
                     IntField("max_age_versions", "an integer", &c->replay.max_age_versions),
                     IntField("max_replays", "an integer", &c->replay.max_replays),
                     EnumField("underfill", "\"fill_fresh\" or \"shrink\"", ParseReplayUnderfill,
                               &c->underfill)});
}

// The `estimator` block of RunConfigToJson: every key ParseEstimatorConfig reads, unset optionals
// as null.
void AppendEstimatorJson(const EstimatorConfig& estimator, std::string* out) {
  const EstimatorOptions& o = estimator.options;
  absl::StrAppend(
      out, "{\"mode\": ", JsonQuote(EstimatorModeName(o.mode)),
      ", \"adapter_path\": ", JsonQuote(estimator.adapter_path),
      ", \"attention_tau\": ", o.attention_tau.has_value() ? JsonNumber(*o.attention_tau) : "null",
      ", \"top_k\": ", o.top_k.has_value() ? absl::StrCat(*o.top_k) : "null",
      ", \"label_window\": ", o.label_window, ", \"decay\": ", JsonNumber(o.decay),
      ", \"prior_strength\": ", JsonNumber(o.prior_strength), ", \"max_labeled\": ", o.max_labeled,
      ", \"recalibration_window\": ", o.recalibration_window,
      ", \"use_priors\": ", o.use_priors ? "true" : "false",
      ", \"model\": {\"enabled\": ", o.model.enabled ? "true" : "false",
      ", \"l2\": ", JsonNumber(o.model.probe.l2),
      ", \"iterations\": ", o.model.probe.max_iterations,
      ", \"label_decay\": ", JsonNumber(o.model.label_decay),
      ", \"max_labels\": ", o.model.max_labels, ", \"min_labels\": ", o.model.min_labels,
      ", \"folds\": ", o.model.folds, "}");
  const AdapterOnlineOptions& a = o.adapter_training;
  absl::StrAppend(out, ", \"adapter_training\": {\"mode\": ", a.enabled ? "\"online\"" : "\"off\"",
                  ", \"epochs\": ", a.epochs, ", \"learning_rate\": ", JsonNumber(a.learning_rate),
                  ", \"batch_size\": ", a.batch_size, ", \"ref_size\": ", a.ref_size,
                  ", \"max_labels\": ", a.max_labels, ", \"min_labels\": ", a.min_labels,
                  ", \"label_decay\": ", JsonNumber(a.label_decay));
  if (a.hidden_size.has_value()) absl::StrAppend(out, ", \"hidden_size\": ", *a.hidden_size);
  if (a.num_layers.has_value()) absl::StrAppend(out, ", \"num_layers\": ", *a.num_layers);
  absl::StrAppend(out, "}}");
}

}  // namespace

absl::StatusOr<ReferenceMode> ParseReferenceMode(std::string_view name) {
  if (name == "inline") return ReferenceMode::kInline;
  if (name == "paper") return ReferenceMode::kPaper;
  if (name == "none") return ReferenceMode::kNone;
  return absl::InvalidArgumentError(absl::StrCat("reference_mode: unknown mode \"", ToAbsl(name),
                                                 "\" (want inline, paper or none)"));
}

std::string_view ReferenceModeName(ReferenceMode mode) {
  switch (mode) {
    case ReferenceMode::kInline:
      return "inline";
    case ReferenceMode::kPaper:
      return "paper";
    case ReferenceMode::kNone:
      return "none";
  }
  return "unknown";
}

absl::StatusOr<ReplayUnderfill> ParseReplayUnderfill(std::string_view name) {
  if (name == "fill_fresh") return ReplayUnderfill::kFillFresh;
  if (name == "shrink") return ReplayUnderfill::kShrink;
  return absl::InvalidArgumentError(absl::StrCat("replay.underfill: unknown policy \"",
                                                 ToAbsl(name), "\" (want fill_fresh or shrink)"));
}

std::string_view ReplayUnderfillName(ReplayUnderfill underfill) {
  return underfill == ReplayUnderfill::kShrink ? "shrink" : "fill_fresh";
}

ReferenceSampling RunConfig::EffectiveReferenceSampling() const {
  if (reference_sampling.has_value()) return *reference_sampling;
  return estimator.options.mode == EstimatorMode::kDefault ? ReferenceSampling::kInformative
                                                           : ReferenceSampling::kUniform;
}

int64_t RunConfig::FreshPerStep() const {
  return dots::FreshPerStep(batch_size, fresh_fraction, replay_enabled);
}

absl::Status RunConfig::Validate() const {
  DOTS_RETURN_IF_ERROR(CheckIntRange("batch_size", batch_size, 1, kMaxBatchSize));
  DOTS_RETURN_IF_ERROR(CheckIntRange("group_size", group_size, 1, kMaxGroupSize));
  DOTS_RETURN_IF_ERROR(CheckIntRange("steps_per_round", steps_per_round, 1, kMaxStepsPerRound));
  if (reference_mode == ReferenceMode::kNone) {
    // Ignored without references, but a negative count is still a mistake worth reporting.
    DOTS_RETURN_IF_ERROR(CheckIntRange("reference_size", reference_size, 0, kMaxExactInteger));
  } else if (reference_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reference_size: %d must be >= 1 with reference_mode \"%s\" (0 is only allowed with "
        "reference_mode \"none\")",
        reference_size, std::string(ReferenceModeName(reference_mode))));
  } else {
    DOTS_RETURN_IF_ERROR(CheckIntRange("reference_size", reference_size, 1, kMaxExactInteger));
  }
  if (!std::isfinite(alpha)) {
    return absl::InvalidArgumentError(absl::StrFormat("alpha: %g must be finite", alpha));
  }
  if (!(std::isfinite(tau) && tau > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("tau: %g must be finite and > 0", tau));
  }
  if (!(fresh_fraction > 0 && fresh_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fresh_fraction: %g is outside (0, 1]", fresh_fraction));
  }
  if (seed > static_cast<uint64_t>(kMaxExactInteger)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "seed: %d exceeds 2^53 (JSON numbers are doubles, exact only up to 2^53)", seed));
  }
  if (!(std::isfinite(lease_timeout_seconds) && lease_timeout_seconds > 0 &&
        lease_timeout_seconds <= kMaxLeaseTimeoutSeconds)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("lease_timeout_seconds: %g is outside (0, %.0f] (30 days)",
                        lease_timeout_seconds, kMaxLeaseTimeoutSeconds));
  }
  DOTS_RETURN_IF_ERROR(estimator.options.Validate());
  DOTS_RETURN_IF_ERROR(
      CheckIntRange("selector.cooldown_steps", cooldown_steps, 0, kMaxExactInteger));
  if (!std::isfinite(band_lo)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("selector.band_lo: %g must be finite", band_lo));
  }
  if (!std::isfinite(band_hi)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("selector.band_hi: %g must be finite", band_hi));
  }
  if (band_lo > band_hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("selector.band_lo: %g is above selector.band_hi %g", band_lo, band_hi));
  }
  ReplayOptions replay_with_alpha = replay;
  replay_with_alpha.alpha = alpha;  // the run's alpha, as the service passes it
  if (absl::Status status = replay_with_alpha.Validate(); !status.ok()) {
    // ReplayOptions names its fields "replay.<field>" already; make sure of it.
    const std::string_view message(status.message().data(), status.message().size());
    if (message.substr(0, 7) == "replay.") return status;
    return absl::Status(status.code(), absl::StrCat("replay.", ToAbsl(message)));
  }
  for (const auto& [key, value] :
       {std::pair<const char*, int64_t>{"replay.capacity_groups", replay.capacity_groups},
        {"replay.capacity_bytes", replay.capacity_bytes},
        {"replay.max_age_versions", replay.max_age_versions},
        {"replay.max_replays", replay.max_replays}}) {
    if (value > kMaxExactInteger) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d exceeds 2^53 (JSON numbers are doubles, exact only up to 2^53)", key, value));
    }
  }

  // Combinations that can never be served. Without replay every batch is all fresh, so
  // fresh_fraction does not matter then.
  if (replay_enabled && FreshPerStep() < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fresh_fraction: %g * batch_size %d rounds to 0 fresh questions per step",
                        fresh_fraction, batch_size));
  }
  const int64_t round_fresh_share = steps_per_round * FreshPerStep();
  if (reference_mode == ReferenceMode::kInline && reference_size > round_fresh_share) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reference_size: %d inline reference questions do not fit in a round's fresh share of "
        "%d (steps_per_round %d * round(fresh_fraction %g * batch_size %d)); lower "
        "reference_size, raise steps_per_round, batch_size or fresh_fraction, or use "
        "reference_mode \"paper\"",
        reference_size, round_fresh_share, steps_per_round, replay_enabled ? fresh_fraction : 1.0,
        batch_size));
  }
  return absl::OkStatus();
}

absl::Status RunConfig::ValidateForPool(int64_t pool_size) const {
  if (pool_size < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("pool size %d is negative", pool_size));
  }
  const int64_t references = reference_mode == ReferenceMode::kNone ? 0 : reference_size;
  if (references > pool_size) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "reference_size: %d reference questions exceed the pool size %d", references, pool_size));
  }
  // Round 0 has no replay yet, so its steps are all fresh: mu * B distinct questions, drawn
  // without replacement from the questions that are not references.
  const int64_t max_round_draw = steps_per_round * batch_size;
  if (max_round_draw > pool_size - references) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "steps_per_round %d * batch_size %d = %d fresh questions per round exceed the pool size "
        "%d minus reference_size %d",
        steps_per_round, batch_size, max_round_draw, pool_size, references));
  }
  return absl::OkStatus();
}

absl::StatusOr<RunConfig> ParseRunConfig(std::string_view json_text) {
  absl::StatusOr<JsonValue> root = ParseJson(json_text);
  if (!root.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("run config: invalid JSON: ", root.status().message()));
  }
  RunConfig c;
  int64_t group_size = c.group_size;
  int64_t seed = static_cast<int64_t>(c.seed);
  std::optional<ReferenceSampling> sampling;
  DOTS_RETURN_IF_ERROR(ReadObject(
      "", *root,
      {IntField("batch_size", "an integer in [1, 1000000]", &c.batch_size),
       IntField("group_size", "an integer in [1, 4096]", &group_size),
       IntField("steps_per_round", "an integer in [1, 10000]", &c.steps_per_round),
       IntField("reference_size", "an integer >= 0", &c.reference_size),
       EnumField("reference_mode", "\"inline\", \"paper\" or \"none\"", ParseReferenceMode,
                 &c.reference_mode),
       {"reference_sampling",
        [&sampling](const std::string& path, const JsonValue& v) -> absl::Status {
          if (v.is_null()) {
            sampling.reset();
            return absl::OkStatus();
          }
          DOTS_ASSIGN_OR_RETURN(std::string name,
                                ReadString(path, "\"uniform\", \"informative\" or null", v));
          absl::StatusOr<ReferenceSampling> parsed = ParseReferenceSampling(name);
          if (!parsed.ok()) return WithPath(path, parsed.status());
          sampling = *parsed;
          return absl::OkStatus();
        }},
       NumberField("alpha", "a finite number", &c.alpha),
       NumberField("tau", "a number > 0", &c.tau),
       NumberField("fresh_fraction", "a number in (0, 1]", &c.fresh_fraction),
       IntField("seed", "an integer in [0, 2^53] (JSON numbers are doubles, exact only up to 2^53)",
                &seed),
       NumberField("lease_timeout_seconds", "a number of seconds in (0, 30 days]",
                   &c.lease_timeout_seconds),
       {"estimator", [&c](const std::string&,
                          const JsonValue& v) { return ParseEstimatorConfig(v, &c.estimator); }},
       {"selector",
        [&c](const std::string& path, const JsonValue& v) { return ReadSelector(path, v, &c); }},
       {"replay",
        [&c](const std::string& path, const JsonValue& v) { return ReadReplay(path, v, &c); }}}));
  // Narrow only values that are in range; Validate reports the rest with the same message.
  DOTS_RETURN_IF_ERROR(CheckIntRange("group_size", group_size, 1, kMaxGroupSize));
  c.group_size = static_cast<int>(group_size);
  if (seed < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "seed: %d must be an integer in [0, 2^53] (JSON numbers are doubles, exact only up to "
        "2^53)",
        seed));
  }
  c.seed = static_cast<uint64_t>(seed);
  c.reference_sampling = sampling;
  c.replay.alpha = c.alpha;
  DOTS_RETURN_IF_ERROR(c.Validate());
  return c;
}

std::string RunConfigToJson(const RunConfig& c) {
  std::string out;
  absl::StrAppend(
      &out, "{\"batch_size\": ", c.batch_size, ", \"group_size\": ", c.group_size,
      ", \"steps_per_round\": ", c.steps_per_round, ", \"reference_size\": ", c.reference_size,
      ", \"reference_mode\": ", JsonQuote(ReferenceModeName(c.reference_mode)),
      ", \"reference_sampling\": ",
      c.reference_sampling.has_value() ? JsonQuote(ReferenceSamplingName(*c.reference_sampling))
                                       : "null",
      ", \"alpha\": ", JsonNumber(c.alpha), ", \"tau\": ", JsonNumber(c.tau),
      ", \"fresh_fraction\": ", JsonNumber(c.fresh_fraction), ", \"seed\": ", c.seed,
      ", \"lease_timeout_seconds\": ", JsonNumber(c.lease_timeout_seconds), ", \"estimator\": ");
  AppendEstimatorJson(c.estimator, &out);
  absl::StrAppend(
      &out, ", \"selector\": {\"strategy\": ", JsonQuote(SelectorStrategyName(c.selector_strategy)),
      ", \"cooldown_steps\": ", c.cooldown_steps, ", \"band_lo\": ", JsonNumber(c.band_lo),
      ", \"band_hi\": ", JsonNumber(c.band_hi),
      "}, \"replay\": {\"enabled\": ", c.replay_enabled ? "true" : "false",
      ", \"capacity_groups\": ", c.replay.capacity_groups,
      ", \"capacity_bytes\": ", c.replay.capacity_bytes,
      ", \"strategy\": ", JsonQuote(ReplayStrategyName(c.replay.strategy)),
      ", \"max_age_versions\": ", c.replay.max_age_versions,
      ", \"max_replays\": ", c.replay.max_replays,
      ", \"underfill\": ", JsonQuote(ReplayUnderfillName(c.underfill)), "}}");
  return out;
}

}  // namespace dots
