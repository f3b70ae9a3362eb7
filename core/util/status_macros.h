// Early-return helpers for absl::Status / absl::StatusOr, in the style of Reverb's
// REVERB_RETURN_IF_ERROR.
#ifndef DOTS_CORE_UTIL_STATUS_MACROS_H_
#define DOTS_CORE_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DOTS_STATUS_CONCAT_INNER_(a, b) a##b
#define DOTS_STATUS_CONCAT_(a, b) DOTS_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define DOTS_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status dots_status_ = (expr);        \
    if (!dots_status_.ok()) return dots_status_; \
  } while (0)

// `DOTS_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from an OK StatusOr or returns its error.
#define DOTS_ASSIGN_OR_RETURN(lhs, expr) \
  DOTS_ASSIGN_OR_RETURN_IMPL_(DOTS_STATUS_CONCAT_(dots_statusor_, __LINE__), lhs, expr)
#define DOTS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // DOTS_CORE_UTIL_STATUS_MACROS_H_
