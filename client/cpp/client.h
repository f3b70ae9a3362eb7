// dots::Client: the C++ client of the dots service (proto/dots/v1/dots.proto), for trainers,
// launchers and dotsctl. Plain C++ types in and out (core/types.h: Question, BatchSlice,
// RolloutReport, ...); no gRPC type appears in this header. The library (CMake target
// dots_client) links gRPC, protobuf and Abseil only, nothing of the engine: a trainer that links
// it does not pull in RocksDB, FAISS or a BLAS (tests/client/trainer_program.cc).
//
// Errors. Every method returns the server's status with its gRPC code mapped 1:1 onto
// absl::StatusCode and its message verbatim (e.g. NOT_FOUND `run_id: no run "x"`); problems the
// client finds itself are INVALID_ARGUMENT (bad arguments, before anything is sent) or INTERNAL
// (a response stream that breaks the protocol: fragments out of order, counts that disagree with
// the header).
//
// Deadlines. Every call has one: CallOptions::timeout, else Options::default_deadline, measured
// from the start of the call and covering all of its retries and pages. A call never blocks past
// it (plus scheduling noise); it then returns DEADLINE_EXCEEDED, or the last UNAVAILABLE when the
// deadline falls inside a backoff.
//
// Retries. Calls that are safe to repeat are retried on UNAVAILABLE (server starting, draining or
// unreachable; also gRPC's UNKNOWN "Stream removed", a connection torn down mid-call) with
// exponential backoff and +-20% jitter, up to Options::max_attempts attempts and within the
// deadline; a call that gives up says "(after N attempts)" at the end of the last message: GetRun,
// ListRuns, NextBatch (a step's batch is recorded and returned identically to every retry),
// ReportRollouts (idempotent per run, step and key: groups the lost attempt applied come back as
// `duplicates`), UpsertQuestions and ImportPool (upserts: questions the lost attempt added come
// back as `updated`), GetEstimates, GetRunStats. A streaming call is retried as a whole; partial
// responses of the failed attempt are discarded. CreateRun and DeleteRun are NOT retried: if the
// server applied an attempt whose response was lost, a repeat would report ALREADY_EXISTS /
// NOT_FOUND for a call that succeeded, and the client cannot tell that apart from a conflicting
// creator or deleter. Callers that know better may retry them.
//
// Message sizes. Nothing here needs a raised message limit: UpsertQuestions and ReportRollouts
// split their requests into messages of at most Options::max_request_bytes (payloads are cut into
// fragments), and NextBatch reassembles the server's chunks, so a batch whose replay payloads
// total far more than the default 4 MiB receive limit arrives with default channel settings.
//
// Routing. Every call that names a run also sends it as gRPC metadata `x-dots-run` (ImportRun:
// when given `as_run_id`), the key a router in front of several servers hashes; the server
// refuses a call whose header and run id differ (INVALID_ARGUMENT naming x-dots-run).
//
// Thread safety: a Client is thread-safe; all calls share one channel (HTTP/2 connection) and may
// run concurrently from any number of threads. Every method blocks the calling thread.
#ifndef DOTS_CLIENT_CPP_CLIENT_H_
#define DOTS_CLIENT_CPP_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace dots {

// Per-call settings; the defaults come from Client::Options.
struct CallOptions {
  // Deadline of the whole call (all attempts and pages), from its start. Zero = the client's
  // default_deadline. Must not be negative.
  absl::Duration timeout = absl::ZeroDuration();
  // If set, receives the number of attempts the call made (1 = no retry). For a paged call
  // (GetEstimates), the total over all pages.
  int* attempts = nullptr;
};

class Client {
 public:
  struct Options {
    std::string target{};  // "host:port" or any gRPC target URI, e.g. "127.0.0.1:50051"
    std::string token{};   // sent as "authorization: Bearer <token>" metadata when non-empty
    absl::Duration default_deadline = absl::Seconds(30);
    int max_attempts = 5;  // per call, >= 1; 1 disables retries
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(5);
    // Largest NextBatch chunk to ask the server for; 0 = the server's default (1 MiB). Values
    // above 3 MiB raise this client's receive limit accordingly.
    int64_t max_chunk_bytes = 0;
    // Largest request message UpsertQuestions and ReportRollouts send (payload fragments are
    // cut to fit), in bytes, in [64 KiB, 4 MiB). A single question larger than this is sent
    // alone in a message of its own (the server then decides whether it fits its limit).
    int64_t max_request_bytes = 1 << 20;
    // Transport security: false = plaintext (development, service-mesh mTLS); true = TLS with
    // `tls_root_certs_pem` (empty = the system roots). For servers that require mutual TLS
    // (dots-server --tls_client_ca_file), the client's PEM certificate chain and private key;
    // both or neither, and only with use_tls. The server's certificate must name the host of
    // `target` (a DNS or IP subjectAltName) unless tls_server_name_override is set.
    bool use_tls = false;
    std::string tls_root_certs_pem{};
    std::string tls_cert_chain_pem{};
    std::string tls_private_key_pem{};
    std::string tls_server_name_override{};
  };

  // Progress of an upload: questions handed to the transport so far, of `total`.
  using UploadProgress = std::function<void(int64_t sent, int64_t total)>;
  using ImportProgressCallback = std::function<void(const ImportProgress&)>;

  // Reads the PEM files of a TLS connection into `options` and sets use_tls: `ca_file` (empty =
  // the system roots), `cert_file` and `key_file` (both or neither). NOT_FOUND / INTERNAL naming
  // the file, INVALID_ARGUMENT for a certificate without key or the reverse. Blocks on I/O.
  static absl::Status LoadTlsFiles(const std::string& ca_file, const std::string& cert_file,
                                   const std::string& key_file, Options* options);

  // Validates the options (INVALID_ARGUMENT naming the field) and creates the channel. Does not
  // connect: the first call does, so creating a client for a server that is not up yet is fine.
  static absl::StatusOr<std::unique_ptr<Client>> Create(Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Options& options() const { return options_; }
  // Retries made by all calls of this client so far (attempts beyond each call's first).
  int64_t total_retries() const { return total_retries_.load(std::memory_order_relaxed); }

  // ---- runs ----
  // Creates a run from a JSON config ("{}" = the paper's defaults). Not retried (see above).
  // Errors: INVALID_ARGUMENT naming the config key, ALREADY_EXISTS. One round trip.
  absl::StatusOr<RunInfo> CreateRun(const std::string& run_id, const std::string& config_json,
                                    const CallOptions& call = {});
  // Errors: NOT_FOUND. One round trip.
  absl::StatusOr<RunInfo> GetRun(const std::string& run_id, const CallOptions& call = {});
  // Every run, ordered by id. O(runs).
  absl::StatusOr<std::vector<RunInfo>> ListRuns(const CallOptions& call = {});
  // Seals or unseals the run (the fence of a move between servers: see SealRun in dots.proto).
  // Retried (idempotent). Errors: NOT_FOUND, PERMISSION_DENIED without the admin token.
  absl::StatusOr<RunInfo> SealRun(const std::string& run_id, bool sealed,
                                  const CallOptions& call = {});
  // Removes the run and everything of it. Not retried. Errors: NOT_FOUND.
  absl::Status DeleteRun(const std::string& run_id, const CallOptions& call = {});

  // Writes run `run_id`'s archive (core/storage/run_archive.h) to `path`, through `path`.partial
  // renamed into place only when complete, so `path` is never a truncated archive. Retried on
  // UNAVAILABLE (the export is read-only). Errors: NOT_FOUND, FAILED_PRECONDITION (memory-only
  // server), INTERNAL for a local write error naming the file. O(archive) time, O(1 MiB) memory.
  absl::Status ExportRun(const std::string& run_id, const std::string& path,
                         const CallOptions& call = {});
  // Creates a run from the archive at `path` (local), as `as_run_id` or, when empty, the id it
  // was exported under. Not retried (it creates a run). Errors: INVALID_ARGUMENT (corrupted or
  // truncated archive: nothing created), ALREADY_EXISTS, NOT_FOUND when `path` cannot be read.
  absl::StatusOr<RunInfo> ImportRun(const std::string& path, const std::string& as_run_id = "",
                                    const CallOptions& call = {});

  // ---- pool ----
  // Adds or replaces (same key) questions. `embeddings` is empty (0 rows) or has one row per
  // question (row i = questions[i]); priors travel in Question::prior. Streams messages of at
  // most max_request_bytes; `progress` (optional) runs on the calling thread after each message.
  // Invalid questions are rejected individually by the server (RejectedQuestion::index = position
  // in `questions`), the rest applied. Errors: INVALID_ARGUMENT for embeddings whose row count
  // does not match (nothing sent), NOT_FOUND. O(n * dim) time, O(max_request_bytes) extra memory.
  absl::StatusOr<UpsertResult> UpsertQuestions(const std::string& run_id,
                                               absl::Span<const Question> questions,
                                               const FloatMatrix& embeddings,
                                               const UploadProgress& progress = nullptr,
                                               const CallOptions& call = {});
  // Imports a JSONL pool (and optional .npy embeddings) that lives on the SERVER's filesystem;
  // all or nothing. `progress` (optional) sees every progress message. Returns the final one.
  // Errors: NOT_FOUND (run or file), INVALID_ARGUMENT naming file:line and field; INTERNAL if
  // the stream ends without a final (done) message.
  absl::StatusOr<ImportProgress> ImportPool(const std::string& run_id,
                                            const std::string& questions_path,
                                            const std::string& embeddings_path = "",
                                            const ImportProgressCallback& progress = nullptr,
                                            const CallOptions& call = {});

  // ---- training ----
  // Rank `rank` of `world_size`'s slice of step `step`'s batch, fully reassembled: every replay
  // group's payload is byte-identical to what was reported. May wait on the server up to the
  // deadline while the step's round is planned. Memory: the whole slice (items + payloads).
  // Errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION (step cannot be served yet; the
  // message says what is missing), DEADLINE_EXCEEDED, INTERNAL (malformed chunk stream).
  absl::StatusOr<BatchSlice> NextBatch(const std::string& run_id, int64_t step, int rank,
                                       int world_size, int64_t policy_version,
                                       const CallOptions& call = {});
  // Reports rollout groups of `step`; payloads of any size are cut into fragments. Returns once
  // the server applied the report. Groups the server rejects (key not handed out at `step`,
  // malformed rewards) are listed with the reason; the rest are applied. Errors: NOT_FOUND,
  // INVALID_ARGUMENT (negative step, empty key: nothing sent). O(total payload bytes).
  absl::StatusOr<ReportResult> ReportRollouts(const std::string& run_id, int64_t step,
                                              absl::Span<const RolloutReport> groups,
                                              const CallOptions& call = {});

  // ---- inspection ----
  // Current estimates: of every question in pool order when `keys` is empty, else of `keys` in
  // that order. Follows page tokens (and splits long key lists) until complete.
  // Errors: NOT_FOUND (run or key).
  absl::StatusOr<std::vector<QuestionEstimate>> GetEstimates(
      const std::string& run_id, const std::vector<std::string>& keys = {},
      const CallOptions& call = {});
  // Counters and gauges of the run (RunStats::effective_last_step_index is not transmitted and
  // stays -1). Errors: NOT_FOUND.
  absl::StatusOr<RunStats> GetRunStats(const std::string& run_id, const CallOptions& call = {});

 private:
  class Impl;
  Client(Options options, std::unique_ptr<Impl> impl);

  const Options options_;
  std::unique_ptr<Impl> impl_;
  std::atomic<int64_t> total_retries_{0};
};

}  // namespace dots

#endif  // DOTS_CLIENT_CPP_CLIENT_H_
