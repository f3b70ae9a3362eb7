// The dots server process minus flags and signals (server/main.cc): an Options struct with a
// default for every knob and BuildAndStart, in the style of TF Serving's model_servers/server.h.
// Tests build it in-process on 127.0.0.1:0.
//
// Lifecycle. BuildAndStart binds, registers the Dots service, the grpc.health.v1 service and
// server reflection, and returns once the server answers calls. The health status of "" and of
// "dots.v1.Dots" is NOT_SERVING until the service is ready, SERVING while it serves, and
// NOT_SERVING again from BeginDrain on. Shutdown(grace): BeginDrain (health NOT_SERVING, new
// calls UNAVAILABLE), a lame-duck wait for the calls in flight, then grpc::Server::Shutdown
// with the deadline now + grace, which cancels what is left at the deadline, then joins the
// executors.
#ifndef DOTS_SERVER_SERVER_H_
#define DOTS_SERVER_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/run/run.h"
#include "core/run/run_registry.h"
#include "core/storage/state_store.h"
#include "grpcpp/server.h"
#include "server/auth.h"
#include "server/executor.h"
#include "server/metrics.h"
#include "server/service.h"

namespace dots {

class Server {
 public:
  struct Options {
    // host:port to listen on; port 0 picks a free one (see address()).
    std::string listen_address = "127.0.0.1:50051";
    // The state directory (core/storage/state_store.h): every run is durable there and restored
    // from it at start. Empty keeps runs in memory only (tests; dots-server's flag defaults to
    // ./dots-state).
    std::string state_dir;
    // kAlways: one fsync per change; kGroup: concurrent changes share fsyncs.
    SyncMode sync = SyncMode::kGroup;
    // Send and receive limit of every message, in bytes. gRPC's default receive limit is 4 MiB;
    // large data travels in chunks below it, so there is no need to raise it.
    int64_t max_message_bytes = 4LL << 20;
    // NextBatch chunk size when the client does not choose one.
    int64_t default_chunk_bytes = 1LL << 20;
    // ReportRollouts: largest payload of one rollout group.
    int64_t max_group_payload_bytes = 64LL << 20;
    // ReportRollouts and UpsertQuestions: largest total size of one client stream.
    int64_t max_stream_bytes = 1LL << 30;
    // Streaming calls (NextBatch, ReportRollouts, UpsertQuestions, ImportPool, ExportRun,
    // ImportRun) open at once; one more is refused with RESOURCE_EXHAUSTED.
    int64_t max_concurrent_streams = 1024;
    // Threads for short calls into runs, and for NextBatch waits and pool imports.
    int call_threads = 8;
    int wait_threads = 64;
    // Longest NextBatch wait when the call has no (or a later) deadline.
    absl::Duration max_wait = absl::Minutes(10);
    // How often a waiting NextBatch checks for cancellation and draining.
    absl::Duration wait_slice = absl::Milliseconds(500);
    // Prometheus /metrics listen address (host:port, port 0 picks one, see metrics_port());
    // empty serves no HTTP (metrics() still counts, e.g. for in-process tests).
    std::string metrics_listen;
    // Registers grpc.reflection.v1alpha.ServerReflection (process-wide once enabled).
    bool enable_reflection = true;
    // TLS: PEM files of the server's certificate chain and private key; both empty =
    // plaintext. With tls_client_ca_file (PEM CA certificates) clients must present a
    // certificate signed by one of them (mutual TLS); the handshake fails otherwise.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    // Bearer tokens (server/auth.h): the admin token itself (dots-server reads it from
    // --admin_token_file); empty = auth off, every call allowed. Tokens over plaintext are
    // refused at start unless allow_insecure_tokens (tests, or TLS terminated by a local proxy).
    std::string admin_token;
    bool allow_insecure_tokens = false;
    // Called after each run restored at start: (done, total, run id).
    std::function<void(int64_t, int64_t, const std::string&)> restore_progress;
    // Passed to every run (tests substitute a fake clock), with the per-server and per-run
    // limits (run_options.limits: runs, questions, embedding dimension, replay bytes).
    Run::Options run_options;

    // INVALID_ARGUMENT naming the first bad field (the TLS files are read in BuildAndStart).
    // O(1).
    absl::Status Validate() const;
    bool tls() const { return !tls_cert_file.empty(); }
  };

  // Validates the options, binds and starts serving. Errors: INVALID_ARGUMENT for bad options
  // (TLS files that cannot be read or parsed, naming the file), UNAVAILABLE when the address cannot
  // be bound (in use, or not local). Blocks only while binding.
  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(Options options);

  // Shutdown(absl::ZeroDuration()) if it has not run.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound address, e.g. "127.0.0.1:41877" (listen_address with the chosen port).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  RunRegistry& registry() { return *registry_; }
  StateStore* store() { return store_.get(); }
  Metrics& metrics() { return *metrics_; }
  // The bound /metrics port, 0 when metrics_listen is empty.
  int metrics_port() const { return metrics_->port(); }
  DotsService& service() { return *service_; }
  const Options& options() const { return options_; }

  // Health NOT_SERVING (frozen) and every new Dots call UNAVAILABLE; calls in flight continue.
  // The process keeps listening, so load balancers can see the change. Idempotent, O(1).
  void BeginDrain();

  // BeginDrain; waits (up to `grace`) for the Dots calls in flight to finish while new ones get
  // UNAVAILABLE; then grpc::Server::Shutdown with what is left of `grace` (closes the listener,
  // ends other services' calls, cancels stragglers at the deadline); joins the executors.
  // Idempotent; concurrent callers all block until the first call completes. Runs outlive it:
  // registry() still holds them afterwards.
  void Shutdown(absl::Duration grace);

 private:
  explicit Server(Options options);

  const Options options_;
  std::unique_ptr<StateStore> store_;  // declared first: destroyed after the runs using it
  std::unique_ptr<RunRegistry> registry_;
  // After registry_ (its RunSource reads the registry) and before the gRPC server and the
  // service (their interceptor and hooks call it), so it is destroyed between them.
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Authenticator> auth_;  // before the service, which borrows it
  std::unique_ptr<Executor> calls_;
  std::unique_ptr<Executor> waits_;
  std::unique_ptr<DotsService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  std::once_flag drain_once_;
  std::once_flag shutdown_once_;
};

}  // namespace dots

#endif  // DOTS_SERVER_SERVER_H_
