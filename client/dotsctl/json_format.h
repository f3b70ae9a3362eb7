// JSON renderings of the client's types, in the exact shapes dotsctl prints (scripts and tests
// rely on them), the parser of dotsctl's report lines and the base64 of their payloads. Everything
// is one line of JSON; values that are JSON text on the wire (config_json, metadata_json) are
// embedded as JSON, not as strings. Numbers use the shortest text that reads back to the same value
// (rewards as floats, core/util/json.h JsonFloat).
#ifndef DOTS_CLIENT_DOTSCTL_JSON_FORMAT_H_
#define DOTS_CLIENT_DOTSCTL_JSON_FORMAT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/types.h"

namespace dots {

// Standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, '=' padding) of arbitrary bytes, as
// payload_b64 carries them. Encoding is absl::Base64Escape. Decoding is strict: only the one
// encoding Base64Escape gives for some bytes is accepted, so a corrupted or truncated payload is
// never silently accepted. INVALID_ARGUMENT naming the byte offset for a character outside the
// alphabet (whitespace and the URL-safe '-' '_' included), a length that is not a multiple of 4,
// '=' anywhere but the last one or two positions, or non-zero bits under the padding.
// O(len(text)). Does not block.
absl::StatusOr<std::string> DecodeBase64(std::string_view text);

// Appends `text` as an embedded JSON value if it is valid JSON ("" counts as `empty_as`, e.g.
// "{}"), else as a JSON string holding it (so the output is always valid JSON). O(len(text)).
void AppendEmbeddedJson(std::string_view text, std::string_view empty_as, std::string* out);

// {"run_id": ..., "config": {...}} and, with `details`, "pool_size" and "created_unix_seconds".
std::string RunInfoToJson(const RunInfo& run, bool details);

// {"run_id", "step", "round", "reference_batch", "batch_size",
//  "items": [{"key", "role": "fresh"|"reference", "prompt", "metadata"}],
//  "replay": [{"key", "step", "policy_version", "rewards": [...], "payload_b64"}]}
// payload_b64 is standard base64 with padding. O(total bytes of the slice).
std::string BatchSliceToJson(std::string_view run_id, const BatchSlice& slice);

// {"accepted": n, "duplicates": n, "rejected": [{"key", "error"}]}
std::string ReportResultToJson(const ReportResult& result);

// {"key", "p_hat", "observations", "last_policy_version"}
std::string EstimateToJson(const QuestionEstimate& estimate);

// {"step", "round", "pool_size", "reported_groups", "effective_ratio_last_step",
//  "replay_groups", "replay_bytes", "leases_outstanding", "leases_expired", then the other
//  RunStats fields: "duplicate_reports", "rejected_reports", "effective_groups",
//  "solve_all_groups", "solve_none_groups", "replayed_groups", "rounds_planned",
//  "last_planning_seconds", "policy_version", "model_version", "model_labels",
//  "model_training_loss", "model_training_seconds", "model_out_of_sample_pearson"}
std::string RunStatsToJson(const RunStats& stats);

// Parses one report line: {"key": "q1", "rewards": [1, 0, ...], "policy_version": 3,
// "payload_b64": "..."}. "key" (non-empty string) and "rewards" (array of finite numbers) are
// required; "policy_version" (integer in [0, 2^53], default 0) and "payload_b64" (padded standard
// base64, default empty) are optional; any other field is an error, so a typo is never silently
// dropped. Reward ranges are the server's to check. Errors: INVALID_ARGUMENT naming the field,
// without file or line (the caller adds them). O(len(line)).
absl::StatusOr<RolloutReport> ParseReportLine(std::string_view line);

}  // namespace dots

#endif  // DOTS_CLIENT_DOTSCTL_JSON_FORMAT_H_
