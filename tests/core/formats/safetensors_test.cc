#include "core/formats/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Builds a safetensors image by hand (independently of SerializeSafeTensors): u64 LE header
// length, the header text, then the data buffer.
std::string MakeFile(std::string_view header, std::string_view data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + std::string(header) + std::string(data);
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string ParseError(std::string_view bytes) {
  auto f = ParseSafeTensors(bytes, "adapter.safetensors");
  EXPECT_FALSE(f.ok()) << "unexpectedly parsed";
  if (f.ok()) return "";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(f.status().message());
  EXPECT_THAT(msg, ::testing::StartsWith("adapter.safetensors: "));
  return msg;
}

std::string TempPath(std::string_view name) {
  std::ostringstream s;
  s << ::testing::TempDir() << "dots_safetensors_test_" << getpid() << "_"
    << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "_" << name;
  return s.str();
}

TEST(SafeTensorsTest, ParsesF32TensorsAndMetadata) {
  const std::vector<float> w = {1.0f, -2.0f, 3.5f, 4.0f, 5.0f, 6.25f};
  const std::vector<float> b = {0.5f, -0.5f};
  const std::string header =
      R"({"__metadata__": {"format": "pt", "hidden": "64"},
          "layer.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
          "layer.bias": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}})";
  auto f = ParseSafeTensors(MakeFile(header, Bytes(w) + Bytes(b)), "adapter.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors.size(), 2u);
  const SafeTensor* weight = f->Find("layer.weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_THAT(weight->shape, ElementsAre(2, 3));
  EXPECT_EQ(weight->values, w);
  const SafeTensor* bias = f->Find("layer.bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_THAT(bias->shape, ElementsAre(2));
  EXPECT_EQ(bias->values, b);
  EXPECT_EQ(f->Find("layer"), nullptr);
  EXPECT_EQ(f->Find("__metadata__"), nullptr);
  EXPECT_EQ(f->metadata.size(), 2u);
  EXPECT_EQ(f->metadata.at("format"), "pt");
  EXPECT_EQ(f->metadata.at("hidden"), "64");
}

TEST(SafeTensorsTest, AcceptsPaddedHeaderAndOutOfOrderOffsets) {
  // Writers pad the header with spaces to 8-byte alignment; tensor order in the header need not
  // follow data order.
  const std::vector<float> data = {1, 2, 3};
  const std::string header = R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},)"
                             R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}    )";
  auto f = ParseSafeTensors(MakeFile(header, Bytes(data)), "x");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->Find("a")->values, ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(f->Find("b")->values, ElementsAre(3.0f));
  EXPECT_TRUE(f->metadata.empty());
}

TEST(SafeTensorsTest, ConvertsF16BF16AndF64) {
  // F16: 1, -2, 2^-24 (subnormal), +inf. BF16: 1, -3, +inf, 2^-133 (bf16 subnormal 0x0001).
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7C00};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x7F80, 0x0001};
  const std::vector<double> f64 = {1.5, -0.1, 1e300};
  const std::string header = R"({"h": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},)"
                             R"( "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},)"
                             R"( "d": {"dtype": "F64", "shape": [3], "data_offsets": [16, 40]}})";
  auto f = ParseSafeTensors(MakeFile(header, Bytes(f16) + Bytes(bf16) + Bytes(f64)), "x");
  ASSERT_TRUE(f.ok()) << f.status();
  const auto& h = f->Find("h")->values;
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[3], std::numeric_limits<float>::infinity());
  const auto& b = f->Find("b")->values;
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -3.0f);
  EXPECT_EQ(b[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(b[3], std::ldexp(1.0f, -133));
  const auto& d = f->Find("d")->values;
  EXPECT_EQ(d[0], 1.5f);
  EXPECT_EQ(d[1], -0.1f);
  EXPECT_EQ(d[2], std::numeric_limits<float>::infinity());
}

TEST(SafeTensorsTest, ScalarAndZeroSizedTensors) {
  const std::vector<float> data = {42.0f};
  const std::string header = R"({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},)"
                             R"( "z": {"dtype": "F32", "shape": [0, 7], "data_offsets": [4, 4]}})";
  auto f = ParseSafeTensors(MakeFile(header, Bytes(data)), "x");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->Find("s")->shape.empty());
  EXPECT_THAT(f->Find("s")->values, ElementsAre(42.0f));
  EXPECT_THAT(f->Find("z")->shape, ElementsAre(0, 7));
  EXPECT_TRUE(f->Find("z")->values.empty());
  // An empty file body: header "{}" and no data.
  auto empty = ParseSafeTensors(MakeFile("{}", ""), "x");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
}

TEST(SafeTensorsTest, WriteThenReadRoundTrips) {
  SafeTensorsFile f;
  f.tensors["query.0.weight"] = {{2, 2}, {1.0f, 2.0f, 3.0f, 4.0f}};
  f.tensors["query.0.bias"] = {{2}, {-1.0f, 0.25f}};
  f.tensors["scalar"] = {{}, {7.0f}};
  f.tensors["needs \"escaping\"\n"] = {{1}, {9.0f}};
  f.metadata["num_layers"] = "2";
  f.metadata["note"] = "quote \" and \\ and \xC3\xA9";
  const std::string path = TempPath("w.safetensors");
  ASSERT_TRUE(WriteSafeTensors(path, f).ok());
  auto back = ReadSafeTensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->metadata, f.metadata);
  ASSERT_EQ(back->tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const SafeTensor* got = back->Find(name);
    ASSERT_NE(got, nullptr) << name;
    EXPECT_EQ(got->shape, t.shape) << name;
    EXPECT_EQ(got->values, t.values) << name;
  }
  std::remove(path.c_str());
  // The data buffer starts 8-byte aligned, as the format recommends.
  auto bytes = SerializeSafeTensors(f);
  ASSERT_TRUE(bytes.ok());
  uint64_t n = 0;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(SafeTensorsTest, WriterRejectsInconsistentTensors) {
  SafeTensorsFile f;
  f.tensors["w"] = {{2, 2}, {1.0f, 2.0f, 3.0f}};
  EXPECT_THAT(SerializeSafeTensors(f).status().message(), HasSubstr("\"w\""));
  EXPECT_FALSE(WriteSafeTensors(TempPath("bad.safetensors"), f).ok());
  SafeTensorsFile g;
  g.tensors["w"] = {{-1}, {}};
  EXPECT_FALSE(SerializeSafeTensors(g).ok());
  SafeTensorsFile h;
  h.tensors["__metadata__"] = {{1}, {1.0f}};
  EXPECT_FALSE(SerializeSafeTensors(h).ok());
}

TEST(SafeTensorsTest, MissingFileIsNotFound) {
  auto f = ReadSafeTensors("/nonexistent/w.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("/nonexistent/w.safetensors"));
}

TEST(SafeTensorsTest, RejectsTruncatedOrOversizedHeader) {
  EXPECT_THAT(ParseError(""), HasSubstr("truncated header"));
  EXPECT_THAT(ParseError(std::string(5, '\0')), HasSubstr("truncated header"));
  const std::string good = MakeFile(
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  EXPECT_THAT(ParseError(good.substr(0, 20)), HasSubstr("truncated header: declares"));
  // Declared length beyond 100 MB, in a small file.
  std::string huge = good;
  const uint64_t n = (100ull << 20) + 1;
  for (int i = 0; i < 8; ++i) huge[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  EXPECT_THAT(ParseError(huge), HasSubstr("exceeds the limit"));
  std::string max = good;
  for (int i = 0; i < 8; ++i) max[i] = '\xFF';
  EXPECT_THAT(ParseError(max), HasSubstr("exceeds the limit"));
}

TEST(SafeTensorsTest, RejectsBadHeaderJson) {
  EXPECT_THAT(ParseError(MakeFile("{\"a\": ", "")), HasSubstr("header JSON: at byte"));
  EXPECT_THAT(ParseError(MakeFile("[1, 2]", "")),
              HasSubstr("header is an array, want a JSON object"));
  EXPECT_THAT(ParseError(MakeFile("{\"\xFF\": 1}", "")), HasSubstr("invalid UTF-8"));
  EXPECT_THAT(ParseError(MakeFile(R"({"a": 1})", "")), HasSubstr("tensor \"a\": entry is not"));
  EXPECT_THAT(
      ParseError(MakeFile(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                          R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                          std::string(4, '\0'))),
      HasSubstr("duplicate object key \"a\""));
}

TEST(SafeTensorsTest, RejectsBadTensorEntries) {
  const std::string four(4, '\0');
  EXPECT_THAT(ParseError(MakeFile(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", four)),
              HasSubstr("tensor \"w\": field \"dtype\" missing"));
  EXPECT_THAT(
      ParseError(MakeFile(R"({"w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})", four)),
      HasSubstr("tensor \"w\": unknown dtype \"I8\""));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", four)),
              HasSubstr("unknown dtype \"f32\""));
  EXPECT_THAT(ParseError(MakeFile(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", four)),
              HasSubstr("field \"shape\" missing"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", four)),
              HasSubstr("field \"shape\" holds -1"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", four)),
              HasSubstr("holds 1.5"));
  EXPECT_THAT(ParseError(MakeFile(R"({"w": {"dtype": "F32", "shape": [1]}})", four)),
              HasSubstr("field \"data_offsets\" missing"));
  EXPECT_THAT(
      ParseError(MakeFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", four)),
      HasSubstr("data_offsets"));
  EXPECT_THAT(
      ParseError(MakeFile(R"({"__metadata__": {"n": 3}, "w": {"dtype": "F32", "shape": [1], )"
                          R"("data_offsets": [0, 4]}})",
                          four)),
      HasSubstr("\"__metadata__\" field \"n\" is a number, want a string"));
  EXPECT_THAT(ParseError(MakeFile(R"({"__metadata__": [], "w": {"dtype": "F32", "shape": [1], )"
                                  R"("data_offsets": [0, 4]}})",
                                  four)),
              HasSubstr("\"__metadata__\" is not an object"));
}

TEST(SafeTensorsTest, RejectsOffsetsOutOfRangeOrWrongSize) {
  const std::string eight(8, '\0');
  EXPECT_THAT(
      ParseError(
          MakeFile(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}})", eight)),
      HasSubstr("tensor \"w\": data_offsets [0, 12] out of range for a data buffer of 8 bytes"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", eight)),
              HasSubstr("out of range"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", eight)),
              HasSubstr("data_offsets span 8 bytes but shape [1] of F32 needs 4 bytes"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 8]}})", eight)),
              HasSubstr("needs 12 bytes"));
  // A shape whose element count overflows 64 bits must not wrap around to a matching size.
  EXPECT_THAT(ParseError(MakeFile(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, )"
                                  R"(2], "data_offsets": [0, 0]}})",
                                  eight)),
              HasSubstr("needs more than the 8 buffer bytes"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 1e30]}})", eight)),
              HasSubstr("data_offsets"));
}

TEST(SafeTensorsTest, RejectsOverlapsHolesAndTrailingBytes) {
  const std::string eight(8, '\0');
  EXPECT_THAT(
      ParseError(MakeFile(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                          R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                          eight)),
      HasSubstr("tensor \"b\": data_offsets [4, 8] overlap"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", eight)),
              HasSubstr("data buffer bytes [0, 4) belong to no tensor"));
  EXPECT_THAT(ParseError(MakeFile(
                  R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", eight)),
              HasSubstr("data buffer has 8 bytes but tensors cover 4"));
  EXPECT_THAT(ParseError(MakeFile("{}", "x")), HasSubstr("data buffer has 1 bytes"));
}

}  // namespace
}  // namespace dots
