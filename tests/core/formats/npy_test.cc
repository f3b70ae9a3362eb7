#include "core/formats/npy.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::HasSubstr;

// Builds an .npy image the way numpy.lib.format does, independently of SerializeNpy: magic,
// version, little-endian header length (u16 for 1.x, u32 otherwise), the dict padded with spaces
// and a final '\n' to a multiple of 64 bytes, then `data`.
std::string MakeNpy(std::string_view dict, std::string_view data, int major = 1, int minor = 0) {
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = 6 + 2 + length_bytes;
  std::string header(dict);
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(static_cast<char>(minor));
  for (size_t i = 0; i < length_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  }
  return out + header + std::string(data);
}

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string HalfBytes(const std::vector<uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(uint16_t));
}

std::string Dict(std::string_view descr, std::string_view shape, bool fortran = false) {
  return "{'descr': '" + std::string(descr) +
         "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + std::string(shape) + ", }";
}

std::string ParseError(std::string_view bytes) {
  auto m = ParseNpy(bytes, "emb.npy");
  EXPECT_FALSE(m.ok()) << "unexpectedly parsed";
  if (m.ok()) return "";
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(m.status().message());
  EXPECT_THAT(msg, ::testing::StartsWith("emb.npy: "));
  return msg;
}

// A unique path under the test temp dir (other build dirs may run the same test concurrently).
std::string TempPath(std::string_view name) {
  std::ostringstream s;
  s << ::testing::TempDir() << "dots_npy_test_" << getpid() << "_"
    << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "_" << name;
  return s.str();
}

const std::vector<float> kSixValues = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7e20f};

TEST(NpyTest, ReadsAllThreeFormatVersions) {
  for (int major : {1, 2, 3}) {
    SCOPED_TRACE(major);
    const std::string bytes = MakeNpy(Dict("<f4", "(2, 3)"), FloatBytes(kSixValues), major);
    auto m = ParseNpy(bytes, "emb.npy");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->rows, 2);
    EXPECT_EQ(m->cols, 3);
    EXPECT_EQ(m->data, kSixValues);
    EXPECT_EQ(m->row(1)[0], 3.25f);
  }
}

TEST(NpyTest, AcceptsHeaderSpellingVariants) {
  // Key order, quotes, spacing and the trailing comma vary between numpy versions and writers.
  for (std::string_view dict : {
           "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
           "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",
           "{'descr':'<f4','fortran_order':False,'shape':(2,3,),}",
           "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
       }) {
    SCOPED_TRACE(dict);
    auto m = ParseNpy(MakeNpy(dict, FloatBytes(kSixValues)), "emb.npy");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->rows, 2);
    EXPECT_EQ(m->cols, 3);
  }
}

// Reference binary16 decoding by arithmetic (not bit manipulation): value =
// (-1)^s * 2^(e-15) * (1 + m/1024) for normals, (-1)^s * 2^-14 * (m/1024) for subnormals.
double ReferenceHalf(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  if (e == 31) {
    return m == 0 ? sign * std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  }
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

TEST(NpyTest, HalfToFloatIsExactForAllInputs) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const double want = ReferenceHalf(static_cast<uint16_t>(h));
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << h;
      ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
    }
  }
}

TEST(NpyTest, ReadsFloat16IncludingSubnormalsAndInfinities) {
  // 1, -2, 65504 (max half), 2^-24 (smallest subnormal), 1023 * 2^-24 (largest subnormal),
  // 2^-14 (smallest normal), +inf, -inf, nan, -0.
  const std::vector<uint16_t> halves = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF,
                                        0x0400, 0x7C00, 0xFC00, 0x7E00, 0x8000};
  auto m = ParseNpy(MakeNpy(Dict("<f2", "(5, 2)"), HalfBytes(halves)), "emb.npy");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 5);
  ASSERT_EQ(m->cols, 2);
  const std::vector<float>& v = m->data;
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 65504.0f);
  EXPECT_EQ(v[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(v[4], 1023.0f * std::ldexp(1.0f, -24));
  EXPECT_EQ(v[5], std::ldexp(1.0f, -14));
  EXPECT_EQ(v[6], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[7], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[8]));
  EXPECT_EQ(v[9], 0.0f);
  EXPECT_TRUE(std::signbit(v[9]));
}

TEST(NpyTest, WriteThenReadRoundTrips) {
  FloatMatrix m(3, 2);
  for (size_t i = 0; i < m.data.size(); ++i) m.data[i] = static_cast<float>(i) * 0.5f - 1.0f;
  m.data[5] = std::numeric_limits<float>::denorm_min();
  const std::string path = TempPath("roundtrip.npy");
  ASSERT_TRUE(WriteNpy(path, m).ok());
  auto back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rows, 3);
  EXPECT_EQ(back->cols, 2);
  EXPECT_EQ(back->data, m.data);
  std::remove(path.c_str());
}

TEST(NpyTest, SerializedLayoutMatchesNumpy) {
  FloatMatrix m(2, 3);
  m.data = kSixValues;
  const std::string bytes = SerializeNpy(m);
  // Same layout numpy.save writes: v1.0 header, 64-byte aligned data, '\n'-terminated dict.
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) |
                            (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header = bytes.substr(10, header_len);
  EXPECT_THAT(header,
              ::testing::StartsWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(bytes.substr(10 + header_len), FloatBytes(kSixValues));
  EXPECT_EQ(bytes, MakeNpy(Dict("<f4", "(2, 3)"), FloatBytes(kSixValues)));
}

TEST(NpyTest, ReadNpyMissingFileIsNotFound) {
  auto m = ReadNpy("/nonexistent/dir/emb.npy");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("/nonexistent/dir/emb.npy"));
}

TEST(NpyTest, ReadNpyErrorsNameThePath) {
  const std::string path = TempPath("bad.npy");
  {
    std::ofstream out(path, std::ios::binary);
    out << MakeNpy(Dict("<f8", "(1, 1)"), std::string(8, '\0'));
  }
  auto m = ReadNpy(path);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr(path + ": "));
  EXPECT_THAT(m.status().message(), HasSubstr("got '<f8', want '<f4' or '<f2'"));
  std::remove(path.c_str());
}

TEST(NpyTest, RejectsBadMagicAndVersions) {
  EXPECT_THAT(ParseError(""), HasSubstr("bad magic"));
  EXPECT_THAT(ParseError("\x93NUMP"), HasSubstr("bad magic"));
  EXPECT_THAT(ParseError("PK\x03\x04 this is a zip file"), HasSubstr("bad magic"));
  std::string good = MakeNpy(Dict("<f4", "(2, 3)"), FloatBytes(kSixValues));
  std::string v4 = good;
  v4[6] = 4;
  EXPECT_THAT(ParseError(v4), HasSubstr("unsupported .npy format version 4.0"));
  std::string v11 = good;
  v11[7] = 1;
  EXPECT_THAT(ParseError(v11), HasSubstr("version 1.1"));
  std::string v0 = good;
  v0[6] = 0;
  EXPECT_THAT(ParseError(v0), HasSubstr("version 0.0"));
}

TEST(NpyTest, RejectsTruncatedHeader) {
  const std::string good = MakeNpy(Dict("<f4", "(2, 3)"), FloatBytes(kSixValues));
  EXPECT_THAT(ParseError(good.substr(0, 7)), HasSubstr("truncated"));
  EXPECT_THAT(ParseError(good.substr(0, 9)), HasSubstr("truncated"));
  EXPECT_THAT(ParseError(good.substr(0, 40)), HasSubstr("truncated .npy header"));
  // Version 2.0 needs a 4-byte length.
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3)"), "", 2).substr(0, 11)),
              HasSubstr("truncated"));
}

TEST(NpyTest, RejectsTruncatedAndTrailingData) {
  const std::string data = FloatBytes(kSixValues);  // 24 bytes
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3)"), data.substr(0, 20))),
              HasSubstr("expected 24 bytes of data, file has 20"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3)"), "")),
              HasSubstr("expected 24 bytes of data, file has 0"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f2", "(2, 3)"), data.substr(0, 11))),
              HasSubstr("expected 12 bytes of data, file has 11"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3)"), data + "x")),
              HasSubstr("trailing bytes: expected 24 bytes of data, file has 25"));
  // A huge declared shape must be reported, not allocated.
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(1000000000000, 1000000)"), data)),
              HasSubstr("truncated data"));
}

TEST(NpyTest, RejectsWrongDtypes) {
  for (std::string_view descr : {"<f8", "<i4", ">f4", ">f2", "|u1", "<i8", "|O", "<c8", "f4"}) {
    SCOPED_TRACE(descr);
    const std::string msg = ParseError(MakeNpy(Dict(descr, "(2, 3)"), FloatBytes(kSixValues)));
    EXPECT_THAT(msg, HasSubstr("got '" + std::string(descr) + "', want '<f4' or '<f2'"));
  }
  // Structured dtypes have a list as descr.
  EXPECT_THAT(ParseError(MakeNpy("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                 "'shape': (2, 3), }",
                                 FloatBytes(kSixValues))),
              HasSubstr("unsupported dtype"));
}

TEST(NpyTest, RejectsFortranOrder) {
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3)", true), FloatBytes(kSixValues))),
              HasSubstr("fortran_order True"));
}

TEST(NpyTest, RejectsShapesThatAreNotNonEmpty2D) {
  const std::string data = FloatBytes(kSixValues);
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(6,)"), data)), HasSubstr("shape (6,) is not 2-D"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(1, 2, 3)"), data)),
              HasSubstr("shape (1, 2, 3) is not 2-D"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "()"), data.substr(0, 4))),
              HasSubstr("shape () is not 2-D"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(0, 3)"), "")), HasSubstr("shape (0, 3) is empty"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(3, 0)"), "")), HasSubstr("shape (3, 0) is empty"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, -3)"), data)), HasSubstr("unsupported value"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 'x')"), data)), HasSubstr("non-integer"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "6"), data)), HasSubstr("'shape' is not a tuple"));
}

TEST(NpyTest, RejectsMalformedHeaderDicts) {
  const std::string data = FloatBytes(kSixValues);
  EXPECT_THAT(ParseError(MakeNpy("[1, 2]", data)), HasSubstr("header is not a dict"));
  EXPECT_THAT(ParseError(MakeNpy("", data)), HasSubstr("header is not a dict"));
  EXPECT_THAT(ParseError(MakeNpy("{'fortran_order': False, 'shape': (2, 3)}", data)),
              HasSubstr("missing key 'descr'"));
  EXPECT_THAT(ParseError(MakeNpy("{'descr': '<f4', 'shape': (2, 3)}", data)),
              HasSubstr("missing key 'fortran_order'"));
  EXPECT_THAT(ParseError(MakeNpy("{'descr': '<f4', 'fortran_order': False}", data)),
              HasSubstr("missing key 'shape'"));
  EXPECT_THAT(ParseError(MakeNpy(Dict("<f4", "(2, 3), 'extra': 1"), data)),
              HasSubstr("unexpected header key 'extra'"));
  EXPECT_THAT(ParseError(MakeNpy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                                 "'shape': (2, 3)}",
                                 data)),
              HasSubstr("duplicate header key 'descr'"));
  EXPECT_THAT(ParseError(MakeNpy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", data)),
              HasSubstr("'fortran_order' is not True/False"));
  EXPECT_THAT(
      ParseError(MakeNpy("{'descr': '<f4 , 'fortran_order': False, 'shape': (2, 3)}", data)),
      HasSubstr("header"));
  EXPECT_THAT(
      ParseError(MakeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", data)),
      HasSubstr("unexpected text after the header dict"));
  EXPECT_THAT(ParseError(MakeNpy("{'descr' '<f4'}", data)), HasSubstr("expected ':'"));
  EXPECT_THAT(ParseError(MakeNpy("{1: '<f4'}", data)), HasSubstr("key is not a string"));
  // Deeply nested tuples are refused rather than recursed into.
  EXPECT_THAT(
      ParseError(MakeNpy("{'shape': " + std::string(100, '(') + std::string(100, ')') + "}", data)),
      HasSubstr("nested too deeply"));
}

TEST(NpyTest, WriteNpyRejectsInconsistentMatrix) {
  FloatMatrix m(2, 2);
  m.data.pop_back();
  EXPECT_FALSE(WriteNpy(TempPath("x.npy"), m).ok());
  EXPECT_FALSE(WriteNpy("/nonexistent/dir/x.npy", FloatMatrix(1, 1)).ok());
}

}  // namespace
}  // namespace dots
