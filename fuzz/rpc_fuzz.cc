// Fuzzes the request handling of every dots.v1.Dots RPC through a real in-process server
// (server/server.h on 127.0.0.1:0), a real channel and the generated stub.
//
// Input: a sequence of at most kMaxRecords records, each
//   [op: 1 byte][length: u16 little-endian][length bytes: a serialized request message]
// (a length past the end takes what is left). (op & 0x0f) % 12 picks the RPC:
//   0 CreateRun  1 GetRun  2 ListRuns  3 DeleteRun  4 UpsertQuestions  5 ImportPool
//   6 NextBatch  7 ReportRollouts  8 GetEstimates  9 GetRunStats  10 ExportRun  11 ImportRun
// Consecutive records with the same op byte of a client-streaming RPC (4, 7, 11) are the
// messages of one stream (at most kMaxStreamMessages). Bit 0x10 on ImportRun puts the archive
// returned by the input's last ExportRun in front of the first message's data (the archive is
// checksummed: mutated bytes rarely get past the check, an exact copy imports; run_archive_fuzz
// covers what lies behind the checksums). Bit 0x20 makes the client give up on the call (cancel
// a client stream after its messages or a server stream after its first response; give a unary
// call a 1 ms deadline). Bytes that do not parse as the request message skip that call.
//
// State: every input starts from the same server state: no run but "fuzz", created with a small
// config (B = 16, G = 4, mu = 2, K = 4, history estimator), 64 questions with 8-dimensional
// embeddings uploaded, and the batch of step 0 issued, so that reports for step 0 can be
// accepted. The harness restores it (deletes every run and rebuilds "fuzz", ~5 ms) before an
// input whenever the previous one may have changed it: a state-changing RPC that succeeded, was
// cancelled or ran out of time (and every 500 resets it restarts the server on a fresh state
// directory). Failed calls are checked to change nothing, so inputs are independent and a
// crash reproduces from its single input (background planning aside).
//
// Checked beyond "no crash, no sanitizer report, no hang":
//   - every call ends within its deadline (10 s; NextBatch 50 ms of waiting) and with a
//     status code the API documents (never UNKNOWN, DATA_LOSS...);
//   - a state-changing call that fails (not cancelled by the client) leaves run "fuzz"'s
//     counters unchanged;
//   - after the input, no call is left in flight on the server (no leaked reactor), ListRuns
//     answers, and GetRunStats answers for every run with consistent counters;
//   - the state directory holds exactly the runs the server lists (a failed CreateRun or
//     ImportRun leaves nothing behind that would come back, or fail the server, at restart).
//
// ImportPool reads files on the server: its paths are confined to a scratch directory (only the
// last path component is kept) holding a valid JSONL pool, an .npy, and malformed files; the
// loaders themselves are fuzzed by jsonl_pool_fuzz and npy_fuzz.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dots/v1/dots.grpc.pb.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "server/server.h"
#include "tests/server/wire_questions.h"

namespace {

namespace pb = ::dots::v1;

constexpr size_t kMaxRecords = 16;
constexpr size_t kMaxStreamMessages = 8;
constexpr absl::Duration kCallDeadline = absl::Seconds(10);
constexpr absl::Duration kNextBatchDeadline = absl::Milliseconds(50);
constexpr char kRunId[] = "fuzz";
constexpr char kRunConfig[] =
    R"({"batch_size": 16, "group_size": 4, "steps_per_round": 2, "reference_size": 4,
        "estimator": {"mode": "history"}})";
constexpr int kPoolSize = 64;
constexpr int kDim = 8;
// Resets between server restarts (see StartServer); a restart costs ~50 ms.
constexpr int64_t kResetsPerServer = 500;

enum Rpc {
  kCreateRun,
  kGetRun,
  kListRuns,
  kDeleteRun,
  kUpsertQuestions,
  kImportPool,
  kNextBatch,
  kReportRollouts,
  kGetEstimates,
  kGetRunStats,
  kExportRun,
  kImportRun,
  kRpcCount
};
constexpr std::array<const char*, kRpcCount> kRpcNames = {
    "CreateRun", "GetRun",         "ListRuns",     "DeleteRun",   "UpsertQuestions", "ImportPool",
    "NextBatch", "ReportRollouts", "GetEstimates", "GetRunStats", "ExportRun",       "ImportRun"};

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

std::string StatusText(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot create " + path);
  FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), "write " + path);
  FUZZ_CHECK(std::fclose(f) == 0, "close " + path);
}

// The .npy image of a rows x cols float32 matrix with value (i * 7 + j) % 5 - 2 at (i, j).
std::string NpyImage(int rows, int cols) {
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      const float v = static_cast<float>((i * 7 + j) % 5 - 2);
      out.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  return out;
}

// The files ImportPool may read: pool.jsonl (kPoolSize questions, keys q0.. like the upload, so
// an import updates them), inline.jsonl (the same with inline embeddings), pool.npy (its
// embeddings), short.npy (too few rows), bad.jsonl (a prior outside [0, 1] on line 3), dup.jsonl
// (a duplicate key), empty.jsonl.
void WriteImportFiles(const std::string& dir) {
  std::string plain, inline_embedded;
  for (const pb::Question& q : dots::testing::WireQuestions(kPoolSize, kDim)) {
    std::string line = absl::StrCat("{\"key\": \"", q.key(), "\", \"prompt\": \"", q.prompt(),
                                    "\", \"metadata\": ", q.metadata_json());
    if (q.has_prior()) absl::StrAppend(&line, ", \"prior\": ", q.prior());
    absl::StrAppend(&plain, line, "}\n");
    absl::StrAppend(&inline_embedded, line, ", \"embedding\": [");
    for (int d = 0; d < q.embedding_size(); ++d) {
      absl::StrAppend(&inline_embedded, d > 0 ? ", " : "", q.embedding(d));
    }
    absl::StrAppend(&inline_embedded, "]}\n");
  }
  WriteFile(dir + "/pool.jsonl", plain);
  WriteFile(dir + "/inline.jsonl", inline_embedded);
  WriteFile(dir + "/pool.npy", NpyImage(kPoolSize, kDim));
  WriteFile(dir + "/short.npy", NpyImage(kPoolSize - 1, kDim));
  WriteFile(dir + "/bad.jsonl",
            "{\"key\": \"a\", \"prompt\": \"\"}\n{\"key\": \"b\", \"prompt\": \"\"}\n"
            "{\"key\": \"c\", \"prompt\": \"\", \"prior\": 1.5}\n");
  WriteFile(dir + "/dup.jsonl",
            "{\"key\": \"a\", \"prompt\": \"\"}\n{\"key\": \"a\", \"prompt\": \"x\"}\n");
  WriteFile(dir + "/empty.jsonl", "");
}

// Status codes seen per RPC, printed at exit (the README's figures).
std::array<std::map<int, int64_t>, kRpcCount>& CodeCounts() {
  static auto* counts = new std::array<std::map<int, int64_t>, kRpcCount>();
  return *counts;
}

void PrintCodeCounts() {
  std::fprintf(stderr, "rpc_fuzz: status codes per RPC (code: calls)\n");
  for (int rpc = 0; rpc < kRpcCount; ++rpc) {
    std::string line = absl::StrCat("  ", kRpcNames[static_cast<size_t>(rpc)], ":");
    for (const auto& [code, n] : CodeCounts()[static_cast<size_t>(rpc)]) {
      absl::StrAppend(&line, " ", code, ":", n);
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

class Harness {
 public:
  Harness() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/dots-rpc-fuzz.XXXXXX");
    FUZZ_CHECK(mkdtemp(pattern.data()) != nullptr, "mkdtemp " + pattern);
    scratch_ = pattern;
    WriteImportFiles(scratch_);
    StartServer();
    questions_ = dots::testing::WireQuestions(kPoolSize, kDim);
    // Inputs whose string fields are not UTF-8 fail to parse and are skipped; protobuf would log
    // every one of them.
    google::protobuf::SetLogHandler(nullptr);
  }

  // Shuts the server down and removes the scratch directory. Runs at a normal exit (the end of
  // -max_total_time or -runs), before the sanitizers' exit-time leak check, which would
  // otherwise report the allocations of the server threads still running as leaks.
  void Stop() {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
    stub_.reset();
    channel_.reset();
    server_.reset();
    std::filesystem::remove_all(scratch_);
  }

  void RunInput(const uint8_t* data, size_t size) {
    if (dirty_) {
      if (++resets_ % kResetsPerServer == 0) StartServer();
      Reset();
      stats_.reset();
    }
    dirty_ = false;
    exported_.clear();
    struct Record {
      uint8_t op;
      std::string_view bytes;
    };
    std::vector<Record> records;
    size_t pos = 0;
    while (pos < size && records.size() < kMaxRecords) {
      const uint8_t op = data[pos++];
      size_t length = size - pos;
      if (size - pos >= 2) {
        length = std::min<size_t>(data[pos] | (data[pos + 1] << 8), size - pos - 2);
        pos += 2;
      }
      records.push_back({op, {reinterpret_cast<const char*>(data + pos), length}});
      pos += length;
    }
    for (size_t i = 0; i < records.size();) {
      const uint8_t op = records[i].op;
      const Rpc rpc = static_cast<Rpc>((op & 0x0f) % kRpcCount);
      const bool cancel = (op & 0x20) != 0;
      const bool splice = (op & 0x10) != 0;
      std::vector<std::string_view> messages = {records[i].bytes};
      ++i;
      if (rpc == kUpsertQuestions || rpc == kReportRollouts || rpc == kImportRun) {
        while (i < records.size() && records[i].op == op && messages.size() < kMaxStreamMessages) {
          messages.push_back(records[i++].bytes);
        }
      }
      Call(rpc, messages, cancel, splice);
    }
    CheckAfterInput();
  }

 private:
  // A new server on a new, empty state directory (replacing the current one, if any): RocksDB
  // keeps the tombstones of every deleted run in its memtable, and as they pile up under the
  // same run id, scans of the run's keys slow the target down ~10x within minutes.
  void StartServer() {
    if (server_ != nullptr) {
      server_->Shutdown(absl::ZeroDuration());
      stub_.reset();
      channel_.reset();
      server_.reset();
      std::filesystem::remove_all(absl::StrCat(scratch_, "/state", servers_ - 1));
    }
    dots::Server::Options options;
    options.listen_address = "127.0.0.1:0";
    options.state_dir = absl::StrCat(scratch_, "/state", servers_++);
    options.call_threads = 2;
    options.wait_threads = 8;
    options.wait_slice = absl::Milliseconds(20);
    options.max_wait = absl::Seconds(1);
    options.enable_reflection = false;
    absl::StatusOr<std::unique_ptr<dots::Server>> server =
        dots::Server::BuildAndStart(std::move(options));
    FUZZ_CHECK(server.ok(), "the server does not start: " + server.status().ToString());
    server_ = std::move(*server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    channel_ =
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
    stub_ = pb::Dots::NewStub(channel_);
  }

  // Every run deleted; run "fuzz" with its pool and step 0 issued.
  void Reset() {
    pb::ListRunsResponse runs;
    grpc::Status status = Unary(&pb::Dots::Stub::ListRuns, pb::ListRunsRequest(), &runs);
    FUZZ_CHECK(status.ok(), "reset: ListRuns: " + StatusText(status));
    for (const pb::RunInfo& run : runs.runs()) {
      pb::DeleteRunRequest request;
      request.set_run_id(run.run_id());
      pb::DeleteRunResponse ignored;
      status = Unary(&pb::Dots::Stub::DeleteRun, request, &ignored);
      FUZZ_CHECK(status.ok(), "reset: DeleteRun " + run.run_id() + ": " + StatusText(status));
    }
    pb::CreateRunRequest create;
    create.set_run_id(kRunId);
    create.set_config_json(kRunConfig);
    pb::RunInfo info;
    status = Unary(&pb::Dots::Stub::CreateRun, create, &info);
    FUZZ_CHECK(status.ok(), "reset: CreateRun: " + StatusText(status));

    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    pb::UpsertQuestionsResponse upserted;
    auto writer = stub_->UpsertQuestions(&context, &upserted);
    pb::UpsertQuestionsRequest upload;
    upload.set_run_id(kRunId);
    for (const pb::Question& q : questions_) *upload.add_questions() = q;
    writer->Write(upload);
    writer->WritesDone();
    status = writer->Finish();
    FUZZ_CHECK(status.ok() && upserted.added() == kPoolSize,
               "reset: UpsertQuestions: " + StatusText(status));

    pb::NextBatchRequest next;
    next.set_run_id(kRunId);
    int64_t chunks = 0;
    status = ServerStream(&pb::Dots::Stub::NextBatch, next, kCallDeadline, false, &chunks);
    FUZZ_CHECK(status.ok() && chunks >= 1, "reset: NextBatch step 0: " + StatusText(status));
  }

  template <typename Request, typename Response>
  grpc::Status Unary(grpc::Status (pb::Dots::Stub::*method)(grpc::ClientContext*, const Request&,
                                                            Response*),
                     const Request& request, Response* response, bool cancel = false) {
    grpc::ClientContext context;
    // A cancelled unary call is one whose client gives up almost at once.
    context.set_deadline(DeadlineIn(cancel ? absl::Milliseconds(1) : kCallDeadline));
    return ((*stub_).*method)(&context, request, response);
  }

  template <typename Request, typename Chunk>
  grpc::Status ServerStream(std::unique_ptr<grpc::ClientReader<Chunk>> (pb::Dots::Stub::*method)(
                                grpc::ClientContext*, const Request&),
                            const Request& request, absl::Duration deadline, bool cancel,
                            int64_t* messages,
                            const std::function<void(const Chunk&)>& on_message = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(deadline));
    std::unique_ptr<grpc::ClientReader<Chunk>> reader = ((*stub_).*method)(&context, request);
    Chunk chunk;
    *messages = 0;
    while (reader->Read(&chunk)) {
      ++*messages;
      if (on_message) on_message(chunk);
      if (cancel) {
        context.TryCancel();
        break;
      }
    }
    return reader->Finish();
  }

  template <typename Request, typename Response>
  grpc::Status ClientStream(std::unique_ptr<grpc::ClientWriter<Request>> (pb::Dots::Stub::*method)(
                                grpc::ClientContext*, Response*),
                            const std::vector<Request>& requests, bool cancel, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    std::unique_ptr<grpc::ClientWriter<Request>> writer = ((*stub_).*method)(&context, response);
    for (const Request& request : requests) {
      if (!writer->Write(request)) break;
    }
    if (cancel) {
      context.TryCancel();
    } else {
      writer->WritesDone();
    }
    return writer->Finish();
  }

  // The counters of run "fuzz" that a failed call must not change, or nullopt without the run.
  std::optional<std::string> StableStats() {
    pb::GetRunStatsRequest request;
    request.set_run_id(kRunId);
    pb::RunStats stats;
    grpc::Status status = Unary(&pb::Dots::Stub::GetRunStats, request, &stats);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) return std::nullopt;
    FUZZ_CHECK(status.ok(), "GetRunStats(fuzz): " + StatusText(status));
    // Planning runs in the background and leases expire with time: leave those out.
    stats.clear_round();
    stats.clear_rounds_planned();
    stats.clear_last_planning_seconds();
    stats.clear_leases_outstanding();
    stats.clear_leases_expired();
    return stats.SerializeAsString();
  }

  // ImportPool paths stay inside the scratch directory.
  std::string Confine(const std::string& path) const {
    if (path.empty()) return path;
    const size_t slash = path.rfind('/');
    return absl::StrCat(scratch_, "/", slash == std::string::npos ? path : path.substr(slash + 1));
  }

  template <typename Message>
  static bool Parse(std::string_view bytes, Message* message) {
    return message->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  }

  void Call(Rpc rpc, const std::vector<std::string_view>& messages, bool cancel, bool splice) {
    const bool read_only = rpc == kGetRun || rpc == kListRuns || rpc == kGetEstimates ||
                           rpc == kGetRunStats || rpc == kExportRun;
    if (!read_only && !stats_.has_value()) stats_ = StableStats();
    grpc::Status status;
    bool waited = false;  // a NextBatch may legitimately end at its deadline
    switch (rpc) {
      case kCreateRun: {
        pb::CreateRunRequest request;
        pb::RunInfo response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::CreateRun, request, &response, cancel);
        break;
      }
      case kGetRun: {
        pb::GetRunRequest request;
        pb::RunInfo response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::GetRun, request, &response, cancel);
        break;
      }
      case kListRuns: {
        pb::ListRunsRequest request;
        pb::ListRunsResponse response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::ListRuns, request, &response, cancel);
        break;
      }
      case kDeleteRun: {
        pb::DeleteRunRequest request;
        pb::DeleteRunResponse response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::DeleteRun, request, &response, cancel);
        break;
      }
      case kUpsertQuestions: {
        std::vector<pb::UpsertQuestionsRequest> requests(messages.size());
        for (size_t i = 0; i < messages.size(); ++i) {
          if (!Parse(messages[i], &requests[i])) return;
        }
        pb::UpsertQuestionsResponse response;
        status = ClientStream(&pb::Dots::Stub::UpsertQuestions, requests, cancel, &response);
        break;
      }
      case kImportPool: {
        pb::ImportPoolRequest request;
        if (!Parse(messages[0], &request)) return;
        request.set_questions_path(Confine(request.questions_path()));
        request.set_embeddings_path(Confine(request.embeddings_path()));
        int64_t progress = 0;
        status =
            ServerStream(&pb::Dots::Stub::ImportPool, request, kCallDeadline, cancel, &progress);
        break;
      }
      case kNextBatch: {
        pb::NextBatchRequest request;
        if (!Parse(messages[0], &request)) return;
        int64_t chunks = 0;
        status =
            ServerStream(&pb::Dots::Stub::NextBatch, request, kNextBatchDeadline, cancel, &chunks);
        waited = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                 status.error_code() == grpc::StatusCode::CANCELLED;
        break;
      }
      case kReportRollouts: {
        std::vector<pb::ReportRolloutsRequest> requests(messages.size());
        for (size_t i = 0; i < messages.size(); ++i) {
          if (!Parse(messages[i], &requests[i])) return;
        }
        pb::ReportRolloutsResponse response;
        status = ClientStream(&pb::Dots::Stub::ReportRollouts, requests, cancel, &response);
        break;
      }
      case kGetEstimates: {
        pb::GetEstimatesRequest request;
        pb::GetEstimatesResponse response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::GetEstimates, request, &response, cancel);
        break;
      }
      case kGetRunStats: {
        pb::GetRunStatsRequest request;
        pb::RunStats response;
        if (!Parse(messages[0], &request)) return;
        status = Unary(&pb::Dots::Stub::GetRunStats, request, &response, cancel);
        break;
      }
      case kExportRun: {
        pb::ExportRunRequest request;
        if (!Parse(messages[0], &request)) return;
        int64_t chunks = 0;
        std::string archive;
        status =
            ServerStream(&pb::Dots::Stub::ExportRun, request, kCallDeadline, cancel, &chunks,
                         std::function<void(const pb::ExportRunChunk&)>(
                             [&archive](const pb::ExportRunChunk& c) { archive += c.data(); }));
        if (status.ok()) exported_ = std::move(archive);
        break;
      }
      case kImportRun: {
        std::vector<pb::ImportRunRequest> requests(messages.size());
        for (size_t i = 0; i < messages.size(); ++i) {
          if (!Parse(messages[i], &requests[i])) return;
        }
        if (splice) requests[0].set_data(exported_ + requests[0].data());
        pb::RunInfo response;
        status = ClientStream(&pb::Dots::Stub::ImportRun, requests, cancel, &response);
        break;
      }
      case kRpcCount:
        return;
    }
    ++CodeCounts()[rpc][status.error_code()];
    const std::string where = absl::StrCat(kRpcNames[rpc], ": ", StatusText(status));
    switch (status.error_code()) {
      case grpc::StatusCode::OK:
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::ALREADY_EXISTS:
      case grpc::StatusCode::FAILED_PRECONDITION:
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        break;
      case grpc::StatusCode::CANCELLED:
        FUZZ_CHECK(cancel || rpc == kNextBatch, "cancelled without a client cancel: " + where);
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        FUZZ_CHECK(cancel || rpc == kNextBatch, "a call hung until its deadline: " + where);
        break;
      case grpc::StatusCode::INTERNAL:  // I/O errors on the server's files
        FUZZ_CHECK(rpc == kImportPool || rpc == kCreateRun, "INTERNAL: " + where);
        break;
      default:
        FUZZ_CHECK(false, "an undocumented status: " + where);
    }
    if (read_only) return;
    if (status.ok() || cancel || waited) {
      dirty_ = true;
      stats_.reset();  // to be read again before the next state-changing call
    } else {
      FUZZ_CHECK(StableStats() == *stats_, "a failed call changed run \"fuzz\": " + where);
    }
  }

  void CheckAfterInput() {
    // Server-side OnDone may trail the client's status by a moment.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (server_->service().calls_in_flight() > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Microseconds(100));
    }
    FUZZ_CHECK(server_->service().calls_in_flight() == 0,
               absl::StrCat(server_->service().calls_in_flight(),
                            " calls still in flight 10 s after the input"));
    pb::ListRunsResponse runs;
    grpc::Status status = Unary(&pb::Dots::Stub::ListRuns, pb::ListRunsRequest(), &runs);
    FUZZ_CHECK(status.ok(), "ListRuns after the input: " + StatusText(status));
    std::vector<std::string> listed;
    for (const pb::RunInfo& run : runs.runs()) listed.push_back(run.run_id());
    absl::StatusOr<std::vector<std::string>> stored = server_->store()->ListRuns();
    FUZZ_CHECK(stored.ok(), "StateStore::ListRuns: " + stored.status().ToString());
    FUZZ_CHECK(*stored == listed,
               absl::StrCat("the state directory holds runs [", absl::StrJoin(*stored, ", "),
                            "] but the server lists [", absl::StrJoin(listed, ", "), "]"));
    for (const pb::RunInfo& run : runs.runs()) {
      pb::GetRunStatsRequest request;
      request.set_run_id(run.run_id());
      pb::RunStats s;
      status = Unary(&pb::Dots::Stub::GetRunStats, request, &s);
      FUZZ_CHECK(status.ok(), "GetRunStats(" + run.run_id() + "): " + StatusText(status));
      FUZZ_CHECK(s.pool_size() == run.pool_size() && s.pool_size() >= 0 && s.step() >= -1 &&
                     s.reported_groups() >= 0 && s.replay_groups() >= 0 && s.replay_bytes() >= 0 &&
                     s.leases_outstanding() >= 0 &&
                     s.effective_groups() + s.solve_all_groups() + s.solve_none_groups() <=
                         s.reported_groups() &&
                     s.effective_ratio_last_step() >= 0 && s.effective_ratio_last_step() <= 1,
                 "inconsistent stats of run " + run.run_id() + ": " + s.ShortDebugString());
    }
  }

  std::string scratch_;
  std::unique_ptr<dots::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Dots::Stub> stub_;
  std::vector<pb::Question> questions_;
  bool dirty_ = true;  // the server may differ from the start state
  int64_t resets_ = 0;
  int servers_ = 0;  // servers started (names the state directories)
  // StableStats() as of the last call, when no state-changing call succeeded since (nullopt
  // inside: run "fuzz" did not exist); unset when it must be read again.
  std::optional<std::optional<std::string>> stats_;
  std::string exported_;  // the archive of the input's last successful ExportRun
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Stopped, not destroyed, at exit: gRPC's own globals may still be needed by then.
  static Harness* harness = [] {
    auto* h = new Harness();
    static Harness* stopping = h;
    std::atexit([] {
      stopping->Stop();
      PrintCodeCounts();
    });
    return h;
  }();
  harness->RunInput(data, size);
  return 0;
}
