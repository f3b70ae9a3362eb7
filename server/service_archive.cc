// DotsService: ExportRun and ImportRun, run archives over the wire (core/storage/run_archive.h).
#include <stdlib.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/storage/run_archive.h"
#include "core/storage/state_store.h"
#include "core/util/status_macros.h"
#include "dots/state/v1/state.pb.h"
#include "rocksdb/write_batch.h"
#include "server/auth.h"
#include "server/grpc_status.h"
#include "server/service.h"
#include "server/service_internal.h"

namespace dots {
namespace {

using service_internal::ClientStreamReactor;
using service_internal::FillRunInfo;
using service_internal::LookUpRun;
using service_internal::QueuedWriteReactor;
using service_internal::Unavailable;
using service_internal::ValidateRunIdField;

// Chunks queued ahead of the client before the exporting thread waits.
constexpr size_t kMaxQueuedChunks = 8;

absl::Status NeedsStore(const RunRegistry& registry) {
  if (registry.store() != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this dots-server keeps runs in memory only (started with an empty --state_dir): it has "
      "no archives to export or import");
}

// Rewrites the token hash of stored run `id`'s meta record, durably. A crash between the import
// and this write leaves the run with the archived hash (the exported run's token, if any, and
// the admin token reach it); the caller saw no answer and may delete it as admin.
absl::Status SetStoredTokenHash(StateStore& store, const std::string& id, std::string hash) {
  return UpdateRunMeta(
      store, id, [&hash](state::v1::RunMeta& meta) { meta.set_token_sha256(std::move(hash)); });
}

}  // namespace

// ---- ExportRun ----

// Writes the archive on the `waits` executor into a bounded queue that gRPC drains.
class DotsService::ExportRunReactor final : public QueuedWriteReactor<v1::ExportRunChunk> {
 public:
  ExportRunReactor(DotsService* service, const grpc::CallbackServerContext& context,
                   const v1::ExportRunRequest& request)
      : QueuedWriteReactor(kMaxQueuedChunks), service_(service), request_(request) {
    service_->StreamStarted();
    absl::Status serving = service_->CheckServingStream();
    if (serving.ok()) serving = service_->AuthorizeRun(context, request.run_id());
    if (!serving.ok()) {
      Finish(ToGrpcStatus(serving));
      return;
    }
    if (!service_->waits_->Schedule([this] { End(ToGrpcStatus(Export())); })) {
      Finish(Unavailable("the server is shutting down"));
    }
  }

  void OnDone() override {
    service_->StreamEnded();
    delete this;
  }

 private:
  absl::Status Export() {
    DOTS_RETURN_IF_ERROR(NeedsStore(*service_->registry_));
    DOTS_RETURN_IF_ERROR(LookUpRun(*service_->registry_, request_.run_id()).status());
    return ExportRunArchive(*service_->registry_->store(), request_.run_id(),
                            [this](std::string_view piece) -> absl::Status {
                              v1::ExportRunChunk chunk;
                              chunk.set_data(piece.data(), piece.size());
                              if (Send(std::move(chunk))) return absl::OkStatus();
                              return absl::CancelledError("the client stopped reading the export");
                            });
  }

  DotsService* const service_;
  const v1::ExportRunRequest request_;
};

grpc::ServerWriteReactor<v1::ExportRunChunk>* DotsService::ExportRun(
    grpc::CallbackServerContext* context, const v1::ExportRunRequest* request) {
  return new ExportRunReactor(this, *context, *request);
}

// ---- ImportRun ----

// Spools the archive to a file in the state directory, then verifies and imports it on the
// `waits` executor.
class DotsService::ImportRunReactor final
    : public ClientStreamReactor<v1::ImportRunRequest, v1::RunInfo> {
 public:
  ImportRunReactor(DotsService* service, grpc::CallbackServerContext* context,
                   v1::RunInfo* response)
      : ClientStreamReactor(context, service->waits_, response,
                            [service] { service->StreamEnded(); }),
        service_(service) {}
  ~ImportRunReactor() override {
    if (file_ != nullptr) std::fclose(file_);
    if (!path_.empty()) std::remove(path_.c_str());
  }

 private:
  absl::Status Consume(v1::ImportRunRequest& request) override {
    if (messages() == 1) {
      DOTS_RETURN_IF_ERROR(NeedsStore(*service_->registry_));
      if (!request.run_id().empty()) DOTS_RETURN_IF_ERROR(ValidateRunIdField(request.run_id()));
      run_id_ = request.run_id();
      std::string pattern =
          (std::filesystem::path(service_->registry_->store()->dir()) / "import-XXXXXX").string();
      const int fd = mkstemp(pattern.data());
      if (fd < 0) return absl::UnavailableError("state_dir: cannot create a file for the import");
      path_ = pattern;
      file_ = fdopen(fd, "wb");
      if (file_ == nullptr) {
        close(fd);
        return absl::UnavailableError("state_dir: cannot open the import file");
      }
    } else if (!request.run_id().empty()) {
      return absl::InvalidArgumentError("run_id: only the stream's first message may carry it");
    }
    bytes_ += static_cast<int64_t>(request.data().size());
    if (bytes_ > service_->options_.max_import_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("data: the archive exceeds the server's limit of ",
                       service_->options_.max_import_bytes, " bytes (--max_import_bytes)"));
    }
    if (std::fwrite(request.data().data(), 1, request.data().size(), file_) !=
        request.data().size()) {
      return absl::UnavailableError("state_dir: writing the import file failed (disk full?)");
    }
    return absl::OkStatus();
  }

  absl::Status Apply(v1::RunInfo* response) override {
    if (file_ == nullptr) return absl::InvalidArgumentError("data: the stream was empty");
    if (std::fclose(file_) != 0) {
      file_ = nullptr;
      return absl::UnavailableError("state_dir: writing the import file failed (disk full?)");
    }
    file_ = nullptr;
    DOTS_ASSIGN_OR_RETURN(ArchiveSummary summary, VerifyRunArchive(path_));
    const std::string id = run_id_.empty() ? summary.run_id : run_id_;
    DOTS_RETURN_IF_ERROR(CheckRoutingKey(*context(), id));
    DOTS_RETURN_IF_ERROR(ValidateRunIdField(id));
    RunRegistry& registry = *service_->registry_;
    if (registry.Get(id).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("run_id: run \"", id, "\" already exists; import it --as another id"));
    }
    DOTS_RETURN_IF_ERROR(registry.CheckRoomForRun());
    DOTS_RETURN_IF_ERROR(ImportRunArchive(*registry.store(), path_, id).status());
    // With auth on, the imported run gets a token of its own (the exported run's token stays
    // with the exported run): its hash replaces the archived one before the run is opened.
    std::string token;
    if (service_->auth_enabled()) {
      DOTS_ASSIGN_OR_RETURN(token, GenerateToken());
      DOTS_RETURN_IF_ERROR(SetStoredTokenHash(*registry.store(), id, Sha256(token)));
    }
    DOTS_ASSIGN_OR_RETURN(RunEntry entry, registry.Adopt(id));
    FillRunInfo(id, entry, response);
    response->set_token(std::move(token));
    return absl::OkStatus();
  }

  DotsService* const service_;
  std::string run_id_;
  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t bytes_ = 0;
};

grpc::ServerReadReactor<v1::ImportRunRequest>* DotsService::ImportRun(
    grpc::CallbackServerContext* context, v1::RunInfo* response) {
  auto* reactor = new ImportRunReactor(this, context, response);
  StreamStarted();
  absl::Status serving = CheckServingStream();
  reactor->Start(serving.ok() ? AuthorizeAdmin(*context) : serving);
  return reactor;
}

}  // namespace dots
