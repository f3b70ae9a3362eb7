#include "server/server.h"

#include <algorithm>
#include <climits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "proto/payload_codec.h"

namespace dots {

absl::Status Server::Options::Validate() const {
  if (listen_address.empty()) return absl::InvalidArgumentError("listen_address: is empty");
  if (max_message_bytes < (64 << 10) || max_message_bytes > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes: ", max_message_bytes,
                                                   " is outside [65536, ", INT_MAX, "]"));
  }
  if (default_chunk_bytes < kMinChunkBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_chunk_bytes: ", default_chunk_bytes, " < ", kMinChunkBytes));
  }
  if (max_group_payload_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_group_payload_bytes: ", max_group_payload_bytes, " < 0"));
  }
  if (max_stream_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_stream_bytes: ", max_stream_bytes, " < 1"));
  }
  if (max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_concurrent_streams: ", max_concurrent_streams, " < 1"));
  }
  const RunLimits& limits = run_options.limits;
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"max_runs", limits.max_runs},
        {"max_questions_per_run", limits.max_questions_per_run},
        {"max_embedding_dim", limits.max_embedding_dim},
        {"max_replay_bytes_per_run", limits.max_replay_bytes_per_run}}) {
    if (value < 1) return absl::InvalidArgumentError(absl::StrCat(name, ": ", value, " < 1"));
  }
  if (call_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("call_threads: ", call_threads, " < 1"));
  }
  if (wait_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("wait_threads: ", wait_threads, " < 1"));
  }
  if (max_wait <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_wait: must be positive");
  }
  if (wait_slice <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("wait_slice: must be positive");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file, tls_key_file: give both (TLS) or neither (plaintext)");
  }
  if (!tls_client_ca_file.empty() && !tls()) {
    return absl::InvalidArgumentError(
        "tls_client_ca_file: mutual TLS needs tls_cert_file and tls_key_file too");
  }
  if (!admin_token.empty()) {
    DOTS_RETURN_IF_ERROR(ValidateAdminToken(admin_token, "admin_token"));
    if (!tls() && !allow_insecure_tokens) {
      return absl::InvalidArgumentError(
          "admin_token: bearer tokens over plaintext would travel readable on the network; "
          "serve TLS (tls_cert_file, tls_key_file) or set allow_insecure_tokens");
    }
  }
  return absl::OkStatus();
}

Server::Server(Options options) : options_(std::move(options)) {}

namespace {

// The listening credentials of `o`: plaintext, TLS, or mutual TLS. Reads and checks the PEM
// files first so that errors name the file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsOf(
    const Server::Options& o) {
  if (!o.tls()) return grpc::InsecureServerCredentials();
  auto read = [](const std::string& path, const char* field) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", text.status().message()));
    }
    return text;
  };
  DOTS_ASSIGN_OR_RETURN(std::string cert, read(o.tls_cert_file, "tls_cert_file"));
  DOTS_ASSIGN_OR_RETURN(std::string key, read(o.tls_key_file, "tls_key_file"));
  DOTS_RETURN_IF_ERROR(CheckPemCertificates(cert, o.tls_cert_file));
  DOTS_RETURN_IF_ERROR(CheckPemKeyPair(cert, key, o.tls_key_file));
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!o.tls_client_ca_file.empty()) {
    DOTS_ASSIGN_OR_RETURN(ssl.pem_root_certs, read(o.tls_client_ca_file, "tls_client_ca_file"));
    DOTS_RETURN_IF_ERROR(CheckPemCertificates(ssl.pem_root_certs, o.tls_client_ca_file));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  ssl.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(Options options) {
  DOTS_RETURN_IF_ERROR(options.Validate());
  DOTS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        ServerCredentialsOf(options));
  std::unique_ptr<Server> server(new Server(std::move(options)));
  const Options& o = server->options_;
  server->auth_ = std::make_unique<Authenticator>(o.admin_token);
  Run::Options run_options = o.run_options;
  if (!o.state_dir.empty()) {
    DOTS_ASSIGN_OR_RETURN(server->store_, StateStore::Open(o.state_dir, o.sync));
    run_options.store = server->store_.get();
  }
  server->registry_ = std::make_unique<RunRegistry>(run_options);
  DOTS_ASSIGN_OR_RETURN(server->metrics_, Metrics::Create(o.metrics_listen));
  // Per-run metrics are read from the runs at every scrape; deleted runs drop out.
  server->metrics_->SetRunSource([registry = server->registry_.get()] {
    std::vector<Metrics::RunSnapshot> runs;
    for (auto& [id, entry] : registry->List()) {
      Metrics::RunSnapshot snapshot;
      snapshot.run_id = id;
      snapshot.stats = entry.run->Stats();
      snapshot.group_size = entry.run->config().group_size;
      snapshot.pool_estimates = [run = entry.run]() -> absl::StatusOr<std::vector<double>> {
        DOTS_ASSIGN_OR_RETURN(std::vector<QuestionEstimate> estimates, run->GetEstimates({}));
        std::vector<double> p_hat;
        p_hat.reserve(estimates.size());
        for (const QuestionEstimate& e : estimates) p_hat.push_back(e.p_hat);
        return p_hat;
      };
      runs.push_back(std::move(snapshot));
    }
    return runs;
  });
  server->calls_ = std::make_unique<Executor>("calls", o.call_threads);
  server->waits_ = std::make_unique<Executor>("waits", o.wait_threads);
  ServiceOptions service_options;
  service_options.max_message_bytes = o.max_message_bytes;
  service_options.default_chunk_bytes = o.default_chunk_bytes;
  service_options.max_group_payload_bytes = o.max_group_payload_bytes;
  service_options.max_stream_bytes = o.max_stream_bytes;
  service_options.max_concurrent_streams = o.max_concurrent_streams;
  service_options.max_wait = o.max_wait;
  service_options.wait_slice = o.wait_slice;
  service_options.metrics = server->metrics_.get();
  service_options.auth = server->auth_.get();
  server->service_ = std::make_unique<DotsService>(server->registry_.get(), server->calls_.get(),
                                                   server->waits_.get(), service_options);

  // Both are process-wide switches read when a builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  if (o.enable_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen_address, credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(server->metrics_->NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(o.max_message_bytes));
  // Linux gRPC sets SO_REUSEPORT by default, which lets a second server bind a port in use
  // and silently share it; a port conflict must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Detect dead trainers' connections, and allow clients to keep idle NextBatch connections
  // alive (grpc doc/keepalive.md: the server must permit the client's ping interval).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->calls_->Shutdown();
    server->waits_->Shutdown();
    return absl::UnavailableError(absl::StrCat("listen_address: cannot listen on \"",
                                               o.listen_address,
                                               "\" (address in use, or not a local address)"));
  }
  const std::string& listen = o.listen_address;
  const size_t colon = listen.rfind(':');
  server->address_ = colon == std::string::npos || listen.rfind("unix:", 0) == 0
                         ? listen
                         : absl::StrCat(listen.substr(0, colon), ":", server->port_);

  // NOT_SERVING (and every Dots call UNAVAILABLE) while the runs are restored.
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  const std::string service_name = v1::Dots::service_full_name();
  if (health != nullptr) {
    health->SetServingStatus(false);
    health->SetServingStatus(service_name, false);
  }
  if (absl::Status loaded = server->registry_->Load(o.restore_progress); !loaded.ok()) {
    server->server_->Shutdown();
    server->calls_->Shutdown();
    server->waits_->Shutdown();
    return loaded;
  }
  server->service_->SetState(DotsService::State::kServing);
  if (health != nullptr) {
    health->SetServingStatus(service_name, true);
    health->SetServingStatus(true);
  }
  return server;
}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

void Server::BeginDrain() {
  if (server_ == nullptr) return;  // BuildAndStart failed
  std::call_once(drain_once_, [this] {
    service_->SetState(DotsService::State::kDraining);
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();  // every service NOT_SERVING, and frozen there
    }
  });
}

void Server::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;  // BuildAndStart failed; its executors are stopped
  std::call_once(shutdown_once_, [this, grace] {
    BeginDrain();
    const absl::Time deadline = absl::Now() + grace;
    // Lame-duck phase: the transport stays up, so calls that arrive now are answered with a
    // retryable UNAVAILABLE (grpc::Server::Shutdown would reset them: CANCELLED) while the
    // calls in flight finish.
    service_->WaitUntilQuiet(std::min(absl::Milliseconds(200), grace), deadline);
    // Every Dots call has finished (or the grace is spent): close the transport at once. A
    // later deadline would only keep idle client connections open (gRPC 1.51 takes ~5 s to let
    // each go) and health Watch streams, which are cancelled either way.
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_->Wait();
    // The executors finish what is queued (each task completes one RPC) before joining.
    waits_->Shutdown();
    calls_->Shutdown();
  });
}

}  // namespace dots
