// Pieces shared by the service's source files (service.cc: runs, inspection, training;
// service_pool.cc: question uploads and imports). Not part of the server's API.
#ifndef DOTS_SERVER_SERVICE_INTERNAL_H_
#define DOTS_SERVER_SERVICE_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/run/run_registry.h"
#include "core/util/mutex.h"
#include "core/util/status_macros.h"
#include "dots/v1/dots.pb.h"
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

// The RunInfo of a run. O(1) plus a Stats call.
void FillRunInfo(const std::string& id, const RunEntry& entry, v1::RunInfo* info);

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
  grpc::CallbackServerContext* context() const { return context_; }

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

// A server-streaming reactor whose messages are produced on another thread (an executor job):
// Send queues a message, waiting while `max_queued` are already pending so that a fast producer
// cannot outrun a slow client without bound; End finishes the call after the queued writes.
// Derived classes start the producer and implement OnDone.
template <typename Message>
class QueuedWriteReactor : public grpc::ServerWriteReactor<Message> {
 public:
  explicit QueuedWriteReactor(size_t max_queued) : max_queued_(max_queued) {}

  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    writing_ = false;
    broken_ |= !ok;
    space_.SignalAll();
    if (!broken_ && !pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      Message* next = &current_;  // not touched again until this write is done
      mu_.Unlock();
      this->StartWrite(next);
      return;
    }
    std::optional<grpc::Status> finish = finish_;
    mu_.Unlock();
    if (finish.has_value()) this->Finish(std::move(*finish));
  }
  void OnCancel() override ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    broken_ = true;
    space_.SignalAll();
  }

 protected:
  // Queues `message`; blocks while the queue is full. False when the client is gone (cancelled
  // or a write failed): the message is dropped and the producer should stop.
  bool Send(Message message) ABSL_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    while (!broken_ && pending_.size() >= max_queued_) space_.Wait(&mu_);
    if (broken_) {
      mu_.Unlock();
      return false;
    }
    if (writing_) {
      pending_.push_back(std::move(message));
      mu_.Unlock();
      return true;
    }
    current_ = std::move(message);
    writing_ = true;
    Message* next = &current_;  // not touched again until this write is done
    mu_.Unlock();
    this->StartWrite(next);
    return true;
  }
  // Finishes now, or after the queued writes when the call is still healthy.
  void End(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (writing_) {
        finish_ = std::move(status);
        return;
      }
    }
    this->Finish(std::move(status));
  }
  bool client_gone() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return broken_;
  }

 private:
  const size_t max_queued_;
  Mutex mu_;
  CondVar space_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // a StartWrite is outstanding
  bool broken_ ABSL_GUARDED_BY(mu_) = false;   // cancelled, or a write failed: the client is gone
  Message current_ ABSL_GUARDED_BY(mu_);       // the message being written
  std::deque<Message> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dots::service_internal

#endif  // DOTS_SERVER_SERVICE_INTERNAL_H_
