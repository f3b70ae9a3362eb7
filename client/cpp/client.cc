#include "client/cpp/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dots/v1/dots.grpc.pb.h"
#include "proto/convert.h"
#include "proto/payload_codec.h"

namespace dots {
namespace {

namespace pb = ::dots::v1;

constexpr int64_t kMiB = int64_t{1} << 20;
// Bytes a repeated message field costs on top of the element itself (tag + length varint).
constexpr int64_t kFieldOverhead = 8;

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share the canonical numbering 0..16.
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

grpc::Status ProtocolError(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INTERNAL, what);
}

// A decoder's complaint about the server's stream (INTERNAL, proto/payload_codec.h).
grpc::Status ProtocolError(const absl::Status& status) {
  return ProtocolError(std::string(status.message()));
}

// UNAVAILABLE is the server's "try again" (starting, draining, unreachable). gRPC reports an
// HTTP/2 stream reset by a dying server as UNKNOWN "Stream removed"; that is the same condition
// (Reverb rewrites it the same way, reverb/cc/support/grpc_util.h).
bool IsRetryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         (s.error_code() == grpc::StatusCode::UNKNOWN &&
          absl::StrContains(s.error_message(), "Stream removed"));
}

// A PEM file of a TLS connection, whole. NOT_FOUND / INTERNAL naming the file.
absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be opened"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return text;
}

}  // namespace

class Client::Impl {
 public:
  Impl(const Options& options, std::shared_ptr<grpc::Channel> channel,
       std::atomic<int64_t>* total_retries)
      : options_(options),
        channel_(std::move(channel)),
        stub_(pb::Dots::NewStub(channel_)),
        total_retries_(total_retries) {}

  pb::Dots::Stub& stub() { return *stub_; }

  absl::StatusOr<absl::Time> DeadlineOf(const CallOptions& call) const {
    if (call.timeout < absl::ZeroDuration()) {
      return absl::InvalidArgumentError("CallOptions.timeout: must not be negative");
    }
    const absl::Duration timeout =
        call.timeout == absl::ZeroDuration() ? options_.default_deadline : call.timeout;
    return absl::Now() + timeout;
  }

  // Runs `attempt` with a fresh context until it succeeds, fails with a status that is not
  // retryable (or `retry` is false), max_attempts is reached, or the next backoff would end past
  // `deadline`. `attempt` must rebuild its outputs from scratch each time. Adds the attempts made
  // to *attempts.
  // `run_id` (empty for calls that name no run) travels as the routing header kRoutingHeader.
  absl::Status Call(bool retry, absl::Time deadline, int* attempts, const std::string& run_id,
                    const std::function<grpc::Status(grpc::ClientContext*)>& attempt) {
    absl::Duration backoff = options_.initial_backoff;
    for (int n = 1;; ++n) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(deadline));
      if (!options_.token.empty()) {
        context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
      }
      if (!run_id.empty()) context.AddMetadata(kRoutingHeader, run_id);
      const grpc::Status status = attempt(&context);
      ++*attempts;
      if (n > 1) total_retries_->fetch_add(1, std::memory_order_relaxed);
      if (status.ok()) return absl::OkStatus();
      const bool may_retry = retry && IsRetryable(status) && n < options_.max_attempts;
      const absl::Duration sleep = backoff * absl::Uniform(Rng(), 0.8, 1.2);
      if (!may_retry || absl::Now() + sleep >= deadline) {
        absl::Status result = FromGrpc(status);
        // Giving up on a retryable failure says so; every other status keeps its message.
        if (n > 1 && IsRetryable(status)) {
          result = absl::Status(result.code(),
                                absl::StrCat(result.message(), " (after ", n, " attempts)"));
        }
        return result;
      }
      absl::SleepFor(sleep);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

 private:
  static absl::BitGen& Rng() {
    thread_local absl::BitGen gen;
    return gen;
  }

  const Options& options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Dots::Stub> stub_;
  std::atomic<int64_t>* total_retries_;
};

namespace {

// Writes `call.attempts` on every return path of a method.
class AttemptCounter {
 public:
  explicit AttemptCounter(const CallOptions& call) : out_(call.attempts) {}
  ~AttemptCounter() {
    if (out_ != nullptr) *out_ = count_;
  }
  int* get() { return &count_; }

 private:
  int* out_;
  int count_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(Options options) {
  if (options.target.empty()) return absl::InvalidArgumentError("Options.target: empty");
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Options.max_attempts: ", options.max_attempts, " must be >= 1"));
  }
  if (options.default_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Options.default_deadline: must be positive");
  }
  if (options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError(
        "Options.initial_backoff / max_backoff: want 0 < initial_backoff <= max_backoff");
  }
  if (options.max_chunk_bytes < 0) {
    return absl::InvalidArgumentError("Options.max_chunk_bytes: must be >= 0");
  }
  if (options.max_request_bytes < 64 * 1024 || options.max_request_bytes >= 4 * kMiB) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Options.max_request_bytes: ", options.max_request_bytes, " is outside [65536, 4194304)"));
  }
  grpc::ChannelArguments args;
  args.SetUserAgentPrefix("dots-client/0.1");
  // The channel's own reconnect backoff must not outlast ours: while it waits, every call fails
  // fast with UNAVAILABLE, so a server that came up would stay unused for up to gRPC's default
  // 120 s maximum.
  const int initial_ms = static_cast<int>(absl::ToInt64Milliseconds(options.initial_backoff));
  const int max_ms =
      static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(options.max_backoff), 1 << 30));
  // (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is not a backoff but the shortest time a connection
  // attempt is given, 20 s by default: set to our backoff, a handshake slower than ~100 ms, on
  // a loaded machine or a long link, would never complete.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::max(initial_ms, 1));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(max_ms, 1));
  if (options.max_chunk_bytes > 3 * kMiB) {
    // Room for the chunk plus the message framing around its payload.
    args.SetMaxReceiveMessageSize(
        static_cast<int>(std::min<int64_t>(options.max_chunk_bytes + kMiB, INT32_MAX)));
  }
  if (options.tls_cert_chain_pem.empty() != options.tls_private_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "Options.tls_cert_chain_pem / tls_private_key_pem: give both (mutual TLS) or neither");
  }
  if (!options.use_tls &&
      (!options.tls_root_certs_pem.empty() || !options.tls_cert_chain_pem.empty() ||
       !options.tls_server_name_override.empty())) {
    return absl::InvalidArgumentError("Options.use_tls: TLS settings are given but use_tls is off");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.use_tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_cert_chain = options.tls_cert_chain_pem;
    ssl.pem_private_key = options.tls_private_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name_override);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, args);
  std::unique_ptr<Client> client(new Client(std::move(options), nullptr));
  client->impl_ =
      std::make_unique<Impl>(client->options_, std::move(channel), &client->total_retries_);
  return client;
}

absl::Status Client::LoadTlsFiles(const std::string& ca_file, const std::string& cert_file,
                                  const std::string& key_file, Options* options) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS client certificate: give the certificate file and the key file together");
  }
  Options loaded = *options;
  loaded.use_tls = true;
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(ca_file);
    if (!ca.ok()) return ca.status();
    loaded.tls_root_certs_pem = std::move(*ca);
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile(cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile(key_file);
    if (!key.ok()) return key.status();
    loaded.tls_cert_chain_pem = std::move(*cert);
    loaded.tls_private_key_pem = std::move(*key);
  }
  *options = std::move(loaded);
  return absl::OkStatus();
}

Client::Client(Options options, std::unique_ptr<Impl> impl)
    : options_(std::move(options)), impl_(std::move(impl)) {}

Client::~Client() = default;

absl::StatusOr<RunInfo> Client::CreateRun(const std::string& run_id, const std::string& config_json,
                                          const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::CreateRunRequest request;
  request.set_run_id(run_id);
  request.set_config_json(config_json);
  pb::RunInfo response;
  absl::Status s = impl_->Call(/*retry=*/false, *deadline, attempts.get(), run_id,
                               [&](grpc::ClientContext* context) {
                                 return impl_->stub().CreateRun(context, request, &response);
                               });
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<RunInfo> Client::GetRun(const std::string& run_id, const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::GetRunRequest request;
  request.set_run_id(run_id);
  pb::RunInfo response;
  absl::Status s = impl_->Call(/*retry=*/true, *deadline, attempts.get(), run_id,
                               [&](grpc::ClientContext* context) {
                                 return impl_->stub().GetRun(context, request, &response);
                               });
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<std::vector<RunInfo>> Client::ListRuns(const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::ListRunsRequest request;
  pb::ListRunsResponse response;
  absl::Status s = impl_->Call(/*retry=*/true, *deadline, attempts.get(), /*run_id=*/"",
                               [&](grpc::ClientContext* context) {
                                 return impl_->stub().ListRuns(context, request, &response);
                               });
  if (!s.ok()) return s;
  std::vector<RunInfo> runs;
  runs.reserve(response.runs_size());
  for (const pb::RunInfo& r : response.runs()) runs.push_back(FromProto(r));
  return runs;
}

absl::StatusOr<RunInfo> Client::SealRun(const std::string& run_id, bool sealed,
                                        const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::SealRunRequest request;
  request.set_run_id(run_id);
  request.set_sealed(sealed);
  pb::RunInfo response;
  absl::Status s = impl_->Call(/*retry=*/true, *deadline, attempts.get(), run_id,
                               [&](grpc::ClientContext* context) {
                                 return impl_->stub().SealRun(context, request, &response);
                               });
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::Status Client::DeleteRun(const std::string& run_id, const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::DeleteRunRequest request;
  request.set_run_id(run_id);
  pb::DeleteRunResponse response;
  return impl_->Call(/*retry=*/false, *deadline, attempts.get(), run_id,
                     [&](grpc::ClientContext* context) {
                       return impl_->stub().DeleteRun(context, request, &response);
                     });
}

absl::StatusOr<UpsertResult> Client::UpsertQuestions(const std::string& run_id,
                                                     absl::Span<const Question> questions,
                                                     const FloatMatrix& embeddings,
                                                     const UploadProgress& progress,
                                                     const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  const int64_t n = static_cast<int64_t>(questions.size());
  const bool embedded = embeddings.rows > 0;
  if (embedded && (embeddings.rows != n ||
                   static_cast<int64_t>(embeddings.data.size()) != n * embeddings.cols)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embeddings: ", embeddings.rows, " x ", embeddings.cols, " matrix (",
        embeddings.data.size(), " values) for ", n, " questions; want one row per question"));
  }
  pb::UpsertQuestionsResponse response;
  absl::Status s = impl_->Call(
      /*retry=*/true, *deadline, attempts.get(), run_id, [&](grpc::ClientContext* context) {
        response.Clear();
        std::unique_ptr<grpc::ClientWriter<pb::UpsertQuestionsRequest>> writer =
            impl_->stub().UpsertQuestions(context, &response);
        pb::UpsertQuestionsRequest request;
        request.set_run_id(run_id);
        int64_t request_bytes = static_cast<int64_t>(request.ByteSizeLong());
        int64_t sent = 0;
        bool stream_ok = true;
        auto flush = [&]() {
          stream_ok = writer->Write(request);
          sent += request.questions_size();
          request.Clear();
          request_bytes = 0;
          if (progress) progress(sent, n);
        };
        pb::Question question;
        for (int64_t i = 0; i < n && stream_ok; ++i) {
          question.Clear();
          ToProto(questions[static_cast<size_t>(i)], embedded ? embeddings.row(i) : nullptr,
                  embeddings.cols, &question);
          const int64_t bytes = static_cast<int64_t>(question.ByteSizeLong()) + kFieldOverhead;
          if (request.questions_size() > 0 && request_bytes + bytes > options_.max_request_bytes) {
            flush();
          }
          if (!stream_ok) break;
          *request.add_questions() = question;
          request_bytes += bytes;
        }
        // The final message goes out even when empty: it carries the run id of an empty
        // upload. (A write after a failed one is harmless: Finish reports the real status.)
        if (stream_ok) flush();
        writer->WritesDone();
        return writer->Finish();
      });
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::Status Client::ExportRun(const std::string& run_id, const std::string& path,
                               const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::ExportRunRequest request;
  request.set_run_id(run_id);
  const std::string partial = path + ".partial";
  absl::Status s = impl_->Call(
      /*retry=*/true, *deadline, attempts.get(), run_id, [&](grpc::ClientContext* context) {
        std::ofstream out(partial, std::ios::binary | std::ios::trunc);
        if (!out) return grpc::Status(grpc::StatusCode::INTERNAL, partial + ": cannot be written");
        std::unique_ptr<grpc::ClientReader<pb::ExportRunChunk>> reader =
            impl_->stub().ExportRun(context, request);
        pb::ExportRunChunk chunk;
        while (reader->Read(&chunk)) {
          out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
        }
        grpc::Status status = reader->Finish();
        out.close();
        if (status.ok() && !out) {
          return grpc::Status(grpc::StatusCode::INTERNAL, partial + ": write failed (disk full?)");
        }
        return status;
      });
  if (!s.ok()) {
    std::remove(partial.c_str());
    return s;
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot rename ", partial, " into place"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RunInfo> Client::ImportRun(const std::string& path, const std::string& as_run_id,
                                          const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  pb::RunInfo info;
  absl::Status s = impl_->Call(
      /*retry=*/false, *deadline, attempts.get(), as_run_id, [&](grpc::ClientContext* context) {
        std::unique_ptr<grpc::ClientWriter<pb::ImportRunRequest>> writer =
            impl_->stub().ImportRun(context, &info);
        pb::ImportRunRequest request;
        request.set_run_id(as_run_id);
        std::string buffer(1 << 20, '\0');
        bool first = true;
        while (in || first) {
          in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
          request.set_data(buffer.data(), static_cast<size_t>(in.gcount()));
          if (!first) request.clear_run_id();
          first = false;
          if (!writer->Write(request)) break;  // Finish reports why
        }
        writer->WritesDone();
        return writer->Finish();
      });
  if (!s.ok()) return s;
  return FromProto(info);
}

absl::StatusOr<ImportProgress> Client::ImportPool(const std::string& run_id,
                                                  const std::string& questions_path,
                                                  const std::string& embeddings_path,
                                                  const ImportProgressCallback& progress,
                                                  const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::ImportPoolRequest request;
  request.set_run_id(run_id);
  request.set_questions_path(questions_path);
  request.set_embeddings_path(embeddings_path);
  ImportProgress last;
  absl::Status s = impl_->Call(
      /*retry=*/true, *deadline, attempts.get(), run_id, [&](grpc::ClientContext* context) {
        last = ImportProgress();
        std::unique_ptr<grpc::ClientReader<pb::ImportPoolProgress>> reader =
            impl_->stub().ImportPool(context, request);
        pb::ImportPoolProgress message;
        while (reader->Read(&message)) {
          last = FromProto(message);
          if (progress) progress(last);
        }
        grpc::Status status = reader->Finish();
        if (status.ok() && !last.done) {
          return ProtocolError("ImportPool: the progress stream ended without a done message");
        }
        return status;
      });
  if (!s.ok()) return s;
  return last;
}

absl::StatusOr<BatchSlice> Client::NextBatch(const std::string& run_id, int64_t step, int rank,
                                             int world_size, int64_t policy_version,
                                             const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::NextBatchRequest request;
  request.set_run_id(run_id);
  request.set_step(step);
  request.set_rank(rank);
  request.set_world_size(world_size);
  request.set_policy_version(policy_version);
  request.set_max_chunk_bytes(options_.max_chunk_bytes);
  BatchSlice slice;
  absl::Status s = impl_->Call(
      /*retry=*/true, *deadline, attempts.get(), run_id, [&](grpc::ClientContext* context) {
        BatchDecoder decoder;
        std::unique_ptr<grpc::ClientReader<pb::NextBatchChunk>> reader =
            impl_->stub().NextBatch(context, request);
        pb::NextBatchChunk chunk;
        absl::Status protocol;
        while (reader->Read(&chunk)) {
          protocol = decoder.Add(chunk);
          if (!protocol.ok()) {
            context->TryCancel();
            break;
          }
        }
        grpc::Status status = reader->Finish();
        if (!protocol.ok()) return ProtocolError(protocol);
        if (!status.ok()) return status;
        absl::StatusOr<BatchSlice> decoded = decoder.Finish();
        if (!decoded.ok()) return ProtocolError(decoded.status());
        slice = std::move(*decoded);
        return grpc::Status::OK;
      });
  if (!s.ok()) return s;
  return slice;
}

absl::StatusOr<ReportResult> Client::ReportRollouts(const std::string& run_id, int64_t step,
                                                    absl::Span<const RolloutReport> groups,
                                                    const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  if (step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("step: ", step, " is negative"));
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    // An empty key would make a continuation fragment indistinguishable on the wire.
    if (groups[i].key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("groups[", i, "].key: empty"));
    }
  }
  const int64_t budget = options_.max_request_bytes;
  pb::ReportRolloutsResponse response;
  absl::Status s = impl_->Call(
      /*retry=*/true, *deadline, attempts.get(), run_id, [&](grpc::ClientContext* context) {
        response.Clear();
        std::unique_ptr<grpc::ClientWriter<pb::ReportRolloutsRequest>> writer =
            impl_->stub().ReportRollouts(context, &response);
        ReportEncoder encoder(run_id, step, groups, {.max_message_bytes = budget});
        pb::ReportRolloutsRequest request;
        while (encoder.Next(&request)) {
          if (!writer->Write(request)) break;  // Finish reports why
        }
        writer->WritesDone();
        return writer->Finish();
      });
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<std::vector<QuestionEstimate>> Client::GetEstimates(
    const std::string& run_id, const std::vector<std::string>& keys, const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  // Key lists are sent in slices of bounded count and bytes, so each request and its response
  // page stay well under the message limit; every slice follows its page tokens.
  constexpr size_t kMaxKeysPerRequest = 1000;
  constexpr int64_t kMaxKeyBytesPerRequest = 512 * 1024;
  std::vector<QuestionEstimate> out;
  size_t next_key = 0;
  do {
    pb::GetEstimatesRequest request;
    request.set_run_id(run_id);
    int64_t key_bytes = 0;
    while (next_key < keys.size() && request.keys_size() < static_cast<int>(kMaxKeysPerRequest) &&
           (request.keys_size() == 0 ||
            key_bytes + static_cast<int64_t>(keys[next_key].size()) <= kMaxKeyBytesPerRequest)) {
      key_bytes += static_cast<int64_t>(keys[next_key].size());
      request.add_keys(keys[next_key++]);
    }
    do {
      pb::GetEstimatesResponse response;
      absl::Status s = impl_->Call(/*retry=*/true, *deadline, attempts.get(), run_id,
                                   [&](grpc::ClientContext* context) {
                                     return impl_->stub().GetEstimates(context, request, &response);
                                   });
      if (!s.ok()) return s;
      for (const pb::QuestionEstimate& e : response.estimates()) out.push_back(FromProto(e));
      if (!response.next_page_token().empty() &&
          response.next_page_token() == request.page_token()) {
        return absl::InternalError("GetEstimates: the server repeated the page token");
      }
      request.set_page_token(response.next_page_token());
    } while (!request.page_token().empty());
  } while (next_key < keys.size());
  return out;
}

absl::StatusOr<RunStats> Client::GetRunStats(const std::string& run_id, const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::GetRunStatsRequest request;
  request.set_run_id(run_id);
  pb::RunStats p;
  absl::Status s = impl_->Call(/*retry=*/true, *deadline, attempts.get(), run_id,
                               [&](grpc::ClientContext* context) {
                                 return impl_->stub().GetRunStats(context, request, &p);
                               });
  if (!s.ok()) return s;
  return FromProto(p);
}

}  // namespace dots
