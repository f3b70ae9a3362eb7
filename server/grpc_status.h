// The one place where absl::Status becomes grpc::Status (docs/conventions.md §2.5: status
// conversion only at the service boundary). Messages built from user data (keys, paths, JSON)
// can be arbitrarily long, so they are truncated, as TF Serving does, to kMaxStatusMessageBytes.
#ifndef DOTS_SERVER_GRPC_STATUS_H_
#define DOTS_SERVER_GRPC_STATUS_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/util/json.h"
#include "grpcpp/support/status.h"

namespace dots {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

// `message` cut to at most `max_bytes` bytes (>= 64), never inside a UTF-8 sequence, ending in
// " ... [N bytes truncated]" when cut. O(max_bytes).
inline std::string TruncateStatusMessage(std::string_view message,
                                         size_t max_bytes = kMaxStatusMessageBytes) {
  if (message.size() <= max_bytes) return std::string(message);
  std::string suffix = " ... [" + std::to_string(message.size()) + " bytes, truncated]";
  size_t keep = max_bytes > suffix.size() ? max_bytes - suffix.size() : 0;
  // Back up over UTF-8 continuation bytes (10xxxxxx) so a multi-byte character stays whole.
  while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) --keep;
  return std::string(message.substr(0, keep)) + suffix;
}

// `text` (a key, a path: user data) as a JSON string literal for an error message, cut after
// `max_bytes` bytes at a UTF-8 boundary with "..." appended. O(max_bytes).
inline std::string QuoteForMessage(std::string_view text, size_t max_bytes = 80) {
  if (text.size() <= max_bytes) return JsonQuote(text);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return JsonQuote(text.substr(0, cut)) + "...";
}

// Same code, truncated message. absl's codes are numerically gRPC's; UNKNOWN (which a dots
// server never means to return) and values outside the gRPC range become INTERNAL. O(message).
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  const bool known = code > static_cast<int>(grpc::StatusCode::UNKNOWN) &&
                     code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED);
  const std::string_view message(status.message().data(), status.message().size());
  return grpc::Status(known ? static_cast<grpc::StatusCode>(code) : grpc::StatusCode::INTERNAL,
                      TruncateStatusMessage(message));
}

}  // namespace dots

#endif  // DOTS_SERVER_GRPC_STATUS_H_
