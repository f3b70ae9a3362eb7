// dots-server: the DOTS data-selection and rollout-replay service (docs/design.md §3).
//
// Prints "dots-server listening on HOST:PORT" on stdout once it accepts calls (also when
// --listen asks for port 0), so scripts and tests can wait for that line. SIGTERM or SIGINT
// drains: health NOT_SERVING, new calls UNAVAILABLE, in-flight calls get up to --drain_seconds
// to finish, then the process exits 0. A second signal during the drain exits at once with 1.
//
// Signals are blocked in every thread (the mask is set before gRPC starts its threads) and
// received synchronously with sigwait in main, so no work runs in a signal handler.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "core/util/file_util.h"
#include "server/auth.h"
#include "server/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address, host:port. Port 0 picks a free port; the bound address is "
          "printed as 'dots-server listening on HOST:PORT'. Use 0.0.0.0:PORT to listen on every "
          "interface.");
ABSL_FLAG(std::string, state_dir, "./dots-state",
          "Directory of the durable state (an embedded RocksDB; created when missing). Every run "
          "is kept there and restored at start; an acknowledged change survives a crash. A "
          "directory written by an incompatible dots-server version is refused, never changed. "
          "Empty keeps runs in memory only (lost at exit).");
ABSL_FLAG(std::string, sync, "group",
          "When a change is acknowledged: 'always' fsyncs every change on its own; 'group' lets "
          "concurrent changes share one fsync (group commit). Both are durable before the "
          "reply.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics listen address, host:port (port 0 picks a free port; the bound "
          "address is printed as 'dots-server metrics on HOST:PORT'). Empty serves no metrics.");
ABSL_FLAG(int64_t, max_message_bytes, 4 << 20,
          "Largest gRPC message the server sends or receives, in bytes (>= 65536). Batches and "
          "reports of any size travel in chunks below gRPC's default 4 MiB, so clients need no "
          "raised limit.");
ABSL_FLAG(int64_t, default_chunk_bytes, 1 << 20,
          "NextBatch chunk size in bytes when the request's max_chunk_bytes is 0 (capped at "
          "max_message_bytes minus 64 KiB of headroom).");
ABSL_FLAG(int64_t, max_group_payload_bytes, 64 << 20,
          "Largest payload of one reported rollout group, in bytes; larger is "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_stream_bytes, int64_t{1} << 30,
          "Largest total size of one ReportRollouts or UpsertQuestions call, in bytes; larger is "
          "RESOURCE_EXHAUSTED (split the upload over several calls).");
ABSL_FLAG(int64_t, max_concurrent_streams, 1024,
          "Streaming calls (NextBatch, ReportRollouts, UpsertQuestions, ImportPool, ExportRun, "
          "ImportRun) open at once; more are RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_runs, dots::RunLimits().max_runs,
          "Runs one server holds; CreateRun and ImportRun beyond it are RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_questions_per_run, dots::RunLimits().max_questions_per_run,
          "Questions in one run's pool; an upload that would grow it further is "
          "RESOURCE_EXHAUSTED and applies nothing.");
ABSL_FLAG(int64_t, max_embedding_dim, dots::RunLimits().max_embedding_dim,
          "Dimensions of uploaded question embeddings; more are RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_replay_bytes_per_run, dots::RunLimits().max_replay_bytes_per_run,
          "Largest replay.capacity_bytes a run's config may ask for: the bytes of rollout "
          "payloads one run keeps (the run evicts old groups to stay within its capacity).");
ABSL_FLAG(int32_t, call_threads, 8,
          "Worker threads for short calls into runs (run management, reports, uploads, "
          "inspection).");
ABSL_FLAG(int32_t, wait_threads, 64,
          "Worker threads for NextBatch calls that wait for a round plan, and for ImportPool. A "
          "waiting call holds one for at most --wait_slice_ms at a time.");
ABSL_FLAG(int64_t, max_wait_seconds, 600,
          "Longest a NextBatch waits for its round when the call has no deadline (or a later "
          "one).");
ABSL_FLAG(int64_t, wait_slice_ms, 500,
          "How often a waiting NextBatch checks for cancellation and draining, in ms.");
ABSL_FLAG(int64_t, drain_seconds, 30,
          "On SIGTERM or SIGINT: how long in-flight calls may run before they are cancelled. "
          "Keep it below the orchestrator's termination grace period.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the server (with --tls_key_file): serve TLS. Empty = "
          "plaintext.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file (unencrypted).");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: require mutual TLS, i.e. every client presents a certificate "
          "signed by one of them (the handshake fails otherwise). Needs --tls_cert_file.");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the admin bearer token (16 to 4096 printable characters; surrounding "
          "whitespace ignored). Turns access control on: every dots.v1.Dots call needs "
          "'authorization: Bearer <token>' with the admin token or the run's own token (returned "
          "once by CreateRun / ImportRun). Health, reflection and /metrics stay open. Empty = "
          "no access control.");
ABSL_FLAG(bool, allow_insecure_tokens, false,
          "Accept --admin_token_file without TLS (tokens then cross the network readable). "
          "Only for a loopback listener or TLS terminated by a local proxy.");
ABSL_FLAG(bool, reflection, true,
          "Serve grpc.reflection.v1alpha.ServerReflection (for grpcurl list/describe).");

int main(int argc, char** argv) {
  // glibc gives each of gRPC's many threads its own malloc arena; payload-sized buffers freed
  // on other threads then pin memory in every arena, and the resident size creeps up for
  // minutes (measured with dots-bench soak: 2.5x the resident size with the default). Two
  // arenas keep it flat at no measurable cost in throughput.
  mallopt(M_ARENA_MAX, 2);
  // --help lists the flags of this file (absl matches the binary's name by default, which
  // differs from main.cc).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "difficulty-targeted online data selection and rollout replay over gRPC "
      "(service dots.v1.Dots, plus grpc.health.v1 and server reflection).\n"
      "Usage: dots-server [--listen=127.0.0.1:50051] [flags]\n"
      "TLS with --tls_cert_file/--tls_key_file (mutual with --tls_client_ca_file); bearer tokens "
      "with --admin_token_file.\n"
      "Prints 'dots-server listening on HOST:PORT' once serving. SIGTERM or SIGINT drains (health "
      "NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within --drain_seconds) and "
      "exits 0; a second signal during the drain exits at once with status 1.");
  absl::ParseCommandLine(argc, argv);

  // Block the drain signals (and SIGUSR1, the drain thread's "done") before any thread exists,
  // so every thread inherits the mask and only the sigwait calls below receive them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigset_t blocked = signals;
  sigaddset(&blocked, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);

  dots::Server::Options options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  absl::StatusOr<dots::SyncMode> sync = dots::ParseSyncMode(absl::GetFlag(FLAGS_sync));
  if (!sync.ok()) {
    std::fprintf(stderr, "dots-server: --%s\n", std::string(sync.status().message()).c_str());
    return 2;
  }
  options.sync = *sync;
  options.restore_progress = [](int64_t done, int64_t total, const std::string& id) {
    std::fprintf(stderr, "dots-server: restored run %s (%lld of %lld)\n", id.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total));
  };
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.default_chunk_bytes = absl::GetFlag(FLAGS_default_chunk_bytes);
  options.max_group_payload_bytes = absl::GetFlag(FLAGS_max_group_payload_bytes);
  options.max_stream_bytes = absl::GetFlag(FLAGS_max_stream_bytes);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.run_options.limits.max_runs = absl::GetFlag(FLAGS_max_runs);
  options.run_options.limits.max_questions_per_run = absl::GetFlag(FLAGS_max_questions_per_run);
  options.run_options.limits.max_embedding_dim = absl::GetFlag(FLAGS_max_embedding_dim);
  options.run_options.limits.max_replay_bytes_per_run =
      absl::GetFlag(FLAGS_max_replay_bytes_per_run);
  options.call_threads = absl::GetFlag(FLAGS_call_threads);
  options.wait_threads = absl::GetFlag(FLAGS_wait_threads);
  options.max_wait = absl::Seconds(absl::GetFlag(FLAGS_max_wait_seconds));
  options.wait_slice = absl::Milliseconds(absl::GetFlag(FLAGS_wait_slice_ms));
  options.enable_reflection = absl::GetFlag(FLAGS_reflection);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.allow_insecure_tokens = absl::GetFlag(FLAGS_allow_insecure_tokens);
  if (const std::string path = absl::GetFlag(FLAGS_admin_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = dots::ReadFile(path);
    if (!token.ok()) {
      std::fprintf(stderr, "dots-server: --admin_token_file: %s\n",
                   std::string(token.status().message()).c_str());
      return 2;
    }
    options.admin_token = std::string(absl::StripAsciiWhitespace(*token));
    if (absl::Status valid = dots::ValidateAdminToken(options.admin_token, path); !valid.ok()) {
      std::fprintf(stderr, "dots-server: --admin_token_file: %s\n",
                   std::string(valid.message()).c_str());
      return 2;
    }
    if (options.tls_cert_file.empty() && !options.allow_insecure_tokens) {
      std::fprintf(stderr,
                   "dots-server: --admin_token_file without TLS: bearer tokens would cross the "
                   "network readable. Give --tls_cert_file and --tls_key_file, or "
                   "--allow_insecure_tokens for a loopback listener.\n");
      return 2;
    }
  }
  const int64_t drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  if (drain_seconds < 0) {
    std::fprintf(stderr, "dots-server: --drain_seconds: %lld < 0\n",
                 static_cast<long long>(drain_seconds));
    return 2;
  }

  absl::StatusOr<std::unique_ptr<dots::Server>> server =
      dots::Server::BuildAndStart(std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "dots-server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("dots-server listening on %s\n", (*server)->address().c_str());
  if ((*server)->metrics_port() != 0) {
    const std::string& metrics = (*server)->options().metrics_listen;
    std::printf("dots-server metrics on %s:%d\n", metrics.substr(0, metrics.rfind(':')).c_str(),
                (*server)->metrics_port());
  }
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "dots-server: %s: draining (up to %llds for in-flight calls)\n",
               strsignal(signal_number), static_cast<long long>(drain_seconds));

  // Drain on another thread so that a second signal can still cut it short.
  std::thread drain([&server, drain_seconds] {
    (*server)->Shutdown(absl::Seconds(drain_seconds));
    kill(getpid(), SIGUSR1);  // wakes the sigwait below
  });
  sigwait(&blocked, &signal_number);
  if (signal_number != SIGUSR1) {
    std::fprintf(stderr, "dots-server: %s during the drain: exiting now\n",
                 strsignal(signal_number));
    std::fflush(stderr);
    _exit(1);
  }
  drain.join();
  server->reset();
  std::fprintf(stderr, "dots-server: drained, exiting\n");
  return 0;
}
