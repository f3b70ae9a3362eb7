// Fuzzes the strict JSON parser (core/util/json.h), which every loader and the run config go
// through. Beyond "no crash, no sanitizer report", for every document that parses:
//   - the root's raw() is the input without its surrounding whitespace, and parses again;
//   - every decoded string (values and keys) survives JsonQuote -> ParseJson unchanged;
//   - every finite number survives JsonNumber -> ParseJson bit for bit;
// and every rejection is INVALID_ARGUMENT with a message.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/util/json.h"
#include "fuzz/fuzz_check.h"

namespace {

using dots::JsonValue;

void CheckStringRoundTrip(const std::string& s) {
  const std::string quoted = dots::JsonQuote(s);
  absl::StatusOr<JsonValue> back = dots::ParseJson(quoted);
  FUZZ_CHECK(back.ok(), "JsonQuote output does not parse: " + quoted);
  FUZZ_CHECK(back->is_string() && back->as_string() == s,
             "JsonQuote round trip differs: " + quoted);
}

void CheckNumberRoundTrip(double x) {
  if (!(x - x == 0)) return;  // +-inf: JsonNumber writes null by design
  const std::string text = dots::JsonNumber(x);
  absl::StatusOr<JsonValue> back = dots::ParseJson(text);
  FUZZ_CHECK(back.ok() && back->is_number(), "JsonNumber output does not parse: " + text);
  const double y = back->as_number();
  FUZZ_CHECK(std::memcmp(&x, &y, sizeof x) == 0 || (x == 0 && y == 0),
             "JsonNumber round trip differs: " + text);
}

void Walk(const JsonValue& v) {
  switch (v.type()) {
    case JsonValue::Type::kString:
      CheckStringRoundTrip(v.as_string());
      break;
    case JsonValue::Type::kNumber:
      CheckNumberRoundTrip(v.as_number());
      break;
    case JsonValue::Type::kArray:
      for (const JsonValue& item : v.items()) Walk(item);
      break;
    case JsonValue::Type::kObject:
      for (const auto& [key, value] : v.members()) {
        CheckStringRoundTrip(key);
        FUZZ_CHECK(v.Find(key) == &value, "Find does not return the member of a unique key");
        Walk(value);
      }
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<JsonValue> parsed = dots::ParseJson(text);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    FUZZ_CHECK(!parsed.status().message().empty(), "an error without a message");
    return 0;
  }
  const size_t begin = text.find_first_not_of(" \t\n\r");
  const size_t end = text.find_last_not_of(" \t\n\r");
  FUZZ_CHECK(begin != std::string_view::npos, "whitespace-only input parsed");
  FUZZ_CHECK(parsed->raw() == text.substr(begin, end - begin + 1),
             "raw() is not the trimmed input: " + std::string(parsed->raw()));
  FUZZ_CHECK(dots::ParseJson(parsed->raw()).ok(), "raw() does not parse again");
  Walk(*parsed);
  return 0;
}
