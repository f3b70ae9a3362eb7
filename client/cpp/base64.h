// Standard base64 (RFC 4648 §4: alphabet A-Z a-z 0-9 + /, '=' padding), used by dotsctl to carry
// opaque rollout payloads inside JSON lines. A strict decoder: anything that the encoder would not
// produce is an error, so a corrupted or truncated payload is never silently accepted.
#ifndef DOTS_CLIENT_CPP_BASE64_H_
#define DOTS_CLIENT_CPP_BASE64_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace dots {

// Encodes arbitrary bytes, padded with '=' to a multiple of 4 characters; "" for "".
// O(len(bytes)); output is 4 * ceil(len / 3) characters. Does not block.
std::string Base64Encode(std::string_view bytes);

// Decodes padded standard base64. Rejects (INVALID_ARGUMENT naming the byte offset): a length
// that is not a multiple of 4, characters outside the alphabet (including whitespace and the
// URL-safe '-' '_'), '=' anywhere but the last one or two positions, and non-zero bits in the
// padding remainder (so every byte string has exactly one accepted encoding).
// O(len(text)). Does not block.
absl::StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace dots

#endif  // DOTS_CLIENT_CPP_BASE64_H_
