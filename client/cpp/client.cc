#include "client/cpp/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "dots/v1/dots.grpc.pb.h"

namespace dots {
namespace {

namespace pb = ::dots::v1;

constexpr int64_t kMiB = int64_t{1} << 20;
// Bytes a repeated message field costs on top of the element itself (tag + length varint).
constexpr int64_t kFieldOverhead = 8;
// Smallest payload slice worth a fragment of its own when a message is nearly full; below this a
// new message is started instead of sending a sliver.
constexpr int64_t kMinFragmentBytes = 4096;
// Reassembly pre-allocates at most this much per group on the word of the server; the rest grows
// as data actually arrives.
constexpr int64_t kMaxPayloadReserve = 64 * kMiB;

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share the canonical numbering 0..16.
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

grpc::Status ProtocolError(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INTERNAL, what);
}

// UNAVAILABLE is the server's "try again" (starting, draining, unreachable). gRPC reports an
// HTTP/2 stream reset by a dying server as UNKNOWN "Stream removed"; that is the same condition
// (Reverb rewrites it the same way, reverb/cc/support/grpc_util.h).
bool IsRetryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         (s.error_code() == grpc::StatusCode::UNKNOWN &&
          absl::StrContains(s.error_message(), "Stream removed"));
}

RunInfo FromProto(const pb::RunInfo& p) {
  return RunInfo{p.run_id(), p.config_json(), p.pool_size(), p.created_unix_seconds(), p.token()};
}

void ToProto(const Question& q, const float* embedding, int64_t dim, pb::Question* p) {
  p->set_key(q.key);
  p->set_prompt(q.prompt);
  p->set_metadata_json(q.metadata_json);
  if (q.prior.has_value()) p->set_prior(*q.prior);
  if (embedding != nullptr) p->mutable_embedding()->Add(embedding, embedding + dim);
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
  absl::Status Call(bool retry, absl::Time deadline, int* attempts,
                    const std::function<grpc::Status(grpc::ClientContext*)>& attempt) {
    absl::Duration backoff = options_.initial_backoff;
    for (int n = 1;; ++n) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(deadline));
      if (!options_.token.empty()) {
        context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
      }
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
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::max(initial_ms, 1));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::max(initial_ms, 1));
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
    absl::StatusOr<std::string> ca = ReadFile(ca_file);
    if (!ca.ok()) return ca.status();
    loaded.tls_root_certs_pem = std::move(*ca);
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(key_file);
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
  absl::Status s =
      impl_->Call(/*retry=*/false, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
  absl::Status s =
      impl_->Call(/*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
  absl::Status s =
      impl_->Call(/*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
        return impl_->stub().ListRuns(context, request, &response);
      });
  if (!s.ok()) return s;
  std::vector<RunInfo> runs;
  runs.reserve(response.runs_size());
  for (const pb::RunInfo& r : response.runs()) runs.push_back(FromProto(r));
  return runs;
}

absl::Status Client::DeleteRun(const std::string& run_id, const CallOptions& call) {
  AttemptCounter attempts(call);
  absl::StatusOr<absl::Time> deadline = impl_->DeadlineOf(call);
  if (!deadline.ok()) return deadline.status();
  pb::DeleteRunRequest request;
  request.set_run_id(run_id);
  pb::DeleteRunResponse response;
  return impl_->Call(/*retry=*/false, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
      /*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
  UpsertResult result;
  result.added = response.added();
  result.updated = response.updated();
  for (const pb::RejectedQuestion& r : response.rejected()) {
    result.rejected.push_back(RejectedQuestion{r.index(), r.key(), r.error()});
  }
  return result;
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
      /*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
      /*retry=*/false, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
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
      /*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
        last = ImportProgress();
        std::unique_ptr<grpc::ClientReader<pb::ImportPoolProgress>> reader =
            impl_->stub().ImportPool(context, request);
        pb::ImportPoolProgress message;
        while (reader->Read(&message)) {
          last = ImportProgress{message.questions_read(), message.added(), message.updated(),
                                message.done()};
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

namespace {

// Reassembles one NextBatch response stream into a BatchSlice, checking the chunk protocol of
// dots.proto: header first and once, replay fragments consecutive per group with increasing
// offsets, counts matching the header.
class BatchAssembler {
 public:
  grpc::Status Add(const pb::NextBatchChunk& chunk) {
    if (chunk.has_header()) {
      if (have_header_) return ProtocolError("NextBatch: a second chunk carries a header");
      have_header_ = true;
      const pb::BatchHeader& h = chunk.header();
      slice_.step = h.step();
      slice_.round = h.round();
      slice_.reference_batch = h.reference_batch();
      slice_.batch_size = h.batch_size();
      item_count_ = h.item_count();
      replay_count_ = h.replay_count();
      if (item_count_ < 0 || replay_count_ < 0) {
        return ProtocolError("NextBatch: header: negative item_count or replay_count");
      }
      slice_.items.reserve(static_cast<size_t>(std::min<int64_t>(item_count_, 1 << 20)));
      slice_.replay.reserve(static_cast<size_t>(std::min<int64_t>(replay_count_, 1 << 20)));
    } else if (!have_header_) {
      return ProtocolError("NextBatch: the first chunk has no header");
    }
    for (const pb::BatchItem& item : chunk.items()) {
      slice_.items.push_back(BatchItem{
          item.key(), item.role() == pb::ROLE_REFERENCE ? ItemRole::kReference : ItemRole::kFresh,
          item.prompt(), item.metadata_json()});
    }
    for (const pb::ReplayFragment& fragment : chunk.replay()) {
      grpc::Status s = AddFragment(fragment);
      if (!s.ok()) return s;
    }
    return grpc::Status::OK;
  }

  grpc::Status Finish() {
    if (!have_header_) return ProtocolError("NextBatch: the stream carried no header");
    if (static_cast<int64_t>(slice_.items.size()) != item_count_ ||
        static_cast<int64_t>(slice_.replay.size()) != replay_count_) {
      return ProtocolError(absl::StrCat("NextBatch: got ", slice_.items.size(), " items and ",
                                        slice_.replay.size(), " replay groups, header says ",
                                        item_count_, " and ", replay_count_));
    }
    if (!slice_.replay.empty()) {
      const ReplayGroup& g = slice_.replay.back();
      if (static_cast<int64_t>(g.payload.size()) != expected_payload_) {
        return ProtocolError(absl::StrCat("NextBatch: replay group ", slice_.replay.size() - 1,
                                          " (key \"", g.key, "\") ended after ", g.payload.size(),
                                          " of ", expected_payload_, " payload bytes"));
      }
    }
    return grpc::Status::OK;
  }

  BatchSlice Take() { return std::move(slice_); }

 private:
  grpc::Status AddFragment(const pb::ReplayFragment& f) {
    const int64_t next = static_cast<int64_t>(slice_.replay.size());
    if (f.offset() == 0 && f.index() == next) {  // a new group
      if (next > 0) {
        const ReplayGroup& previous = slice_.replay.back();
        if (static_cast<int64_t>(previous.payload.size()) != expected_payload_) {
          return ProtocolError(absl::StrCat("NextBatch: replay group ", next - 1, " (key \"",
                                            previous.key, "\") has ", previous.payload.size(),
                                            " of ", expected_payload_, " payload bytes when group ",
                                            next, " starts"));
        }
      }
      if (f.payload_size() < 0) {
        return ProtocolError(absl::StrCat("NextBatch: replay group ", next,
                                          ": negative payload_size ", f.payload_size()));
      }
      ReplayGroup group;
      group.key = f.key();
      group.step = f.step();
      group.policy_version = f.policy_version();
      group.rewards.assign(f.rewards().begin(), f.rewards().end());
      group.payload.reserve(static_cast<size_t>(std::min(f.payload_size(), kMaxPayloadReserve)));
      slice_.replay.push_back(std::move(group));
      expected_payload_ = f.payload_size();
    } else if (next == 0 || f.index() != next - 1 ||
               f.offset() != static_cast<int64_t>(slice_.replay.back().payload.size())) {
      return ProtocolError(
          absl::StrCat("NextBatch: replay fragment out of order: index ", f.index(), " offset ",
                       f.offset(), "; expected index ", next - 1, " offset ",
                       next == 0 ? 0 : static_cast<int64_t>(slice_.replay.back().payload.size()),
                       " or index ", next, " offset 0"));
    }
    std::string& payload = slice_.replay.back().payload;
    if (static_cast<int64_t>(payload.size() + f.data().size()) > expected_payload_) {
      return ProtocolError(absl::StrCat("NextBatch: replay group ", f.index(),
                                        ": fragments exceed payload_size ", expected_payload_));
    }
    payload.append(f.data());
    return grpc::Status::OK;
  }

  BatchSlice slice_;
  bool have_header_ = false;
  int64_t item_count_ = 0;
  int64_t replay_count_ = 0;
  int64_t expected_payload_ = 0;  // of the last group
};

}  // namespace

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
      /*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
        BatchAssembler assembler;
        std::unique_ptr<grpc::ClientReader<pb::NextBatchChunk>> reader =
            impl_->stub().NextBatch(context, request);
        pb::NextBatchChunk chunk;
        grpc::Status protocol = grpc::Status::OK;
        while (reader->Read(&chunk)) {
          protocol = assembler.Add(chunk);
          if (!protocol.ok()) {
            context->TryCancel();
            break;
          }
        }
        grpc::Status status = reader->Finish();
        if (!protocol.ok()) return protocol;
        if (!status.ok()) return status;
        status = assembler.Finish();
        if (status.ok()) slice = assembler.Take();
        return status;
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
      /*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
        response.Clear();
        std::unique_ptr<grpc::ClientWriter<pb::ReportRolloutsRequest>> writer =
            impl_->stub().ReportRollouts(context, &response);
        pb::ReportRolloutsRequest request;
        request.set_run_id(run_id);
        request.set_step(step);
        int64_t request_bytes = static_cast<int64_t>(request.ByteSizeLong());
        bool stream_ok = true;
        bool wrote_any = false;
        auto flush = [&]() {
          stream_ok = writer->Write(request);
          wrote_any = true;
          request.Clear();
          request_bytes = 0;
        };
        for (const RolloutReport& group : groups) {
          const int64_t size = static_cast<int64_t>(group.payload.size());
          int64_t offset = 0;
          // Every fragment repeats key, payload_size and policy_version (a few bytes) so each is
          // self-describing; rewards ride on the first only. An empty payload is one fragment.
          do {
            const int64_t header =
                static_cast<int64_t>(group.key.size()) + 48 +
                (offset == 0 ? 4 * static_cast<int64_t>(group.rewards.size()) : 0);
            int64_t room = budget - request_bytes - header - kFieldOverhead;
            if (request.groups_size() > 0 && room < std::min(size - offset, kMinFragmentBytes)) {
              flush();
              if (!stream_ok) break;
              room = budget - header - kFieldOverhead;
            }
            const int64_t take = std::min(size - offset, std::max(room, kMinFragmentBytes));
            pb::RolloutFragment* fragment = request.add_groups();
            fragment->set_key(group.key);
            if (offset == 0) {
              fragment->mutable_rewards()->Add(group.rewards.begin(), group.rewards.end());
            }
            fragment->set_policy_version(group.policy_version);
            fragment->set_payload_size(size);
            fragment->set_offset(offset);
            fragment->set_data(group.payload.data() + offset, static_cast<size_t>(take));
            request_bytes += static_cast<int64_t>(fragment->ByteSizeLong()) + kFieldOverhead;
            offset += take;
          } while (offset < size);
          if (!stream_ok) break;
        }
        // The first message carries run and step even when there is nothing to report.
        if (stream_ok && (request.groups_size() > 0 || !wrote_any)) flush();
        writer->WritesDone();
        return writer->Finish();
      });
  if (!s.ok()) return s;
  ReportResult result;
  result.accepted = response.accepted();
  result.duplicates = response.duplicates();
  for (const pb::RejectedGroup& r : response.rejected()) {
    result.rejected.emplace_back(r.key(), r.error());
  }
  return result;
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
      absl::Status s =
          impl_->Call(/*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
            return impl_->stub().GetEstimates(context, request, &response);
          });
      if (!s.ok()) return s;
      for (const pb::QuestionEstimate& e : response.estimates()) {
        out.push_back(
            QuestionEstimate{e.key(), e.p_hat(), e.observations(), e.last_policy_version()});
      }
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
  absl::Status s =
      impl_->Call(/*retry=*/true, *deadline, attempts.get(), [&](grpc::ClientContext* context) {
        return impl_->stub().GetRunStats(context, request, &p);
      });
  if (!s.ok()) return s;
  RunStats stats;
  stats.step = p.step();
  stats.round = p.round();
  stats.pool_size = p.pool_size();
  stats.reported_groups = p.reported_groups();
  stats.duplicate_reports = p.duplicate_reports();
  stats.rejected_reports = p.rejected_reports();
  stats.effective_ratio_last_step = p.effective_ratio_last_step();
  stats.effective_groups = p.effective_groups();
  stats.solve_all_groups = p.solve_all_groups();
  stats.solve_none_groups = p.solve_none_groups();
  stats.replay_groups = p.replay_groups();
  stats.replay_bytes = p.replay_bytes();
  stats.replayed_groups = p.replayed_groups();
  stats.leases_outstanding = p.leases_outstanding();
  stats.leases_expired = p.leases_expired();
  stats.rounds_planned = p.rounds_planned();
  stats.last_planning_seconds = p.last_planning_seconds();
  stats.policy_version = p.policy_version();
  return stats;
}

}  // namespace dots
