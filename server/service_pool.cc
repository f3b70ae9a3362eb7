// DotsService: the pool RPCs, UpsertQuestions and ImportPool (see server/service.h).
#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/formats/pool.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"
#include "proto/convert.h"
#include "server/grpc_status.h"
#include "server/service.h"
#include "server/service_internal.h"

namespace dots {
namespace {

using service_internal::ClientStreamReactor;
using service_internal::LookUpRun;
using service_internal::QueuedWriteReactor;
using service_internal::Unavailable;

// Rewrites core's "questions[j]: ..." (j = position in the subset given to the run) into the
// stream position.
std::string RenumberQuestionError(const std::string& error, int64_t core_index,
                                  int64_t stream_index) {
  const std::string prefix = absl::StrCat("questions[", core_index, "]: ");
  const std::string rest =
      error.compare(0, prefix.size(), prefix) == 0 ? error.substr(prefix.size()) : error;
  return absl::StrCat("questions[", stream_index, "]: ", rest);
}

}  // namespace

class DotsService::UpsertQuestionsReactor final
    : public ClientStreamReactor<v1::UpsertQuestionsRequest, v1::UpsertQuestionsResponse> {
 public:
  UpsertQuestionsReactor(DotsService* service, grpc::CallbackServerContext* context,
                         v1::UpsertQuestionsResponse* response)
      : ClientStreamReactor(context, service->calls_, response,
                            [service] { service->StreamEnded(); }),
        service_(service) {}

 private:
  absl::Status Consume(v1::UpsertQuestionsRequest& request) override {
    if (messages() == 1) {
      DOTS_RETURN_IF_ERROR(service_->AuthorizeRun(*context(), request.run_id()));
      if (request.run_id().empty()) {
        return absl::InvalidArgumentError("run_id: missing in the stream's first message");
      }
      DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*service_->registry_, request.run_id()));
      run_ = std::move(entry.run);
    }
    stream_bytes_ += static_cast<int64_t>(request.ByteSizeLong());
    if (stream_bytes_ > service_->options_.max_stream_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("questions: the upload exceeds the server's per-call limit of ",
                       service_->options_.max_stream_bytes,
                       " bytes (--max_stream_bytes); split it over several calls"));
    }
    for (v1::Question& in : *request.mutable_questions()) {
      embeddings_.emplace_back(in.embedding().begin(), in.embedding().end());
      questions_.push_back(FromProto(std::move(in)));
    }
    return absl::OkStatus();
  }

  absl::Status Apply(v1::UpsertQuestionsResponse* response) override {
    const int64_t n = static_cast<int64_t>(questions_.size());
    // A matrix needs one width: take the commonest embedding length of the upload (the first
    // seen on ties) and reject the questions that differ; the run checks it against its own.
    absl::flat_hash_map<size_t, int64_t> count;
    int64_t best = 0;
    for (const std::vector<float>& e : embeddings_) best = std::max(best, ++count[e.size()]);
    size_t dim = 0;
    for (const std::vector<float>& e : embeddings_) {
      if (count[e.size()] == best) {
        dim = e.size();
        break;
      }
    }
    std::vector<RejectedQuestion> rejected;
    std::vector<int64_t> subset;
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<float>& e = embeddings_[static_cast<size_t>(i)];
      const Question& q = questions_[static_cast<size_t>(i)];
      std::string error;
      if (e.size() != dim) {
        error = absl::StrCat("questions[", i, "]: field \"embedding\": has ", e.size(),
                             " values, but most questions of this upload have ", dim);
      } else if (absl::StatusOr<JsonValue> json = ParseJson(q.metadata_json); !json.ok()) {
        error =
            absl::StrCat("questions[", i,
                         "]: field \"metadata_json\": not valid JSON: ", json.status().message());
      }
      if (error.empty()) {
        subset.push_back(i);
      } else {
        rejected.push_back({i, q.key, std::move(error)});
      }
    }
    std::vector<Question> questions;
    questions.reserve(subset.size());
    FloatMatrix matrix;
    if (dim > 0)
      matrix = FloatMatrix(static_cast<int64_t>(subset.size()), static_cast<int64_t>(dim));
    for (size_t j = 0; j < subset.size(); ++j) {
      const size_t i = static_cast<size_t>(subset[j]);
      questions.push_back(std::move(questions_[i]));
      if (dim > 0) std::copy(embeddings_[i].begin(), embeddings_[i].end(), matrix.row(j));
    }
    embeddings_.clear();
    UpsertResult result;
    if (!questions.empty()) {
      DOTS_ASSIGN_OR_RETURN(result, run_->UpsertQuestions(std::move(questions), matrix,
                                                          /*reject_individually=*/true));
    }
    for (const RejectedQuestion& r : result.rejected) {
      const int64_t stream_index = subset[static_cast<size_t>(r.index)];
      rejected.push_back(
          {stream_index, r.key, RenumberQuestionError(r.error, r.index, stream_index)});
    }
    std::sort(
        rejected.begin(), rejected.end(),
        [](const RejectedQuestion& a, const RejectedQuestion& b) { return a.index < b.index; });
    for (RejectedQuestion& r : rejected) r.error = TruncateStatusMessage(r.error);
    result.rejected = std::move(rejected);
    ToProto(result, response);
    return absl::OkStatus();
  }

  DotsService* const service_;
  std::shared_ptr<Run> run_;
  std::vector<Question> questions_;
  std::vector<std::vector<float>> embeddings_;
  int64_t stream_bytes_ = 0;
};

grpc::ServerReadReactor<v1::UpsertQuestionsRequest>* DotsService::UpsertQuestions(
    grpc::CallbackServerContext* context, v1::UpsertQuestionsResponse* response) {
  StreamStarted();
  auto* reactor = new UpsertQuestionsReactor(this, context, response);
  absl::Status serving = CheckServingStream();
  reactor->Start(serving.ok() ? AuthenticateAny(*context) : serving);
  return reactor;
}

// ---- ImportPool ----

// Loads the files on the `waits` executor and streams progress; writes are queued so that the
// loading thread never waits for the client.
class DotsService::ImportPoolReactor final : public QueuedWriteReactor<v1::ImportPoolProgress> {
 public:
  ImportPoolReactor(DotsService* service, const grpc::CallbackServerContext& context,
                    const v1::ImportPoolRequest& request)
      : QueuedWriteReactor(/*max_queued=*/SIZE_MAX), service_(service), request_(request) {
    service_->StreamStarted();
    absl::Status serving = service_->CheckServingStream();
    // The admin's alone: it reads files of the server's filesystem (and names them and their
    // lines in errors), which no run's token may reach.
    if (serving.ok()) serving = service_->AuthorizeAdmin(context);
    if (serving.ok()) serving = CheckRoutingKey(context, request.run_id());
    if (!serving.ok()) {
      Finish(ToGrpcStatus(serving));
      return;
    }
    if (!service_->waits_->Schedule([this] { End(ToGrpcStatus(Import())); })) {
      Finish(Unavailable("the server is shutting down"));
    }
  }

  void OnDone() override {
    service_->StreamEnded();
    delete this;
  }

 private:
  absl::Status Import() {
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, LookUpRun(*service_->registry_, request_.run_id()));
    if (request_.questions_path().empty()) {
      return absl::InvalidArgumentError("questions_path: is empty");
    }
    DOTS_ASSIGN_OR_RETURN(Pool pool, LoadPool(request_.questions_path(), request_.embeddings_path(),
                                              [this](int64_t questions_read) {
                                                SendProgress({.questions_read = questions_read});
                                              }));
    ImportProgress progress{.questions_read = pool.size()};
    SendProgress(progress);
    if (client_gone()) return absl::CancelledError("the call was cancelled; nothing was imported");
    std::vector<Question> questions = pool.questions();
    const FloatMatrix& embeddings = pool.embeddings();
    // All or nothing: the run rejects the whole upload on the first invalid question.
    DOTS_ASSIGN_OR_RETURN(UpsertResult result,
                          entry.run->UpsertQuestions(std::move(questions), embeddings,
                                                     /*reject_individually=*/false));
    progress.added = result.added;
    progress.updated = result.updated;
    progress.done = true;
    SendProgress(progress);
    return absl::OkStatus();
  }

  void SendProgress(const ImportProgress& progress) {
    v1::ImportPoolProgress message;
    ToProto(progress, &message);
    Send(std::move(message));
  }

  DotsService* const service_;
  const v1::ImportPoolRequest request_;
};

grpc::ServerWriteReactor<v1::ImportPoolProgress>* DotsService::ImportPool(
    grpc::CallbackServerContext* context, const v1::ImportPoolRequest* request) {
  return new ImportPoolReactor(this, *context, *request);
}
}  // namespace dots
