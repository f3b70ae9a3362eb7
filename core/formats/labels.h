// Labeled outcomes of pool questions: success rates measured under one or more labelling sources
// (the paper trains its adapter on the pass rates of several LLMs; each source is one model, or
// one policy version). Read by `dotsctl adapter train` and `dotsctl estimate`.
//
// JSONL format, one JSON object per line (blank lines are skipped, unknown fields ignored):
//   {"key": "q17", "source": "qwen2.5-7b", "rate": 0.375, "rollouts": 8, "weight": 1}
//   key       string, required: a question of the pool.
//   rate      number in [0, 1], required: the success rate. "success_rate" is accepted as the
//             same field (the older `dotsctl estimate` name); giving both is an error.
//   source    string, optional ("" when absent; required with LabelOptions::require_source).
//   rollouts  integer in [1, 1000000], optional: the number of rollouts behind the rate.
//   weight    finite number >= 0, optional (default 1): the label's weight in a training loss.
// A (key, source) pair appears at most once.
#ifndef DOTS_CORE_FORMATS_LABELS_H_
#define DOTS_CORE_FORMATS_LABELS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/formats/pool.h"

namespace dots {

struct LabelRecord {
  int64_t question = 0;  // pool index
  int32_t source = 0;    // index into LabelFile::sources
  double rate = 0;       // in [0, 1]
  std::optional<int> rollouts;
  double weight = 1;  // finite, >= 0
  int64_t line = 0;   // 1-based line of the file
};

struct LabelFile {
  std::vector<std::string> sources;  // distinct sources in order of first appearance
  std::vector<LabelRecord> labels;   // in file order
};

struct LabelOptions {
  // Every line must name its source (training data: references come from the query's source).
  bool require_source = false;
};

// Parses label lines against `pool`. Every error is INVALID_ARGUMENT naming
// `name_for_errors:line` and the field or key, and nothing is returned on error:
//   L.jsonl:3: field "rate": 1.5 is outside [0, 1]
//   L.jsonl:4: field "rate": NaN is not a number (want a number in [0, 1])
//   L.jsonl:5: field "key": "q9" is not in the question pool
//   L.jsonl:6: field "rate": missing (want a number in [0, 1])
//   L.jsonl:7: key "q1" with source "m" is labeled twice (first on line 2)
// Cost: O(len(text)) plus one hash lookup per line; does not block. An input without any label
// line is not an error (an empty LabelFile).
absl::StatusOr<LabelFile> ParseLabels(std::string_view text, std::string_view name_for_errors,
                                      const Pool& pool, const LabelOptions& options = {});

// ParseLabels on the file at `path` (errors name the path; NOT_FOUND / INTERNAL for I/O).
// Reads the whole file; blocks on file I/O.
absl::StatusOr<LabelFile> LoadLabels(const std::string& path, const Pool& pool,
                                     const LabelOptions& options = {});

}  // namespace dots

#endif  // DOTS_CORE_FORMATS_LABELS_H_
