// dotsctl's strict base64 decoder (client/dotsctl/json_format.h) over Abseil's encoder: every
// encoding round-trips, and everything the encoder would not write is refused.
#include <string>

#include "absl/strings/escaping.h"
#include "client/dotsctl/json_format.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

// RFC 4648 §10 test vectors.
TEST(DotsctlBase64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(absl::Base64Escape(plain), encoded) << plain;
    absl::StatusOr<std::string> decoded = DecodeBase64(encoded);
    ASSERT_TRUE(decoded.ok()) << encoded << ": " << decoded.status();
    EXPECT_EQ(*decoded, plain);
  }
}

// Every length mod 3, with all 256 byte values (NUL, high bytes) in every position class.
TEST(DotsctlBase64Test, BinaryRoundTripAllLengths) {
  std::string bytes;
  for (int i = 0; i < 3 * 256 + 2; ++i) bytes.push_back(static_cast<char>((i * 167 + 13) & 0xff));
  for (size_t len = 0; len <= bytes.size(); ++len) {
    const std::string in = bytes.substr(0, len);
    const std::string encoded = absl::Base64Escape(in);
    ASSERT_EQ(encoded.size(), (len + 2) / 3 * 4) << len;
    ASSERT_EQ(encoded.find_first_not_of(
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="),
              std::string::npos);
    absl::StatusOr<std::string> out = DecodeBase64(encoded);
    ASSERT_TRUE(out.ok()) << len << ": " << out.status();
    ASSERT_EQ(*out, in) << len;
  }
}

TEST(DotsctlBase64Test, UsesPlusAndSlash) {
  EXPECT_EQ(absl::Base64Escape(std::string("\xfb\xff\xbf", 3)), "+/+/");
  EXPECT_EQ(*DecodeBase64("+/+/"), std::string("\xfb\xff\xbf", 3));
}

TEST(DotsctlBase64Test, RejectsMalformedInput) {
  for (const char* bad : {"Zg=",       // length not a multiple of 4
                          "Zg",        // unpadded
                          "Zm9v\n",    // whitespace
                          "Z m9",      // inner space
                          "-_-_",      // URL-safe alphabet
                          "=Zm9",      // padding first
                          "Zg==Zm9v",  // padding before the end
                          "Z===",      // three pad characters
                          "Zh==",      // non-zero bits under the padding
                          "Zm9=",      // non-zero bits under the padding (one '=')
                          "Zm9v\xc3\xa9"
                          "AA"}) {
    absl::StatusOr<std::string> out = DecodeBase64(bad);
    EXPECT_FALSE(out.ok()) << bad;
    if (!out.ok()) {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(DotsctlBase64Test, ErrorNamesTheOffset) {
  absl::StatusOr<std::string> out = DecodeBase64("Zm9vYm*y");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(std::string(out.status().message()).find("at byte 6"), std::string::npos)
      << out.status();
}

}  // namespace
}  // namespace dots
