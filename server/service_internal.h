// Pieces shared by the service's source files (service.cc: runs, inspection, training;
// service_pool.cc: question uploads and imports). Not part of the server's API.
#ifndef DOTS_SERVER_SERVICE_INTERNAL_H_
#define DOTS_SERVER_SERVICE_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/run_registry.h"
#include "core/status_macros.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/executor.h"
#include "server/grpc_status.h"

namespace dots::service_internal {

// INVALID_ARGUMENT naming run_id for an empty or malformed id. O(len).
inline absl::Status ValidateRunIdField(const std::string& run_id) {
  if (run_id.empty()) return absl::InvalidArgumentError("run_id: is empty");
  return RunRegistry::ValidateRunId(run_id);
}

// The run named by a request: INVALID_ARGUMENT for a malformed id, NOT_FOUND for an unknown one.
inline absl::StatusOr<RunEntry> LookUpRun(const RunRegistry& registry, const std::string& run_id) {
  DOTS_RETURN_IF_ERROR(ValidateRunIdField(run_id));
  return registry.Get(run_id);
}

inline grpc::Status Unavailable(std::string_view why) {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(why));
}

inline grpc::Status Cancelled() {
  return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
}

// Reads a client stream on the gRPC thread (cheap: framing and validation), then applies it on
// the `calls` executor and answers after it is applied. Derived classes implement Consume (one
// message) and Apply (the whole stream).
template <typename Request, typename Response>
class ClientStreamReactor : public grpc::ServerReadReactor<Request> {
 public:
  // `on_done` runs in OnDone, before the reactor is deleted.
  ClientStreamReactor(grpc::CallbackServerContext* context, Executor* executor, Response* response,
                      std::function<void()> on_done)
      : context_(context), executor_(executor), response_(response), on_done_(std::move(on_done)) {}

  // Called once the derived object is fully constructed: refuses the call, or starts reading.
  void Start(const absl::Status& serving) {
    if (!serving.ok()) {
      this->Finish(ToGrpcStatus(serving));
      return;
    }
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    ++messages_;
    absl::Status status = Consume(request_);
    if (!status.ok()) {
      this->Finish(ToGrpcStatus(status));
      return;
    }
    request_.Clear();
    this->StartRead(&request_);
  }
  void OnCancel() override { cancelled_.store(true, std::memory_order_release); }
  void OnDone() override {
    on_done_();
    delete this;
  }

 protected:
  // Consumes message number messages() - 1 (0-based) of the stream.
  virtual absl::Status Consume(Request& request) = 0;
  // Applies the whole stream (on the executor), filling the response.
  virtual absl::Status Apply(Response* response) = 0;
  int64_t messages() const { return messages_; }

 private:
  void EndOfStream() {
    // A stream that ended by cancellation is never applied: the client saw no answer.
    if (cancelled_.load(std::memory_order_acquire) || context_->IsCancelled()) {
      this->Finish(Cancelled());
      return;
    }
    if (messages_ == 0) {
      this->Finish(ToGrpcStatus(
          absl::InvalidArgumentError("run_id: the stream ended before its first message")));
      return;
    }
    if (!executor_->Schedule([this] {
          if (cancelled_.load(std::memory_order_acquire)) {
            this->Finish(Cancelled());
            return;
          }
          this->Finish(ToGrpcStatus(Apply(response_)));
        })) {
      this->Finish(Unavailable("the server is shutting down"));
    }
  }

  grpc::CallbackServerContext* const context_;
  Executor* const executor_;
  Response* const response_;
  const std::function<void()> on_done_;
  Request request_;
  int64_t messages_ = 0;
  std::atomic<bool> cancelled_{false};
};

}  // namespace dots::service_internal

#endif  // DOTS_SERVER_SERVICE_INTERNAL_H_
