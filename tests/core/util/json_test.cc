#include "core/util/json.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/util/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::HasSubstr;

// Parses text that must be valid and returns the value.
JsonValue MustParse(std::string_view text) {
  auto v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << "input: " << text << "\nstatus: " << v.status();
  return v.ok() ? *std::move(v) : JsonValue();
}

// Returns the error message of a parse that must fail.
std::string ParseError(std::string_view text) {
  auto v = ParseJson(text);
  EXPECT_FALSE(v.ok()) << "unexpectedly parsed: " << text;
  if (v.ok()) return "";
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(v.status().message());
}

TEST(JsonTest, Scalars) {
  EXPECT_TRUE(MustParse("null").is_null());
  JsonValue t = MustParse("true");
  ASSERT_TRUE(t.is_bool());
  EXPECT_TRUE(t.as_bool());
  JsonValue f = MustParse(" false ");
  ASSERT_TRUE(f.is_bool());
  EXPECT_FALSE(f.as_bool());
  JsonValue n = MustParse("-12.5e1");
  ASSERT_TRUE(n.is_number());
  EXPECT_EQ(n.as_number(), -125.0);
  JsonValue s = MustParse("\"hi\"");
  ASSERT_TRUE(s.is_string());
  EXPECT_EQ(s.as_string(), "hi");
  EXPECT_EQ(s.type(), JsonValue::Type::kString);
}

TEST(JsonTest, AccessorsOnWrongTypeAreHarmless) {
  JsonValue n = MustParse("3");
  EXPECT_EQ(n.Find("a"), nullptr);
  EXPECT_TRUE(n.items().empty());
  EXPECT_TRUE(n.members().empty());
  EXPECT_EQ(n.as_string(), "");
  EXPECT_FALSE(n.as_bool());
  JsonValue arr = MustParse("[1]");
  EXPECT_EQ(arr.Find("0"), nullptr);
}

TEST(JsonTest, TypeNames) {
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kNull), "null");
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kBool), "bool");
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kNumber), "number");
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kString), "string");
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kArray), "array");
  EXPECT_STREQ(JsonValue::TypeName(JsonValue::Type::kObject), "object");
}

TEST(JsonTest, NumberEdgeCases) {
  EXPECT_EQ(MustParse("0").as_number(), 0.0);
  JsonValue neg_zero = MustParse("-0");
  EXPECT_EQ(neg_zero.as_number(), 0.0);
  EXPECT_TRUE(std::signbit(neg_zero.as_number()));
  EXPECT_EQ(MustParse("0.1").as_number(), 0.1);
  EXPECT_EQ(MustParse("1E+2").as_number(), 100.0);
  EXPECT_EQ(MustParse("1e-2").as_number(), 0.01);
  EXPECT_EQ(MustParse("-0.0e0").as_number(), 0.0);
  EXPECT_EQ(MustParse("9007199254740993").as_number(), 9007199254740992.0);  // nearest double
  EXPECT_EQ(MustParse("1.7976931348623157e308").as_number(), std::numeric_limits<double>::max());
  EXPECT_EQ(MustParse("4.9e-324").as_number(), std::numeric_limits<double>::denorm_min());
  // Out of double range: JSON allows the text, the value saturates (callers check finiteness).
  EXPECT_EQ(MustParse("1e400").as_number(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(MustParse("-1e400").as_number(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(MustParse("1e-400").as_number(), 0.0);
  EXPECT_EQ(MustParse("123456789012345678901234567890").as_number(), 1.2345678901234568e29);
}

TEST(JsonTest, RejectsNonJsonNumbers) {
  for (const char* bad :
       {"01",  "-01",      "1.",        ".5",  "+1",   "1e",      "1e+",  "-",     "--1",   "NaN",
        "nan", "Infinity", "-Infinity", "inf", "0x10", "1.5e3.2", "1.e3", "1e3e3", "0.1.2", "١"}) {
    ParseError(bad);
  }
  EXPECT_THAT(ParseError("NaN"), HasSubstr("at byte 0"));
  EXPECT_THAT(ParseError("[1, -Infinity]"), HasSubstr("at byte 4"));
  EXPECT_THAT(ParseError("007"), HasSubstr("leading zeros"));
}

TEST(JsonTest, StringEscapes) {
  EXPECT_EQ(MustParse(R"("a\"b\\c\/d\be\ff\ng\rh\ti")").as_string(), "a\"b\\c/d\be\ff\ng\rh\ti");
  EXPECT_EQ(MustParse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(MustParse(R"("\u0000")").as_string(), std::string(1, '\0'));
  // U+1F600 as a surrogate pair, and the same character as raw UTF-8.
  EXPECT_EQ(MustParse(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(MustParse("\"\xF0\x9F\x98\x80\"").as_string(), "\xF0\x9F\x98\x80");
  // U+10FFFF, the largest code point, both ways.
  EXPECT_EQ(MustParse(R"("\uDBFF\uDFFF")").as_string(), "\xF4\x8F\xBF\xBF");
  EXPECT_EQ(MustParse("\"\xF4\x8F\xBF\xBF\"").as_string(), "\xF4\x8F\xBF\xBF");
}

TEST(JsonTest, RejectsBadEscapesAndSurrogates) {
  EXPECT_THAT(ParseError(R"("\x41")"), HasSubstr("invalid escape"));
  EXPECT_THAT(ParseError(R"("\u12")"), HasSubstr("hex"));
  EXPECT_THAT(ParseError(R"("\u12G4")"), HasSubstr("hex"));
  EXPECT_THAT(ParseError(R"("ab\ud83d")"), HasSubstr("at byte 3: high surrogate"));
  EXPECT_THAT(ParseError(R"("\ud83dxyz")"), HasSubstr("surrogate"));
  EXPECT_THAT(ParseError(R"("\ud83d\u0041")"), HasSubstr("surrogate"));
  EXPECT_THAT(ParseError(R"("\ud83d\ud83d")"), HasSubstr("surrogate"));
  EXPECT_THAT(ParseError(R"("\ude00")"), HasSubstr("unpaired low surrogate"));
  EXPECT_THAT(ParseError("\"abc"), HasSubstr("at byte 0: unterminated string"));
  EXPECT_THAT(ParseError("\"abc\\"), HasSubstr("unterminated string"));
  EXPECT_THAT(ParseError("\"a\nb\""), HasSubstr("at byte 2: raw control character 0x0A"));
  EXPECT_THAT(ParseError("\"a\tb\""), HasSubstr("control character"));
}

TEST(JsonTest, RejectsInvalidUtf8WithOffset) {
  EXPECT_THAT(ParseError("\"ab\xFF\""), HasSubstr("at byte 3: invalid UTF-8"));
  ParseError("\"\x80\"");              // stray continuation byte
  ParseError("\"\xC3\"");              // truncated 2-byte sequence
  ParseError("\"\xC3\x28\"");          // bad continuation
  ParseError("\"\xC0\xAF\"");          // overlong '/'
  ParseError("\"\xE0\x80\xAF\"");      // overlong 3-byte
  ParseError("\"\xF0\x80\x80\xAF\"");  // overlong 4-byte
  ParseError("\"\xED\xA0\x80\"");      // UTF-8-encoded surrogate U+D800
  ParseError("\"\xF4\x90\x80\x80\"");  // U+110000, above the Unicode range
  ParseError("\"\xF8\x88\x80\x80\x80\"");
  // Invalid bytes in an object key, and non-ASCII outside any string.
  EXPECT_THAT(ParseError("{\"k\xFE\": 1}"), HasSubstr("at byte 3"));
  EXPECT_THAT(ParseError("[1, \xC3\xA9]"), HasSubstr("at byte 4"));
  // Valid multi-byte sequences of every length pass through byte-for-byte.
  EXPECT_EQ(MustParse("\"\xC3\xA9\xE4\xB8\xAD\xF0\x90\x8D\x88\"").as_string(),
            "\xC3\xA9\xE4\xB8\xAD\xF0\x90\x8D\x88");
}

TEST(JsonTest, ArraysAndObjects) {
  JsonValue v = MustParse(R"( {"a": [1, "two", null, true, {"x": []}], "b": {}, "c": -3} )");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.members().size(), 3u);
  EXPECT_EQ(v.members()[0].first, "a");
  EXPECT_EQ(v.members()[1].first, "b");
  EXPECT_EQ(v.members()[2].first, "c");
  const JsonValue* a = v.Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->is_array());
  ASSERT_EQ(a->items().size(), 5u);
  EXPECT_EQ(a->items()[0].as_number(), 1.0);
  EXPECT_EQ(a->items()[1].as_string(), "two");
  EXPECT_TRUE(a->items()[2].is_null());
  EXPECT_TRUE(a->items()[3].as_bool());
  const JsonValue* x = a->items()[4].Find("x");
  ASSERT_NE(x, nullptr);
  EXPECT_TRUE(x->is_array());
  EXPECT_TRUE(x->items().empty());
  EXPECT_TRUE(v.Find("b")->is_object());
  EXPECT_EQ(v.Find("c")->as_number(), -3.0);
  EXPECT_EQ(v.Find("d"), nullptr);
  EXPECT_TRUE(MustParse("[]").is_array());
  EXPECT_TRUE(MustParse("{}").is_object());
  EXPECT_TRUE(MustParse("\t\r\n [ ] \n").is_array());
}

TEST(JsonTest, MalformedStructure) {
  EXPECT_THAT(ParseError(""), HasSubstr("at byte 0: expected a JSON value, got end of input"));
  ParseError("   ");
  EXPECT_THAT(ParseError("[1,]"), HasSubstr("at byte 3"));
  EXPECT_THAT(ParseError(R"({"a":1,})"), HasSubstr("at byte 7: expected a string key"));
  EXPECT_THAT(ParseError(R"({"a" 1})"), HasSubstr("at byte 5: expected ':'"));
  EXPECT_THAT(ParseError(R"({"a":1 "b":2})"), HasSubstr("at byte 7: expected ',' or '}'"));
  EXPECT_THAT(ParseError("[1 2]"), HasSubstr("at byte 3: expected ',' or ']'"));
  ParseError("{a:1}");
  ParseError("{'a':1}");
  ParseError("[");
  ParseError("{");
  ParseError("]");
  ParseError("tru");
  ParseError("nul");
  ParseError("True");
  ParseError("[1]]");
  ParseError("/* comment */ 1");
}

TEST(JsonTest, RejectsTrailingGarbage) {
  EXPECT_THAT(ParseError("{} x"), HasSubstr("at byte 3: expected end of input"));
  EXPECT_THAT(ParseError("1 2"), HasSubstr("at byte 2"));
  ParseError("[1],");
  ParseError("nullnull");
  ParseError(std::string_view("1\0", 2));  // an embedded NUL is not whitespace
  EXPECT_TRUE(MustParse("1 \n\t\r").is_number());
}

TEST(JsonTest, RejectsDuplicateKeysNamingTheKey) {
  EXPECT_THAT(ParseError(R"({"a": 1, "b": 2, "a": 3})"), HasSubstr("duplicate object key \"a\""));
  // Duplicates are detected after unescaping.
  EXPECT_THAT(ParseError(R"({"a": 1, "\u0061": 2})"), HasSubstr("duplicate object key \"a\""));
  // Large objects take the hashed path; the duplicate comes after 40 distinct keys.
  std::string big = "{";
  for (int i = 0; i < 40; ++i) big += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ",";
  JsonValue ok = MustParse(big + "\"last\": 0}");
  EXPECT_EQ(ok.members().size(), 41u);
  EXPECT_EQ(ok.Find("k39")->as_number(), 39.0);
  EXPECT_THAT(ParseError(big + "\"k7\": 0}"), HasSubstr("duplicate object key \"k7\""));
  // The same key in different objects is fine.
  EXPECT_TRUE(MustParse(R"({"a": {"a": 1}, "b": {"a": 2}})").is_object());
}

TEST(JsonTest, DepthLimit) {
  const std::string ok = std::string(kJsonMaxDepth, '[') + std::string(kJsonMaxDepth, ']');
  EXPECT_TRUE(MustParse(ok).is_array());
  const std::string too_deep =
      std::string(kJsonMaxDepth + 1, '[') + std::string(kJsonMaxDepth + 1, ']');
  EXPECT_THAT(ParseError(too_deep), HasSubstr("nesting deeper than 256"));
  std::string objects;
  for (int i = 0; i < kJsonMaxDepth + 1; ++i) objects += "{\"a\":";
  objects += "1" + std::string(kJsonMaxDepth + 1, '}');
  EXPECT_THAT(ParseError(objects), HasSubstr("nesting"));
  // Hostile input far deeper than the stack could take must fail cleanly, not crash.
  EXPECT_THAT(ParseError(std::string(1000000, '[')), HasSubstr("nesting"));
}

TEST(JsonTest, RawIsTheVerbatimSourceText) {
  const std::string text =
      R"(  {"a" : [1,  2 ] ,"b":"x\n\u00e9", "c": { "d" :null } , "e": -1.50E+1}  )";
  JsonValue v = MustParse(text);
  EXPECT_EQ(v.raw(), text.substr(2, text.size() - 4));
  EXPECT_EQ(v.Find("a")->raw(), "[1,  2 ]");
  EXPECT_EQ(v.Find("a")->items()[1].raw(), "2");
  EXPECT_EQ(v.Find("b")->raw(), R"("x\n\u00e9")");
  EXPECT_EQ(v.Find("b")->as_string(), "x\n\xC3\xA9");
  EXPECT_EQ(v.Find("c")->raw(), R"({ "d" :null })");
  EXPECT_EQ(v.Find("c")->Find("d")->raw(), "null");
  EXPECT_EQ(v.Find("e")->raw(), "-1.50E+1");
  // raw() points into the caller's text (no copy).
  EXPECT_GE(v.Find("a")->raw().data(), text.data());
  EXPECT_LT(v.Find("a")->raw().data(), text.data() + text.size());
}

TEST(JsonTest, QuoteEscapesAndRoundTrips) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonQuote("\n\t\r\b\f"), R"("\n\t\r\b\f")");
  EXPECT_EQ(JsonQuote(std::string_view("\x01\0\x1f", 3)), R"("\u0001\u0000\u001f")");
  EXPECT_EQ(JsonQuote("\xC3\xA9"), "\"\xC3\xA9\"");
  std::string out = "prefix:";
  AppendJsonString("x", &out);
  EXPECT_EQ(out, "prefix:\"x\"");
  // Every ASCII byte (including all control characters) survives quote -> parse.
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  all += "\xE2\x82\xAC\xF0\x9F\x98\x80";
  EXPECT_EQ(MustParse(JsonQuote(all)).as_string(), all);
}

TEST(JsonTest, NumberFormattingRoundTrips) {
  EXPECT_EQ(JsonNumber(0.1), "0.1");
  EXPECT_EQ(JsonNumber(3.0), "3");
  EXPECT_EQ(JsonNumber(-2.5), "-2.5");
  EXPECT_EQ(JsonNumber(std::numeric_limits<double>::quiet_NaN()), "null");
  EXPECT_EQ(JsonNumber(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(JsonNumber(-std::numeric_limits<double>::infinity()), "null");
  for (double v : {1e300, -1e-300, std::numeric_limits<double>::denorm_min(),
                   std::numeric_limits<double>::max(), 123456789.125, -0.0, 1.0 / 3.0}) {
    const std::string s = JsonNumber(v);
    JsonValue parsed = MustParse(s);
    ASSERT_TRUE(parsed.is_number()) << s;
    EXPECT_EQ(parsed.as_number(), v) << s;
    EXPECT_EQ(std::signbit(parsed.as_number()), std::signbit(v)) << s;
  }
  // Random bit patterns: every finite double must come back exactly through our own parser.
  Rng rng(42);
  int checked = 0;
  while (checked < 20000) {
    const uint64_t bits = rng();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    if (!std::isfinite(v)) continue;
    ++checked;
    const std::string s = JsonNumber(v);
    auto parsed = ParseJson(s);
    ASSERT_TRUE(parsed.ok()) << s << " " << parsed.status();
    ASSERT_EQ(parsed->as_number(), v) << s;
  }
}

}  // namespace
}  // namespace dots

namespace dots {
namespace {

TEST(JsonFloatTest, ShortestRoundTrip) {
  EXPECT_EQ(JsonFloat(0.1f), "0.1");
  EXPECT_EQ(JsonFloat(0.047700539f), "0.04770054");
  EXPECT_EQ(JsonFloat(1.0f), "1");
  EXPECT_EQ(JsonFloat(std::nanf("")), "null");
}

}  // namespace
}  // namespace dots
