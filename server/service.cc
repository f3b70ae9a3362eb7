// DotsService: run management, inspection and the training RPCs (see server/service.h); the
// pool RPCs are in service_pool.cc.
#include "server/service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/run/run_config.h"
#include "core/util/file_util.h"
#include "core/util/mutex.h"
#include "core/util/status_macros.h"
#include "proto/convert.h"
#include "proto/payload_codec.h"
#include "server/grpc_status.h"
#include "server/service_internal.h"

namespace dots {

void service_internal::FillRunInfo(const std::string& id, const RunEntry& entry,
                                   v1::RunInfo* info) {
  ToProto(RunInfo{id, RunConfigToJson(entry.run->config()), entry.run->Stats().pool_size,
                  absl::ToUnixSeconds(entry.created), /*token=*/"", entry.run->sealed()},
          info);
}

namespace {

using service_internal::Cancelled;
using service_internal::ClientStreamReactor;
using service_internal::FillRunInfo;
using service_internal::LookUpRun;
using service_internal::Unavailable;
using service_internal::ValidateRunIdField;

constexpr int32_t kDefaultPageSize = 1000;
constexpr int32_t kMaxPageSize = 10000;

// The call's deadline, capped at now + max_wait; *capped tells whether the cap applied.
absl::Time WaitDeadline(const grpc::CallbackServerContext& context, absl::Duration max_wait,
                        bool* capped) {
  const absl::Time cap = absl::Now() + max_wait;
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    *capped = true;
    return cap;
  }
  const absl::Time t = absl::FromChrono(deadline);
  *capped = t > cap;
  return std::min(t, cap);
}

}  // namespace

DotsService::DotsService(RunRegistry* registry, Executor* calls, Executor* waits,
                         ServiceOptions options)
    : registry_(registry), calls_(calls), waits_(waits), options_(options) {}

void DotsService::SetState(State state) {
  State current = state_.load(std::memory_order_acquire);
  // kDraining is final; the other transitions only move forward.
  while (static_cast<int>(state) > static_cast<int>(current) &&
         !state_.compare_exchange_weak(current, state, std::memory_order_acq_rel)) {
  }
}

void DotsService::CallStarted() {
  MutexLock lock(&calls_mu_);
  ++calls_in_flight_;
}

void DotsService::CallEnded() {
  MutexLock lock(&calls_mu_);
  last_call_ended_ = absl::Now();
  if (--calls_in_flight_ == 0) idle_.SignalAll();
}

void DotsService::StreamStarted() {
  if (options_.metrics != nullptr) options_.metrics->AddStreamsOpen(1);
  MutexLock lock(&calls_mu_);
  ++calls_in_flight_;
  ++streams_open_;
}

void DotsService::StreamEnded() {
  if (options_.metrics != nullptr) options_.metrics->AddStreamsOpen(-1);
  MutexLock lock(&calls_mu_);
  --streams_open_;
  last_call_ended_ = absl::Now();
  if (--calls_in_flight_ == 0) idle_.SignalAll();
}

int64_t DotsService::streams_open() const {
  MutexLock lock(&calls_mu_);
  return streams_open_;
}

absl::Status DotsService::CheckServingStream() const {
  DOTS_RETURN_IF_ERROR(CheckServing());
  MutexLock lock(&calls_mu_);
  if (streams_open_ > options_.max_concurrent_streams) {
    return absl::ResourceExhaustedError(
        absl::StrCat("max_concurrent_streams: ", streams_open_ - 1,
                     " streaming calls are already open on this server (its limit is ",
                     options_.max_concurrent_streams, "); retry with backoff"));
  }
  return absl::OkStatus();
}

bool DotsService::WaitUntilQuiet(absl::Duration quiet, absl::Time deadline) {
  MutexLock lock(&calls_mu_);
  while (true) {
    const absl::Time now = absl::Now();
    if (calls_in_flight_ == 0 && now >= last_call_ended_ + quiet) return true;
    if (now >= deadline) return false;
    const absl::Time wake = calls_in_flight_ == 0 ? last_call_ended_ + quiet : deadline;
    idle_.WaitWithDeadline(&calls_mu_, std::min(wake, deadline));
  }
}

int64_t DotsService::calls_in_flight() const {
  MutexLock lock(&calls_mu_);
  return calls_in_flight_;
}

absl::Status DotsService::AuthorizeAdmin(const grpc::CallbackServerContext& context) const {
  if (!auth_enabled()) return absl::OkStatus();
  return options_.auth->AuthorizeAdmin(context, *registry_);
}

absl::Status DotsService::AuthorizeRun(const grpc::CallbackServerContext& context,
                                       const std::string& run_id) const {
  if (auth_enabled()) {
    DOTS_RETURN_IF_ERROR(options_.auth->AuthorizeRun(context, *registry_, run_id));
  }
  return CheckRoutingKey(context, run_id);
}

absl::Status DotsService::CheckRoutingKey(const grpc::CallbackServerContext& context,
                                          std::string_view run_id) {
  const auto range = context.client_metadata().equal_range(kRoutingHeader);
  if (range.first == range.second) return absl::OkStatus();
  if (std::next(range.first) != range.second) {
    return absl::InvalidArgumentError("x-dots-run: the routing header is given more than once");
  }
  const std::string_view routed(range.first->second.data(), range.first->second.size());
  if (routed == run_id) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("x-dots-run: the routing header names run \"", ToAbsl(routed),
                   "\" but the request names run \"", ToAbsl(run_id),
                   "\"; the call was routed for another run and is refused"));
}

absl::Status DotsService::AuthenticateAny(const grpc::CallbackServerContext& context) const {
  if (!auth_enabled()) return absl::OkStatus();
  return options_.auth->AuthenticateAny(context, *registry_);
}

int64_t DotsService::max_chunk_bytes() const {
  const int64_t headroom = std::min<int64_t>(64 << 10, options_.max_message_bytes / 4);
  return std::max(kMinChunkBytes, options_.max_message_bytes - headroom);
}

absl::Status DotsService::CheckServing() const {
  switch (state()) {
    case State::kServing:
      return absl::OkStatus();
    case State::kStarting:
      return absl::UnavailableError("the server is starting; retry shortly");
    case State::kDraining:
      break;
  }
  return absl::UnavailableError("the server is draining; retry against its replacement");
}

// The default unary reactor, plus in-flight accounting up to OnDone (the status has been sent).
class DotsService::UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryReactor(DotsService* service) : service_(service) { service_->CallStarted(); }
  void OnDone() override {
    service_->CallEnded();
    delete this;
  }

 private:
  DotsService* const service_;
};

template <typename Work>
grpc::ServerUnaryReactor* DotsService::RunUnary(grpc::CallbackServerContext* /*context*/,
                                                Work work) {
  auto* reactor = new UnaryReactor(this);
  if (absl::Status serving = CheckServing(); !serving.ok()) {
    reactor->Finish(ToGrpcStatus(serving));
    return reactor;
  }
  if (!calls_->Schedule(
          [reactor, work = std::move(work)]() mutable { reactor->Finish(ToGrpcStatus(work())); })) {
    reactor->Finish(Unavailable("the server is shutting down"));
  }
  return reactor;
}

// ---- runs ----

grpc::ServerUnaryReactor* DotsService::CreateRun(grpc::CallbackServerContext* context,
                                                 const v1::CreateRunRequest* request,
                                                 v1::RunInfo* response) {
  return RunUnary(context, [this, context, request, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeAdmin(*context));
    DOTS_RETURN_IF_ERROR(CheckRoutingKey(*context, request->run_id()));
    DOTS_RETURN_IF_ERROR(ValidateRunIdField(request->run_id()));
    const std::string& text = request->config_json();
    absl::StatusOr<RunConfig> config = ParseRunConfig(text.empty() ? "{}" : text);
    if (!config.ok()) {
      return absl::Status(config.status().code(),
                          absl::StrCat("config_json: ", config.status().message()));
    }
    // With auth on, the run's token is made here and returned once; only its hash is kept.
    std::string token;
    if (auth_enabled()) {
      DOTS_ASSIGN_OR_RETURN(token, GenerateToken());
    }
    DOTS_ASSIGN_OR_RETURN(RunEntry entry,
                          registry_->Create(request->run_id(), *config,
                                            token.empty() ? std::string() : Sha256(token)));
    FillRunInfo(request->run_id(), entry, response);
    response->set_token(std::move(token));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DotsService::GetRun(grpc::CallbackServerContext* context,
                                              const v1::GetRunRequest* request,
                                              v1::RunInfo* response) {
  return RunUnary(context, [this, context, request, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeRun(*context, request->run_id()));
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*registry_, request->run_id()));
    FillRunInfo(request->run_id(), entry, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DotsService::ListRuns(grpc::CallbackServerContext* context,
                                                const v1::ListRunsRequest* /*request*/,
                                                v1::ListRunsResponse* response) {
  return RunUnary(context, [this, context, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeAdmin(*context));
    for (const auto& [id, entry] : registry_->List()) FillRunInfo(id, entry, response->add_runs());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DotsService::DeleteRun(grpc::CallbackServerContext* context,
                                                 const v1::DeleteRunRequest* request,
                                                 v1::DeleteRunResponse* /*response*/) {
  return RunUnary(context, [this, context, request]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeRun(*context, request->run_id()));
    DOTS_RETURN_IF_ERROR(ValidateRunIdField(request->run_id()));
    DOTS_RETURN_IF_ERROR(registry_->Delete(request->run_id()));
    if (options_.metrics != nullptr) options_.metrics->RemoveRun(request->run_id());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DotsService::SealRun(grpc::CallbackServerContext* context,
                                               const v1::SealRunRequest* request,
                                               v1::RunInfo* response) {
  return RunUnary(context, [this, context, request, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeAdmin(*context));
    DOTS_RETURN_IF_ERROR(CheckRoutingKey(*context, request->run_id()));
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*registry_, request->run_id()));
    DOTS_RETURN_IF_ERROR(entry.run->SetSealed(request->sealed()));
    FillRunInfo(request->run_id(), entry, response);
    return absl::OkStatus();
  });
}

// ---- inspection ----

grpc::ServerUnaryReactor* DotsService::GetEstimates(grpc::CallbackServerContext* context,
                                                    const v1::GetEstimatesRequest* request,
                                                    v1::GetEstimatesResponse* response) {
  return RunUnary(context, [this, context, request, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeRun(*context, request->run_id()));
    if (request->page_size() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("page_size: ", request->page_size(), " < 0"));
    }
    const int64_t page_size = request->page_size() == 0
                                  ? kDefaultPageSize
                                  : std::min<int64_t>(request->page_size(), kMaxPageSize);
    std::vector<std::string> keys(request->keys().begin(), request->keys().end());
    if (static_cast<int64_t>(keys.size()) > kMaxPageSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("keys: ", keys.size(), " keys, at most ", kMaxPageSize, " per call"));
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i].empty()) return absl::InvalidArgumentError(absl::StrCat("keys[", i, "]: empty"));
    }
    if (!keys.empty() && !request->page_token().empty()) {
      return absl::InvalidArgumentError("page_token: not used together with keys");
    }
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*registry_, request->run_id()));
    DOTS_ASSIGN_OR_RETURN(std::vector<QuestionEstimate> estimates, entry.run->GetEstimates(keys));
    const int64_t total = static_cast<int64_t>(estimates.size());
    int64_t begin = 0;
    if (!request->page_token().empty()) {
      const std::string& token = request->page_token();
      const bool digits = token.size() <= 18 && std::all_of(token.begin(), token.end(), [](char c) {
                            return c >= '0' && c <= '9';
                          });
      if (!digits || !absl::SimpleAtoi(token, &begin) || begin > total) {
        return absl::InvalidArgumentError(
            absl::StrCat("page_token: ", QuoteForMessage(token),
                         " is not a token from this run's GetEstimates"));
      }
    }
    const int64_t end = keys.empty() ? std::min(total, begin + page_size) : total;
    for (int64_t i = begin; i < end; ++i) {
      ToProto(estimates[static_cast<size_t>(i)], response->add_estimates());
    }
    if (end < total) response->set_next_page_token(std::to_string(end));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* DotsService::GetRunStats(grpc::CallbackServerContext* context,
                                                   const v1::GetRunStatsRequest* request,
                                                   v1::RunStats* response) {
  return RunUnary(context, [this, context, request, response]() -> absl::Status {
    DOTS_RETURN_IF_ERROR(AuthorizeRun(*context, request->run_id()));
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*registry_, request->run_id()));
    ToProto(entry.run->Stats(), response);
    return absl::OkStatus();
  });
}

// ---- NextBatch ----

// Waits (on the `waits` executor, slice by slice) for the step's batch, then writes it chunk by
// chunk; each chunk is built in OnWriteDone from the previous, so one chunk is in memory at a
// time besides the slice itself.
class DotsService::NextBatchReactor final : public grpc::ServerWriteReactor<v1::NextBatchChunk> {
 public:
  NextBatchReactor(DotsService* service, grpc::CallbackServerContext* context,
                   const v1::NextBatchRequest& request)
      : service_(service),
        run_id_(request.run_id()),
        step_(request.step()),
        rank_(request.rank()),
        world_size_(request.world_size() == 0 ? 1 : request.world_size()),
        policy_version_(request.policy_version()) {
    service_->StreamStarted();
    absl::Status status = Prepare(*context, request);
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    if (!service_->waits_->Schedule([this] { Attempt(); })) {
      Finish(Unavailable("the server is shutting down"));
    }
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "NextBatch: the stream broke"));
      return;
    }
    WriteNextOrFinish();
  }
  void OnCancel() override { cancelled_.store(true, std::memory_order_release); }
  void OnDone() override {
    service_->StreamEnded();
    delete this;
  }

 private:
  absl::Status Prepare(const grpc::CallbackServerContext& context,
                       const v1::NextBatchRequest& request) {
    DOTS_RETURN_IF_ERROR(service_->CheckServingStream());
    DOTS_RETURN_IF_ERROR(service_->AuthorizeRun(context, request.run_id()));
    if (request.step() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("step: ", request.step(), " < 0"));
    }
    if (world_size_ < 1) {
      return absl::InvalidArgumentError(absl::StrCat("world_size: ", request.world_size(), " < 0"));
    }
    if (rank_ < 0 || rank_ >= world_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank: ", rank_, " is outside [0, world_size = ", world_size_, ")"));
    }
    if (request.policy_version() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy_version: ", request.policy_version(), " < 0"));
    }
    const int64_t wanted = request.max_chunk_bytes();
    if (wanted < 0 || (wanted > 0 && wanted < kMinChunkBytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_chunk_bytes: ", wanted, " must be 0 (server default) or at least ", kMinChunkBytes));
    }
    chunk_bytes_ = std::min(wanted == 0 ? service_->options_.default_chunk_bytes : wanted,
                            service_->max_chunk_bytes());
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*service_->registry_, request.run_id()));
    run_ = std::move(entry.run);
    deadline_ = WaitDeadline(context, service_->options_.max_wait, &deadline_capped_);
    return absl::OkStatus();
  }

  // One slice of waiting; requeues itself while the round is still being planned or waits for
  // reports, so that a waiting call holds a thread for at most wait_slice at a time.
  void Attempt() {
    if (cancelled_.load(std::memory_order_acquire)) {
      Finish(Cancelled());
      return;
    }
    if (service_->state() == State::kDraining) {
      Finish(Unavailable("NextBatch: the server is draining; retry against its replacement"));
      return;
    }
    const absl::Time slice_end = std::min(deadline_, absl::Now() + service_->options_.wait_slice);
    absl::StatusOr<BatchSlice> slice =
        run_->NextBatch(step_, rank_, world_size_, policy_version_, slice_end);
    if (!slice.ok()) {
      const absl::StatusCode code = slice.status().code();
      // Run::NextBatch returns these at its deadline only when it waited for reports or the
      // planner; everything else fails before the deadline.
      const bool waited = (code == absl::StatusCode::kFailedPrecondition ||
                           code == absl::StatusCode::kDeadlineExceeded) &&
                          absl::Now() >= slice_end;
      if (!waited) {
        Finish(ToGrpcStatus(slice.status()));
      } else if (slice_end < deadline_) {
        if (!service_->waits_->Schedule([this] { Attempt(); })) {
          Finish(Unavailable("the server is shutting down"));
        }
      } else if (!deadline_capped_) {
        Finish(ToGrpcStatus(absl::DeadlineExceededError(absl::StrCat(
            "NextBatch: the call's deadline passed while waiting: ", slice.status().message()))));
      } else {
        Finish(ToGrpcStatus(slice.status()));
      }
      return;
    }
    if (Metrics* metrics = service_->options_.metrics) {
      for (const ReplayGroup& group : slice->replay) {
        metrics->ObserveReplayAge(run_id_, slice->step - group.step);
      }
    }
    absl::StatusOr<BatchEncoder> chunker =
        BatchEncoder::Create(std::move(*slice), chunk_bytes_, service_->options_.max_message_bytes);
    if (!chunker.ok()) {
      Finish(ToGrpcStatus(chunker.status()));
      return;
    }
    chunker_.emplace(std::move(*chunker));
    WriteNextOrFinish();
  }

  void WriteNextOrFinish() {
    if (chunker_->Next(&chunk_)) {
      StartWrite(&chunk_);
    } else {
      Finish(grpc::Status::OK);
    }
  }

  DotsService* const service_;
  const std::string run_id_;
  const int64_t step_;
  const int rank_;
  const int world_size_;
  const int64_t policy_version_;
  int64_t chunk_bytes_ = 0;
  std::shared_ptr<Run> run_;
  absl::Time deadline_;
  bool deadline_capped_ = false;
  std::atomic<bool> cancelled_{false};
  std::optional<BatchEncoder> chunker_;
  v1::NextBatchChunk chunk_;
};

grpc::ServerWriteReactor<v1::NextBatchChunk>* DotsService::NextBatch(
    grpc::CallbackServerContext* context, const v1::NextBatchRequest* request) {
  return new NextBatchReactor(this, context, *request);
}

// ---- client streams: ReportRollouts and UpsertQuestions ----

class DotsService::ReportRolloutsReactor final
    : public ClientStreamReactor<v1::ReportRolloutsRequest, v1::ReportRolloutsResponse> {
 public:
  ReportRolloutsReactor(DotsService* service, grpc::CallbackServerContext* context,
                        v1::ReportRolloutsResponse* response)
      : ClientStreamReactor(context, service->calls_, response,
                            [service] { service->StreamEnded(); }),
        service_(service),
        assembler_(ReportDecoderLimits{service->options_.max_group_payload_bytes,
                                       service->options_.max_stream_bytes}) {}

 private:
  absl::Status Consume(v1::ReportRolloutsRequest& request) override {
    if (messages() == 1) {
      DOTS_RETURN_IF_ERROR(service_->AuthorizeRun(*context(), request.run_id()));
      if (request.run_id().empty()) {
        return absl::InvalidArgumentError("run_id: missing in the stream's first message");
      }
      DOTS_RETURN_IF_ERROR(ValidateRunIdField(request.run_id()));
      if (request.step() < 0) {
        return absl::InvalidArgumentError(absl::StrCat("step: ", request.step(), " < 0"));
      }
      DOTS_ASSIGN_OR_RETURN(RunEntry entry, service_->registry_->Get(request.run_id()));
      run_ = std::move(entry.run);
      run_id_ = request.run_id();
      step_ = request.step();
    } else {
      // Later messages may repeat run_id and step, but not change them.
      if (!request.run_id().empty() && request.run_id() != run_id_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "run_id: message ", messages() - 1, " names run ", QuoteForMessage(request.run_id()),
            ", the stream's first named ", QuoteForMessage(run_id_)));
      }
      if (request.step() != 0 && request.step() != step_) {
        return absl::InvalidArgumentError(absl::StrCat("step: message ", messages() - 1,
                                                       " names step ", request.step(),
                                                       ", the stream's first named ", step_));
      }
    }
    for (v1::RolloutFragment& fragment : *request.mutable_groups()) {
      DOTS_RETURN_IF_ERROR(assembler_.Add(fragment));
    }
    return absl::OkStatus();
  }

  absl::Status Apply(v1::ReportRolloutsResponse* response) override {
    DOTS_ASSIGN_OR_RETURN(std::vector<RolloutReport> groups, assembler_.Finish());
    DOTS_ASSIGN_OR_RETURN(ReportResult result, run_->ReportRollouts(step_, std::move(groups)));
    if (Metrics* metrics = service_->options_.metrics) {
      for (double error : result.fresh_abs_errors) metrics->ObservePredictionError(run_id_, error);
    }
    ToProto(result, response);
    for (v1::RejectedGroup& rejected : *response->mutable_rejected()) {
      rejected.set_error(TruncateStatusMessage(rejected.error()));
    }
    return absl::OkStatus();
  }

  DotsService* const service_;
  ReportDecoder assembler_;
  std::shared_ptr<Run> run_;
  std::string run_id_;
  int64_t step_ = 0;
};

grpc::ServerReadReactor<v1::ReportRolloutsRequest>* DotsService::ReportRollouts(
    grpc::CallbackServerContext* context, v1::ReportRolloutsResponse* response) {
  StreamStarted();
  auto* reactor = new ReportRolloutsReactor(this, context, response);
  absl::Status serving = CheckServingStream();
  reactor->Start(serving.ok() ? AuthenticateAny(*context) : serving);
  return reactor;
}

}  // namespace dots
