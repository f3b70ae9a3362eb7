#include "core/formats/labels.h"

#include <cmath>
#include <map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

// Long keys and sources are echoed as a prefix so that a message stays readable.
std::string Quote(std::string_view s) {
  constexpr size_t kShown = 80;
  if (s.size() <= kShown) return JsonQuote(s);
  size_t cut = kShown;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(JsonQuote(s.substr(0, cut)), "...");
}

// Python's json module writes NaN, Infinity and -Infinity, which are not JSON. When a line
// fails to parse, this finds such a token outside strings and the member it is the value of, so
// that the error names the field rather than a byte offset. Returns false when there is none.
bool FindNonJsonNumber(std::string_view line, std::string* field, std::string* token) {
  bool in_string = false, escaped = false;
  size_t string_start = 0;
  std::string_view last_string, current_key;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        last_string = line.substr(string_start, i - string_start);
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      string_start = i + 1;
    } else if (c == ':') {
      current_key = last_string;
    } else if (c == ',' || c == '{') {
      current_key = {};
    } else {
      for (std::string_view t : {"NaN", "Infinity", "-Infinity"}) {
        if (line.substr(i, t.size()) == t) {
          *field = std::string(current_key);
          *token = std::string(t);
          return true;
        }
      }
    }
  }
  return false;
}

absl::Status TypeError(std::string_view field, const JsonValue& v, std::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("field \"", ToAbsl(field), "\": is ",
                                                 JsonValue::DescribeType(v.type()), ", want ",
                                                 ToAbsl(want)));
}

absl::StatusOr<double> ReadRate(const JsonValue& object) {
  const JsonValue* rate = object.Find("rate");
  const JsonValue* alias = object.Find("success_rate");
  if (rate != nullptr && alias != nullptr) {
    return absl::InvalidArgumentError(
        "field \"success_rate\": given together with \"rate\" (they are the same field)");
  }
  const char* name = rate != nullptr ? "rate" : "success_rate";
  if (rate == nullptr) rate = alias;
  if (rate == nullptr) {
    return absl::InvalidArgumentError("field \"rate\": missing (want a number in [0, 1])");
  }
  if (!rate->is_number()) return TypeError(name, *rate, "a number in [0, 1]");
  const double r = rate->as_number();
  if (!(r >= 0.0 && r <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", name, "\": ", std::string(rate->raw()), " is outside [0, 1]"));
  }
  return r;
}

}  // namespace

absl::StatusOr<LabelFile> ParseLabels(std::string_view text, std::string_view name_for_errors,
                                      const Pool& pool, const LabelOptions& options) {
  LabelFile out;
  std::map<std::string, int32_t, std::less<>> source_ids;
  // (question, source) -> line of its first label.
  absl::flat_hash_map<std::pair<int64_t, int32_t>, int64_t> seen;
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(ToAbsl(name_for_errors), ":", line_no, ": ", what));
    };

    absl::StatusOr<JsonValue> value = ParseJson(line);
    if (!value.ok()) {
      std::string field, token;
      if (FindNonJsonNumber(line, &field, &token)) {
        return error(absl::StrCat("field \"", field, "\": ", token,
                                  " is not a number (want a finite JSON number)"));
      }
      return error(value.status().message());
    }
    if (!value->is_object()) {
      return error(
          absl::StrCat("is ", JsonValue::DescribeType(value->type()), ", want a JSON object"));
    }
    const JsonValue* key = value->Find("key");
    if (key == nullptr) return error("field \"key\": missing (want a question key)");
    if (!key->is_string()) return error(TypeError("key", *key, "a string").message());
    const std::optional<int64_t> question = pool.IndexOf(key->as_string());
    if (!question.has_value()) {
      return error(
          absl::StrCat("field \"key\": ", Quote(key->as_string()), " is not in the question pool"));
    }
    absl::StatusOr<double> rate = ReadRate(*value);
    if (!rate.ok()) return error(rate.status().message());

    std::string source;
    if (const JsonValue* s = value->Find("source"); s != nullptr) {
      if (!s->is_string()) return error(TypeError("source", *s, "a string").message());
      source = s->as_string();
    } else if (options.require_source) {
      return error("field \"source\": missing (want the name of the labelling model)");
    }
    LabelRecord record;
    record.question = *question;
    record.rate = *rate;
    record.line = line_no;
    if (const JsonValue* r = value->Find("rollouts"); r != nullptr) {
      const double n = r->is_number() ? r->as_number() : -1;
      if (!(n >= 1 && n <= 1e6 && std::floor(n) == n)) {
        return error(absl::StrCat("field \"rollouts\": ", std::string(r->raw()),
                                  " is not an integer in [1, 1000000]"));
      }
      record.rollouts = static_cast<int>(n);
    }
    if (const JsonValue* w = value->Find("weight"); w != nullptr) {
      if (!w->is_number()) return error(TypeError("weight", *w, "a number >= 0").message());
      if (!(w->as_number() >= 0) || !std::isfinite(w->as_number())) {
        return error(absl::StrCat("field \"weight\": ", std::string(w->raw()),
                                  " is not a finite number >= 0"));
      }
      record.weight = w->as_number();
    }
    auto [it, inserted] = source_ids.try_emplace(source, static_cast<int32_t>(out.sources.size()));
    if (inserted) out.sources.push_back(source);
    record.source = it->second;
    auto [first, fresh] = seen.try_emplace(std::make_pair(record.question, record.source), line_no);
    if (!fresh) {
      return error(absl::StrCat("key ", Quote(key->as_string()), " with source ", Quote(source),
                                " is labeled twice (first on line ", first->second, ")"));
    }
    out.labels.push_back(record);
  }
  return out;
}

absl::StatusOr<LabelFile> LoadLabels(const std::string& path, const Pool& pool,
                                     const LabelOptions& options) {
  DOTS_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseLabels(text, path, pool, options);
}

}  // namespace dots
