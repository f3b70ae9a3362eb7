// The one conversion between the plain types of core/types.h and their wire form in
// proto/dots/v1/dots.proto, used by the server's adapters, the C++ client and the tests. Field
// by field, nothing else: no validation (the code that accepts a value checks it) and no
// policy (the server truncates the error messages it sends, the client maps statuses).
//
// Every function is O(size of the value), allocates only for the strings and arrays it copies,
// never blocks and cannot fail. Thread-safe: no shared state.
#ifndef DOTS_PROTO_CONVERT_H_
#define DOTS_PROTO_CONVERT_H_

#include <cstdint>

#include "core/types.h"
#include "dots/v1/dots.pb.h"

namespace dots {

// The gRPC metadata key that carries the run a call names (the routing key of a router in front
// of several servers; checked by the server against the request's run_id).
inline constexpr char kRoutingHeader[] = "x-dots-run";

// ---- runs ----
void ToProto(const RunInfo& run, v1::RunInfo* out);
RunInfo FromProto(const v1::RunInfo& run);

void ToProto(const ImportProgress& progress, v1::ImportPoolProgress* out);
ImportProgress FromProto(const v1::ImportPoolProgress& progress);

// ---- pool ----
// `embedding` points at `dim` values, or is nullptr for a question sent without one.
void ToProto(const Question& question, const float* embedding, int64_t dim, v1::Question* out);
// Moves the strings out of `question`; its embedding stays there (the caller builds the matrix
// of the whole upload). An empty metadata_json becomes the core's "{}".
Question FromProto(v1::Question&& question);

void ToProto(const UpsertResult& result, v1::UpsertQuestionsResponse* out);
UpsertResult FromProto(const v1::UpsertQuestionsResponse& response);

// ---- training ----
v1::Role ToProto(ItemRole role);
// ROLE_REFERENCE is kReference; everything else (ROLE_FRESH, an unknown value) is kFresh.
ItemRole FromProto(v1::Role role);

// Moves the strings out of `item`.
void ToProto(BatchItem&& item, v1::BatchItem* out);
BatchItem FromProto(v1::BatchItem&& item);

// The rejection messages are copied as they are; fresh_abs_errors (server-side metrics) does
// not travel.
void ToProto(const ReportResult& result, v1::ReportRolloutsResponse* out);
ReportResult FromProto(const v1::ReportRolloutsResponse& response);

// ---- inspection ----
void ToProto(const QuestionEstimate& estimate, v1::QuestionEstimate* out);
QuestionEstimate FromProto(const v1::QuestionEstimate& estimate);

// effective_last_step_index (the run's bookkeeping) does not travel: FromProto leaves it -1.
void ToProto(const RunStats& stats, v1::RunStats* out);
RunStats FromProto(const v1::RunStats& stats);

}  // namespace dots

#endif  // DOTS_PROTO_CONVERT_H_
