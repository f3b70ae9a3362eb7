#include "client/dotsctl/json_format.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/json.h"

namespace dots {
namespace {

void AppendKey(std::string_view key, std::string* out) {
  AppendJsonString(key, out);
  out->append(": ");
}

void AppendInt(std::string_view key, int64_t v, std::string* out) {
  AppendKey(key, out);
  absl::StrAppend(out, v);
}

}  // namespace

absl::StatusOr<std::string> DecodeBase64(std::string_view text) {
  constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
  if (const size_t at = text.find_first_not_of(kAlphabet); at != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("base64: at byte ", at, ": unexpected character 0x",
                     absl::Hex(static_cast<unsigned char>(text[at]), absl::kZeroPad2)));
  }
  if (text.size() % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("base64: length ", text.size(), " is not a multiple of 4"));
  }
  std::string bytes;
  // Abseil's decoder is lenient (it accepts missing padding, for one); comparing with the one
  // encoding of what it decoded rejects everything the encoder would not have written.
  const bool decoded = absl::Base64Unescape(ToAbsl(text), &bytes);
  const std::string canonical = decoded ? absl::Base64Escape(bytes) : std::string();
  if (!decoded || canonical != text) {
    const size_t at = static_cast<size_t>(
        std::mismatch(text.begin(), text.end(), canonical.begin(), canonical.end()).first -
        text.begin());
    return absl::InvalidArgumentError(
        absl::StrCat("base64: at byte ", at,
                     ": not a valid encoding ('=' only as the last one or two "
                     "characters, zero bits under the padding)"));
  }
  return bytes;
}

void AppendEmbeddedJson(std::string_view text, std::string_view empty_as, std::string* out) {
  if (text.empty()) {
    out->append(empty_as);
    return;
  }
  absl::StatusOr<JsonValue> value = ParseJson(text);
  if (value.ok()) {
    out->append(value->raw());
  } else {
    AppendJsonString(text, out);
  }
}

std::string RunInfoToJson(const RunInfo& run, bool details) {
  std::string out = "{";
  AppendKey("run_id", &out);
  AppendJsonString(run.run_id, &out);
  out += ", ";
  AppendKey("config", &out);
  AppendEmbeddedJson(run.config_json, "{}", &out);
  if (details) {
    out += ", ";
    AppendInt("pool_size", run.pool_size, &out);
    out += ", ";
    AppendInt("created_unix_seconds", run.created_unix_seconds, &out);
    // Only while sealed, so that the usual shape stays as it always was.
    if (run.sealed) out += ", \"sealed\": true";
  }
  out += "}";
  return out;
}

std::string BatchSliceToJson(std::string_view run_id, const BatchSlice& slice) {
  std::string out = "{";
  AppendKey("run_id", &out);
  AppendJsonString(run_id, &out);
  out += ", ";
  AppendInt("step", slice.step, &out);
  out += ", ";
  AppendInt("round", slice.round, &out);
  out += ", ";
  AppendKey("reference_batch", &out);
  out += slice.reference_batch ? "true" : "false";
  out += ", ";
  AppendInt("batch_size", slice.batch_size, &out);
  out += ", ";
  AppendKey("items", &out);
  out += "[";
  for (size_t i = 0; i < slice.items.size(); ++i) {
    const BatchItem& item = slice.items[i];
    if (i > 0) out += ", ";
    out += "{";
    AppendKey("key", &out);
    AppendJsonString(item.key, &out);
    out += ", ";
    AppendKey("role", &out);
    AppendJsonString(ItemRoleName(item.role), &out);
    out += ", ";
    AppendKey("prompt", &out);
    AppendJsonString(item.prompt, &out);
    out += ", ";
    AppendKey("metadata", &out);
    AppendEmbeddedJson(item.metadata_json, "{}", &out);
    out += "}";
  }
  out += "], ";
  AppendKey("replay", &out);
  out += "[";
  for (size_t i = 0; i < slice.replay.size(); ++i) {
    const ReplayGroup& group = slice.replay[i];
    if (i > 0) out += ", ";
    out += "{";
    AppendKey("key", &out);
    AppendJsonString(group.key, &out);
    out += ", ";
    AppendInt("step", group.step, &out);
    out += ", ";
    AppendInt("policy_version", group.policy_version, &out);
    out += ", ";
    AppendKey("rewards", &out);
    out += "[";
    for (size_t r = 0; r < group.rewards.size(); ++r) {
      if (r > 0) out += ", ";
      out += JsonFloat(group.rewards[r]);
    }
    out += "], ";
    AppendKey("payload_b64", &out);
    out += '"';
    out += absl::Base64Escape(ToAbsl(group.payload));
    out += '"';
    out += "}";
  }
  out += "]}";
  return out;
}

std::string ReportResultToJson(const ReportResult& result) {
  std::string out = "{";
  AppendInt("accepted", result.accepted, &out);
  out += ", ";
  AppendInt("duplicates", result.duplicates, &out);
  out += ", ";
  AppendKey("rejected", &out);
  out += "[";
  for (size_t i = 0; i < result.rejected.size(); ++i) {
    if (i > 0) out += ", ";
    out += "{";
    AppendKey("key", &out);
    AppendJsonString(result.rejected[i].first, &out);
    out += ", ";
    AppendKey("error", &out);
    AppendJsonString(result.rejected[i].second, &out);
    out += "}";
  }
  out += "]}";
  return out;
}

std::string EstimateToJson(const QuestionEstimate& estimate) {
  std::string out = "{";
  AppendKey("key", &out);
  AppendJsonString(estimate.key, &out);
  out += ", ";
  AppendKey("p_hat", &out);
  out += JsonNumber(estimate.p_hat);
  out += ", ";
  AppendInt("observations", estimate.observations, &out);
  out += ", ";
  AppendInt("last_policy_version", estimate.last_policy_version, &out);
  out += "}";
  return out;
}

std::string RunStatsToJson(const RunStats& s) {
  std::string out = "{";
  const std::pair<const char*, int64_t> head[] = {{"step", s.step},
                                                  {"round", s.round},
                                                  {"pool_size", s.pool_size},
                                                  {"reported_groups", s.reported_groups}};
  for (const auto& [key, value] : head) {
    AppendInt(key, value, &out);
    out += ", ";
  }
  AppendKey("effective_ratio_last_step", &out);
  out += JsonNumber(s.effective_ratio_last_step);
  const std::pair<const char*, int64_t> tail[] = {
      {"replay_groups", s.replay_groups},           {"replay_bytes", s.replay_bytes},
      {"leases_outstanding", s.leases_outstanding}, {"leases_expired", s.leases_expired},
      {"duplicate_reports", s.duplicate_reports},   {"rejected_reports", s.rejected_reports},
      {"effective_groups", s.effective_groups},     {"solve_all_groups", s.solve_all_groups},
      {"solve_none_groups", s.solve_none_groups},   {"replayed_groups", s.replayed_groups},
      {"rounds_planned", s.rounds_planned}};
  for (const auto& [key, value] : tail) {
    out += ", ";
    AppendInt(key, value, &out);
  }
  out += ", ";
  AppendKey("last_planning_seconds", &out);
  out += JsonNumber(s.last_planning_seconds);
  out += ", ";
  AppendInt("policy_version", s.policy_version, &out);
  out += ", ";
  AppendInt("model_version", s.model_version, &out);
  out += ", ";
  AppendInt("model_labels", s.model_labels, &out);
  const std::pair<const char*, double> model[] = {
      {"model_training_loss", s.model_training_loss},
      {"model_training_seconds", s.model_training_seconds},
      {"model_out_of_sample_pearson", s.model_out_of_sample_pearson}};
  for (const auto& [key, value] : model) {
    out += ", ";
    AppendKey(key, &out);
    out += JsonNumber(value);
  }
  out += "}";
  return out;
}

absl::StatusOr<RolloutReport> ParseReportLine(std::string_view line) {
  absl::StatusOr<JsonValue> value = ParseJson(line);
  if (!value.ok()) return value.status();
  if (!value->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("want a JSON object, got ", JsonValue::DescribeType(value->type())));
  }
  RolloutReport report;
  bool have_key = false, have_rewards = false;
  for (const auto& [name, field] : value->members()) {
    auto bad = [&name = name](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", name, "\": ", ToAbsl(what)));
    };
    if (name == "key") {
      if (!field.is_string() || field.as_string().empty())
        return bad("a non-empty string is required");
      report.key = field.as_string();
      have_key = true;
    } else if (name == "rewards") {
      if (!field.is_array()) return bad("an array of numbers is required");
      for (size_t i = 0; i < field.items().size(); ++i) {
        const JsonValue& r = field.items()[i];
        if (!r.is_number() || !std::isfinite(r.as_number())) {
          return bad(absl::StrCat("element ", i, ": a finite number is required"));
        }
        report.rewards.push_back(static_cast<float>(r.as_number()));
      }
      have_rewards = true;
    } else if (name == "policy_version") {
      const double v = field.is_number() ? field.as_number() : -1;
      if (!(v >= 0 && v <= 9007199254740992.0 && std::floor(v) == v)) {
        return bad("an integer in [0, 2^53] is required");
      }
      report.policy_version = static_cast<int64_t>(v);
    } else if (name == "payload_b64") {
      if (!field.is_string()) return bad("a base64 string is required");
      absl::StatusOr<std::string> payload = DecodeBase64(field.as_string());
      if (!payload.ok()) return bad(std::string(payload.status().message()));
      report.payload = std::move(*payload);
    } else {
      return bad("unknown field (want key, rewards, policy_version, payload_b64)");
    }
  }
  if (!have_key) return absl::InvalidArgumentError("field \"key\": missing");
  if (!have_rewards) return absl::InvalidArgumentError("field \"rewards\": missing");
  return report;
}

}  // namespace dots
