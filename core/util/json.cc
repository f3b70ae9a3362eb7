#include "core/util/json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/file_util.h"

namespace dots {

const JsonValue* JsonValue::Find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& [name, value] : members_) {
    if (name == key) return &value;
  }
  return nullptr;
}

const char* JsonValue::TypeName(Type t) {
  switch (t) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "bool";
    case Type::kNumber:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "unknown";
}

const char* JsonValue::DescribeType(Type t) {
  switch (t) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "a bool";
    case Type::kNumber:
      return "a number";
    case Type::kString:
      return "a string";
    case Type::kArray:
      return "an array";
    case Type::kObject:
      return "an object";
  }
  return "unknown";
}

namespace {

// Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 if the bytes there are not
// well-formed UTF-8 per RFC 3629 (no overlongs, no surrogates, nothing above U+10FFFF).
size_t Utf8SequenceLength(const unsigned char* s, size_t available) {
  const unsigned char c = s[0];
  if (c < 0x80) return 1;
  auto cont = [&](size_t i) { return i < available && (s[i] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;  // overlong
    if (c == 0xED && s[1] > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;  // overlong
    if (c == 0xF4 && s[1] > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;  // 0x80..0xC1 (continuation or overlong lead) and 0xF5..0xFF
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A printable description of the byte at the error position, for "got ..." in messages.
std::string DescribeByte(std::string_view text, size_t pos) {
  if (pos >= text.size()) return "end of input";
  const unsigned char c = static_cast<unsigned char>(text[pos]);
  if (c >= 0x20 && c < 0x7F) return absl::StrCat("'", std::string(1, static_cast<char>(c)), "'");
  return absl::StrFormat("byte 0x%02X", c);
}

}  // namespace

// Recursive-descent parser over the whole text. Friend of JsonValue so it can fill the fields.
class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  absl::StatusOr<JsonValue> ParseDocument() {
    JsonValue root;
    SkipWhitespace();
    if (!ParseValue(&root, 0)) return std::move(error_);
    SkipWhitespace();
    if (pos_ != text_.size()) {
      Fail(absl::StrCat("expected end of input after the JSON value, got ",
                        DescribeByte(text_, pos_)));
      return std::move(error_);
    }
    return root;
  }

 private:
  // Records the first error (at the current position) and returns false for chaining.
  bool Fail(absl::string_view what) { return FailAt(pos_, what); }
  bool FailAt(size_t pos, absl::string_view what) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(absl::StrCat("at byte ", pos, ": ", what));
    return false;
  }
  bool Expected(absl::string_view what) {
    return Fail(absl::StrCat("expected ", what, ", got ", DescribeByte(text_, pos_)));
  }

  void SkipWhitespace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  bool ConsumeLiteral(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) {
      return Expected(absl::StrCat("'", ToAbsl(word), "'"));
    }
    pos_ += word.size();
    return true;
  }

  bool ParseValue(JsonValue* out, int depth) {
    const size_t start = pos_;
    if (pos_ >= text_.size()) return Expected("a JSON value");
    bool ok = false;
    switch (text_[pos_]) {
      case '{':
        ok = ParseObject(out, depth + 1);
        break;
      case '[':
        ok = ParseArray(out, depth + 1);
        break;
      case '"':
        out->type_ = JsonValue::Type::kString;
        ok = ParseString(&out->string_);
        break;
      case 't':
        out->type_ = JsonValue::Type::kBool;
        out->bool_ = true;
        ok = ConsumeLiteral("true");
        break;
      case 'f':
        out->type_ = JsonValue::Type::kBool;
        ok = ConsumeLiteral("false");
        break;
      case 'n':
        out->type_ = JsonValue::Type::kNull;
        ok = ConsumeLiteral("null");
        break;
      default:
        out->type_ = JsonValue::Type::kNumber;
        ok = ParseNumber(&out->number_);
    }
    if (!ok) return false;
    out->raw_ = text_.substr(start, pos_ - start);
    return true;
  }

  bool ParseObject(JsonValue* out, int depth) {
    if (depth > kJsonMaxDepth) {
      return Fail(absl::StrCat("nesting deeper than ", kJsonMaxDepth, " levels"));
    }
    out->type_ = JsonValue::Type::kObject;
    ++pos_;  // '{'
    SkipWhitespace();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return true;
    }
    // Small objects check duplicates by a linear scan; big ones (e.g. safetensors headers with
    // thousands of tensors) switch to a hash set so parsing stays linear.
    constexpr size_t kLinearScanLimit = 16;
    absl::flat_hash_set<std::string> seen;  // owns copies: member keys move as the vector grows
    auto& members = out->members_;
    while (true) {
      if (pos_ >= text_.size() || text_[pos_] != '"') return Expected("a string key");
      const size_t key_pos = pos_;
      std::string key;
      if (!ParseString(&key)) return false;
      bool duplicate = false;
      if (members.size() < kLinearScanLimit) {
        for (const auto& m : members) duplicate = duplicate || m.first == key;
      } else {
        if (seen.empty()) {
          for (const auto& m : members) seen.insert(m.first);
        }
        duplicate = seen.contains(key);
      }
      if (duplicate) return FailAt(key_pos, absl::StrCat("duplicate object key ", JsonQuote(key)));
      SkipWhitespace();
      if (pos_ >= text_.size() || text_[pos_] != ':') return Expected("':' after object key");
      ++pos_;
      SkipWhitespace();
      members.emplace_back(std::move(key), JsonValue());
      if (!seen.empty()) seen.insert(members.back().first);
      if (!ParseValue(&members.back().second, depth)) return false;
      SkipWhitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        SkipWhitespace();
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return true;
      }
      return Expected("',' or '}' in object");
    }
  }

  bool ParseArray(JsonValue* out, int depth) {
    if (depth > kJsonMaxDepth) {
      return Fail(absl::StrCat("nesting deeper than ", kJsonMaxDepth, " levels"));
    }
    out->type_ = JsonValue::Type::kArray;
    ++pos_;  // '['
    SkipWhitespace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      out->items_.emplace_back();
      if (!ParseValue(&out->items_.back(), depth)) return false;
      SkipWhitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        SkipWhitespace();
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return true;
      }
      return Expected("',' or ']' in array");
    }
  }

  // Reads 4 hex digits at pos_ into *code.
  bool ParseHex4(uint32_t* code) {
    if (pos_ + 4 > text_.size()) {
      pos_ = text_.size();
      return Expected("4 hex digits after \\u");
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Expected("a hex digit in \\u escape");
      }
      ++pos_;
    }
    *code = v;
    return true;
  }

  bool ParseString(std::string* out) {
    const size_t open = pos_;
    ++pos_;  // opening quote
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(text_.data());
    const size_t n = text_.size();
    while (true) {
      // Copy the longest run of plain ASCII in one append: most strings have no escapes.
      const size_t run_start = pos_;
      while (pos_ < n) {
        const unsigned char c = bytes[pos_];
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++pos_;
      }
      out->append(text_.data() + run_start, pos_ - run_start);
      if (pos_ >= n) return FailAt(open, "unterminated string");
      const unsigned char c = bytes[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) {
        return Fail(absl::StrFormat("raw control character 0x%02X in string (must be escaped)", c));
      }
      if (c >= 0x80) {
        const size_t len = Utf8SequenceLength(bytes + pos_, n - pos_);
        if (len == 0) return Fail(absl::StrFormat("invalid UTF-8 (byte 0x%02X)", c));
        out->append(text_.data() + pos_, len);
        pos_ += len;
        continue;
      }
      // Backslash escape.
      const size_t escape_pos = pos_;
      ++pos_;
      if (pos_ >= n) return FailAt(open, "unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!ParseHex4(&cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return FailAt(escape_pos, "unpaired low surrogate in \\u escape");
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 1 >= n || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
              return FailAt(escape_pos, "high surrogate in \\u escape not followed by \\u low");
            }
            pos_ += 2;
            uint32_t low = 0;
            if (!ParseHex4(&low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) {
              return FailAt(escape_pos, "high surrogate in \\u escape not followed by a low one");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          pos_ = escape_pos;
          return Fail(absl::StrCat("invalid escape \\", DescribeByte(text_, escape_pos + 1)));
      }
    }
  }

  // RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  bool ParseNumber(double* out) {
    const size_t start = pos_;
    const size_t n = text_.size();
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < n && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    if (pos_ < n && text_[pos_] == '-') ++pos_;
    if (pos_ >= n || text_[pos_] < '0' || text_[pos_] > '9') {
      pos_ = start;
      return Expected("a JSON value");
    }
    if (text_[pos_] == '0') {
      ++pos_;
      if (pos_ < n && text_[pos_] >= '0' && text_[pos_] <= '9') {
        return Fail("leading zeros are not allowed in numbers");
      }
    } else {
      digits();
    }
    if (pos_ < n && text_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) return Expected("a digit after the decimal point");
    }
    if (pos_ < n && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < n && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (digits() == 0) return Expected("a digit in the exponent");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    const auto [ptr, ec] = std::from_chars(first, last, *out);
    if (ec == std::errc::result_out_of_range) {
      // from_chars leaves the value unset on overflow/underflow; strtod gives +-HUGE_VAL (inf)
      // or the nearest subnormal/zero, which is what a JSON reader should report.
      const std::string copy(first, last);
      *out = std::strtod(copy.c_str(), nullptr);
    } else if (ec != std::errc() || ptr != last) {
      return FailAt(start, "malformed number");
    }
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
  absl::Status error_;
};

absl::StatusOr<JsonValue> ParseJson(std::string_view text) {
  return JsonParser(text).ParseDocument();
}

void AppendJsonString(std::string_view s, std::string* out) {
  out->reserve(out->size() + s.size() + 2);
  out->push_back('"');
  size_t run_start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        absl::StrAppendFormat(out, "\\u%04x", c);
    }
  }
  out->append(s.data() + run_start, s.size() - run_start);
  out->push_back('"');
}

std::string JsonQuote(std::string_view s) {
  std::string out;
  AppendJsonString(s, &out);
  return out;
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  // Without a format argument, to_chars emits the shortest representation that round-trips.
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "null";  // cannot happen with 64 bytes
  return std::string(buf, ptr);
}

std::string JsonFloat(float v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "null";
  return std::string(buf, ptr);
}

}  // namespace dots
