// `dots.v1.Dots` on the gRPC callback API: thin, stateless adapters from the wire to core/
// (RunRegistry, Run, LoadPool), in the style of TF Serving's *_service_impl. All state lives in
// the registry; the service holds only limits and its serving state.
//
// Threading. gRPC's callback threads only parse, validate and (de)frame messages. Every call
// into a run, which takes the run's mutex and may wait for its planner, runs on an Executor:
//   `calls`  short work (CreateRun ... GetRunStats, applying an upload or a report);
//   `waits`  work that may wait for other clients or read files: NextBatch (waits for a round
//            plan, in slices of ServiceOptions::wait_slice so that cancellation and draining are
//            noticed) and ImportPool.
// A NextBatch waiting for reports therefore never holds up the ReportRollouts it waits for.
//
// Errors map to the status codes of docs/design.md §3 and the proto's header; messages name the
// field and are truncated to kMaxStatusMessageBytes (server/grpc_status.h). A call that arrives
// while the service is starting or draining gets UNAVAILABLE (retryable); calls already in flight
// when draining begins run to completion, except NextBatch waits, which end with UNAVAILABLE.
//
// Access control (ServiceOptions::auth, server/auth.h): every handler checks the caller's bearer
// token before it validates or applies anything; the rules per RPC are in the proto's header.
// CreateRun and ImportRun then generate the new run's token and return it in RunInfo.token.
//
// Sources: service.cc (runs, inspection, NextBatch, ReportRollouts), service_pool.cc
// (UpsertQuestions, ImportPool), service_archive.cc (ExportRun, ImportRun), service_internal.h
// (what they share). The wire form of core's types is proto/convert.h; the fragment codec of the
// training streams is proto/payload_codec.h.
#ifndef DOTS_SERVER_SERVICE_H_
#define DOTS_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/run/run_registry.h"
#include "core/util/mutex.h"
#include "dots/v1/dots.grpc.pb.h"
#include "server/auth.h"
#include "server/executor.h"
#include "server/metrics.h"

namespace dots {

struct ServiceOptions {
  // The server's send and receive limit; NextBatch chunks stay below it minus headroom.
  int64_t max_message_bytes = 4LL << 20;
  // NextBatch chunk size when the request's max_chunk_bytes is 0.
  int64_t default_chunk_bytes = 1LL << 20;
  // ReportRollouts: largest payload of one group (RESOURCE_EXHAUSTED above).
  int64_t max_group_payload_bytes = 64LL << 20;
  // ReportRollouts and UpsertQuestions: largest total of one client stream, in bytes.
  int64_t max_stream_bytes = 1LL << 30;
  // Streaming calls open at once; one more is RESOURCE_EXHAUSTED naming max_concurrent_streams.
  int64_t max_concurrent_streams = 1024;
  // ImportRun: largest archive accepted, in bytes (RESOURCE_EXHAUSTED above).
  int64_t max_import_bytes = 64LL << 30;
  // A NextBatch without a deadline (or with a later one) waits at most this long.
  absl::Duration max_wait = absl::Minutes(10);
  // Granularity at which a waiting NextBatch notices cancellation and draining.
  absl::Duration wait_slice = absl::Milliseconds(500);
  // Borrowed, may be null: receives replay ages (NextBatch), prediction errors
  // (ReportRollouts) and run deletions. RPC counts and latencies come from its interceptor.
  Metrics* metrics = nullptr;
  // Borrowed, may be null (= auth off): the bearer-token checks of every call (server/auth.h).
  const Authenticator* auth = nullptr;
};

class DotsService final : public v1::Dots::CallbackService {
 public:
  enum class State { kStarting, kServing, kDraining };

  // Borrows everything; all three must outlive the grpc::Server the service is registered with.
  // Starts in kStarting (every call UNAVAILABLE).
  DotsService(RunRegistry* registry, Executor* calls, Executor* waits, ServiceOptions options);

  // kStarting -> kServing -> kDraining; kDraining is final. Thread-safe, O(1).
  void SetState(State state);
  State state() const { return state_.load(std::memory_order_acquire); }

  // Blocks until no Dots call has been in flight for `quiet`, or until `deadline`; true when
  // quiet. Used by the drain between refusing new calls and shutting the transport down, so that
  // the calls in flight finish and clients calling back-to-back get a retryable UNAVAILABLE
  // rather than having their next call reset by the transport's shutdown. Thread-safe.
  bool WaitUntilQuiet(absl::Duration quiet, absl::Time deadline);
  int64_t calls_in_flight() const;
  // Streaming calls whose reactor exists (until gRPC's OnDone); 0 once every client stream has
  // ended, however it ended. O(1).
  int64_t streams_open() const;

  // Largest NextBatch chunk the server sends: max_message_bytes minus headroom for the
  // chunk's framing. O(1).
  int64_t max_chunk_bytes() const;

  grpc::ServerUnaryReactor* CreateRun(grpc::CallbackServerContext* context,
                                      const v1::CreateRunRequest* request,
                                      v1::RunInfo* response) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context,
                                   const v1::GetRunRequest* request,
                                   v1::RunInfo* response) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context,
                                     const v1::ListRunsRequest* request,
                                     v1::ListRunsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* context,
                                      const v1::DeleteRunRequest* request,
                                      v1::DeleteRunResponse* response) override;
  grpc::ServerUnaryReactor* SealRun(grpc::CallbackServerContext* context,
                                    const v1::SealRunRequest* request,
                                    v1::RunInfo* response) override;
  grpc::ServerReadReactor<v1::UpsertQuestionsRequest>* UpsertQuestions(
      grpc::CallbackServerContext* context, v1::UpsertQuestionsResponse* response) override;
  grpc::ServerWriteReactor<v1::ImportPoolProgress>* ImportPool(
      grpc::CallbackServerContext* context, const v1::ImportPoolRequest* request) override;
  grpc::ServerWriteReactor<v1::ExportRunChunk>* ExportRun(
      grpc::CallbackServerContext* context, const v1::ExportRunRequest* request) override;
  grpc::ServerReadReactor<v1::ImportRunRequest>* ImportRun(grpc::CallbackServerContext* context,
                                                           v1::RunInfo* response) override;
  grpc::ServerWriteReactor<v1::NextBatchChunk>* NextBatch(
      grpc::CallbackServerContext* context, const v1::NextBatchRequest* request) override;
  grpc::ServerReadReactor<v1::ReportRolloutsRequest>* ReportRollouts(
      grpc::CallbackServerContext* context, v1::ReportRolloutsResponse* response) override;
  grpc::ServerUnaryReactor* GetEstimates(grpc::CallbackServerContext* context,
                                         const v1::GetEstimatesRequest* request,
                                         v1::GetEstimatesResponse* response) override;
  grpc::ServerUnaryReactor* GetRunStats(grpc::CallbackServerContext* context,
                                        const v1::GetRunStatsRequest* request,
                                        v1::RunStats* response) override;

 private:
  class UnaryReactor;
  class NextBatchReactor;
  class ReportRolloutsReactor;
  class UpsertQuestionsReactor;
  class ImportPoolReactor;
  class ExportRunReactor;
  class ImportRunReactor;

  // Every handler calls CallStarted on entry and CallEnded once it has finished (the streaming
  // reactors in OnDone).
  void CallStarted();
  void CallEnded();
  // The same for the streaming handlers, which also count as open streams.
  void StreamStarted();
  void StreamEnded();
  // OK while serving; UNAVAILABLE (starting or draining) otherwise.
  absl::Status CheckServing() const;
  // CheckServing, then RESOURCE_EXHAUSTED when more than max_concurrent_streams streams are open
  // (this one included).
  absl::Status CheckServingStream() const;
  // Bearer-token checks (server/auth.h); OK when auth is off. AuthorizeRun allows the admin
  // token and run `run_id`'s own token; AuthorizeAdmin only the admin token.
  absl::Status AuthorizeAdmin(const grpc::CallbackServerContext& context) const;
  absl::Status AuthorizeRun(const grpc::CallbackServerContext& context,
                            const std::string& run_id) const;
  absl::Status AuthenticateAny(const grpc::CallbackServerContext& context) const;
  // The routing key: a call that names run `run_id` may carry it as metadata `x-dots-run` (the
  // clients always do; a router such as HAProxy hashes it to pick the replica). When present it
  // must equal `run_id`, so that a misrouted or mislabelled call never acts on another run:
  // INVALID_ARGUMENT naming x-dots-run otherwise (also for the header given twice). O(1).
  static absl::Status CheckRoutingKey(const grpc::CallbackServerContext& context,
                                      std::string_view run_id);
  bool auth_enabled() const { return options_.auth != nullptr && options_.auth->enabled(); }
  // Runs `work` on the `calls` executor and finishes the unary call with its status.
  template <typename Work>
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* context, Work work);

  RunRegistry* const registry_;
  Executor* const calls_;
  Executor* const waits_;
  const ServiceOptions options_;
  std::atomic<State> state_{State::kStarting};
  mutable Mutex calls_mu_;
  CondVar idle_;
  int64_t calls_in_flight_ ABSL_GUARDED_BY(calls_mu_) = 0;
  int64_t streams_open_ ABSL_GUARDED_BY(calls_mu_) = 0;
  absl::Time last_call_ended_ ABSL_GUARDED_BY(calls_mu_) = absl::InfinitePast();
};

}  // namespace dots

#endif  // DOTS_SERVER_SERVICE_H_
