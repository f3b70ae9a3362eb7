// Small shared helpers for core/: whole-file reads and the std <-> absl string_view bridge.
#ifndef DOTS_CORE_UTIL_FILE_UTIL_H_
#define DOTS_CORE_UTIL_FILE_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dots {

// Reads the whole file. O(file size); blocks on I/O. Errors: NOT_FOUND when the file does not
// exist, INTERNAL for other open or read failures; messages start with the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Debian's Abseil is built with its own string_view (ABSL_OPTION_USE_STD_STRING_VIEW=0), so
// absl::StrCat does not accept std::string_view directly. O(1), no copy.
inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace dots

#endif  // DOTS_CORE_UTIL_FILE_UTIL_H_
