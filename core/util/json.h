// A strict JSON reader (RFC 8259) and the few writers core/ needs. No third-party library: the
// pool loader, the safetensors header and the config files all go through this one parser, so its
// strictness (valid UTF-8, no duplicate keys, no trailing garbage, depth limit) is the single
// place where hostile or malformed input is stopped.
//
// Lifetime: every JsonValue keeps `raw()`, a view into the text passed to ParseJson. The decoded
// parts (strings, numbers, arrays, objects) are owned copies, but raw() is valid only while that
// text is alive and unmodified. Copy raw() into a std::string if it must outlive the text.
#ifndef DOTS_CORE_UTIL_JSON_H_
#define DOTS_CORE_UTIL_JSON_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dots {

// Maximum nesting of arrays/objects accepted by ParseJson; deeper input is an error rather than
// a stack overflow.
inline constexpr int kJsonMaxDepth = 256;

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  JsonValue() = default;  // null, empty raw()

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors. Calling one on a value of another type returns false / 0.0 / an empty string /
  // an empty vector (never undefined behaviour); check the type first.
  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }  // may be +-inf for e.g. 1e400 (caller checks)
  const std::string& as_string() const { return string_; }        // decoded UTF-8, escapes resolved
  const std::vector<JsonValue>& items() const { return items_; }  // array elements
  // Object members in source order. Keys are unique (ParseJson rejects duplicates).
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }

  // The member named `key`, or nullptr if absent or this is not an object. O(members).
  const JsonValue* Find(std::string_view key) const;

  // The exact source text of this value (no surrounding whitespace). Valid only while the text
  // given to ParseJson is alive; see the file comment.
  std::string_view raw() const { return raw_; }

  // "null", "bool", "number", "string", "array", "object": for error messages.
  static const char* TypeName(Type t);
  // The same with an article, for prose: "null", "a bool", "a number", "a string", "an array",
  // "an object" (e.g. "field \"key\": is a number, want a string").
  static const char* DescribeType(Type t);

 private:
  friend class JsonParser;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
  std::string_view raw_;
};

// Parses exactly one JSON document (surrounding whitespace allowed, nothing else). O(len(text))
// time; recursion depth at most kJsonMaxDepth. Does not block.
// Rejects: invalid UTF-8 (anywhere, including inside strings), unpaired surrogates in \u escapes,
// raw control characters in strings, NaN/Infinity and other non-JSON number forms, duplicate
// object keys (the error names the key), nesting deeper than kJsonMaxDepth, trailing text.
// Numbers are converted to double; magnitudes beyond double range become +-inf (callers that need
// finite values must check). On error returns InvalidArgument whose message gives the byte
// offset and what was expected, e.g. "at byte 12: expected ',' or '}' in object".
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

// Appends `s` as a JSON string literal to *out: quotes, \" \\ \b \f \n \r \t, other control
// characters as \u00XX. Bytes >= 0x80 are copied unchanged (callers pass UTF-8). O(len(s)).
void AppendJsonString(std::string_view s, std::string* out);
// Same, returned as a new string.
std::string JsonQuote(std::string_view s);

// Formats a double for JSON output with the shortest text that parses back to the same double
// (e.g. "0.1", "1e+300", "3"). Returns "null" for NaN and +-inf, which JSON cannot represent.
std::string JsonNumber(double v);
// The same for a float: the shortest text that round-trips to the same float (0.1f -> 0.1).
std::string JsonFloat(float v);

}  // namespace dots

#endif  // DOTS_CORE_UTIL_JSON_H_
