// Fuzzes the label loader (core/formats/labels.h) on bytes in memory, against a fixed pool of
// eight questions (keys "q0".."q6" and "é"). The first byte picks the options (bit 0:
// require_source); the rest is the JSONL text. For every input that parses: each label names
// a pool question and a listed source, its rate is in [0, 1], its weight finite and >= 0, its
// rollouts (if any) in [1, 1e6]; lines increase; no (question, source) pair repeats; sources
// are distinct and each is used; every label line parses alone to the same record. Every
// rejection is INVALID_ARGUMENT starting with "fuzz.jsonl:<line>: ".
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/formats/labels.h"
#include "core/formats/pool.h"
#include "fuzz/fuzz_check.h"

namespace {

const dots::Pool& FixedPool() {
  static const dots::Pool* pool = [] {
    auto* p = new dots::Pool();
    for (const char* key : {"q0", "q1", "q2", "q3", "q4", "q5", "q6", "\xc3\xa9"}) {
      dots::Question q;
      q.key = key;
      FUZZ_CHECK(p->Add(q).ok(), "fixed pool");
    }
    return p;
  }();
  return *pool;
}

// The text of 1-based line `line` of `text` (without its newline).
std::string_view Line(std::string_view text, int64_t line) {
  size_t start = 0;
  for (int64_t i = 1; i < line; ++i) start = text.find('\n', start) + 1;
  size_t end = text.find('\n', start);
  return text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  dots::LabelOptions options;
  options.require_source = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const dots::Pool& pool = FixedPool();
  absl::StatusOr<dots::LabelFile> file = dots::ParseLabels(text, "fuzz.jsonl", pool, options);
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kInvalidArgument,
               file.status().ToString());
    const std::string message(file.status().message());
    const size_t colon = message.find(':', 11);
    int64_t line = 0;
    FUZZ_CHECK(message.rfind("fuzz.jsonl:", 0) == 0 && colon != std::string::npos &&
                   absl::SimpleAtoi(message.substr(11, colon - 11), &line) && line >= 1,
               "the error does not name fuzz.jsonl:<line>: " + message);
    return 0;
  }
  std::set<std::pair<int64_t, int32_t>> pairs;
  std::vector<bool> used(file->sources.size(), false);
  int64_t last_line = 0;
  for (const dots::LabelRecord& l : file->labels) {
    FUZZ_CHECK(l.question >= 0 && l.question < pool.size(), absl::StrCat("question ", l.question));
    FUZZ_CHECK(l.source >= 0 && static_cast<size_t>(l.source) < file->sources.size(),
               absl::StrCat("source ", l.source));
    used[l.source] = true;
    FUZZ_CHECK(l.rate >= 0 && l.rate <= 1, absl::StrCat("rate ", l.rate));
    FUZZ_CHECK(std::isfinite(l.weight) && l.weight >= 0, absl::StrCat("weight ", l.weight));
    FUZZ_CHECK(!l.rollouts.has_value() || (*l.rollouts >= 1 && *l.rollouts <= 1000000),
               "rollouts out of range");
    FUZZ_CHECK(l.line > last_line, "lines do not increase");
    last_line = l.line;
    FUZZ_CHECK(pairs.insert({l.question, l.source}).second, "a (question, source) repeats");
    // The line alone parses to the same record.
    absl::StatusOr<dots::LabelFile> alone =
        dots::ParseLabels(Line(text, l.line), "line", pool, options);
    FUZZ_CHECK(alone.ok() && alone->labels.size() == 1, "a label line does not parse alone");
    const dots::LabelRecord& a = alone->labels[0];
    FUZZ_CHECK(a.question == l.question && a.rate == l.rate && a.weight == l.weight &&
                   a.rollouts == l.rollouts && alone->sources[0] == file->sources[l.source],
               "a label line parses alone to another record");
  }
  for (size_t s = 0; s < file->sources.size(); ++s) {
    FUZZ_CHECK(used[s], "a listed source has no label");
    for (size_t t = 0; t < s; ++t) {
      FUZZ_CHECK(file->sources[s] != file->sources[t], "sources repeat");
    }
  }
  return 0;
}
