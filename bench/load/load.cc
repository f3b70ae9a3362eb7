// dots-bench load: see load.h.
#include "bench/load/load.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cpp/client.h"
#include "core/formats/pool.h"
#include "core/types.h"
#include "core/util/mutex.h"
#include "dots/v1/dots.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"
#include "proto/convert.h"
#include "proto/payload_codec.h"
#include "server/server.h"

namespace dots::bench {
namespace {

namespace pb = ::dots::v1;

constexpr char kRunId[] = "load";
constexpr int kGroupSize = 8;
// Per-call deadline of the benchmark clients: generous, since 64 threads share 2 cores here.
constexpr absl::Duration kCallDeadline = absl::Seconds(30);

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

// ---- the bare baseline: same service, precomputed answers ----

// Answers NextBatch with `chunks` (the real server's step-0 stream, captured once) and
// ReportRollouts by reading the whole client stream and returning `report_response`. No run,
// no validation: what remains is gRPC's own cost of moving the same bytes.
class BareService final : public pb::Dots::CallbackService {
 public:
  BareService(std::vector<pb::NextBatchChunk> chunks, pb::ReportRolloutsResponse report_response)
      : chunks_(std::move(chunks)), report_response_(std::move(report_response)) {}

  grpc::ServerWriteReactor<pb::NextBatchChunk>* NextBatch(
      grpc::CallbackServerContext* /*context*/, const pb::NextBatchRequest* /*request*/) override {
    return new ChunkWriter(&chunks_);
  }

  grpc::ServerReadReactor<pb::ReportRolloutsRequest>* ReportRollouts(
      grpc::CallbackServerContext* /*context*/, pb::ReportRolloutsResponse* response) override {
    *response = report_response_;
    return new ReportReader();
  }

 private:
  class ChunkWriter final : public grpc::ServerWriteReactor<pb::NextBatchChunk> {
   public:
    explicit ChunkWriter(const std::vector<pb::NextBatchChunk>* chunks) : chunks_(chunks) {
      WriteNext();
    }
    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
        return;
      }
      WriteNext();
    }
    void OnDone() override { delete this; }

   private:
    void WriteNext() {
      if (next_ < chunks_->size()) {
        StartWrite(&(*chunks_)[next_++]);
      } else {
        Finish(grpc::Status::OK);
      }
    }
    const std::vector<pb::NextBatchChunk>* chunks_;
    size_t next_ = 0;
  };

  class ReportReader final : public grpc::ServerReadReactor<pb::ReportRolloutsRequest> {
   public:
    ReportReader() { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (ok) {
        StartRead(&request_);
      } else {
        Finish(grpc::Status::OK);  // the client's WritesDone (or a broken stream)
      }
    }
    void OnDone() override { delete this; }

   private:
    pb::ReportRolloutsRequest request_;
  };

  const std::vector<pb::NextBatchChunk> chunks_;
  const pb::ReportRolloutsResponse report_response_;
};

// ---- the client side, identical against both servers ----

// One NextBatch call read to its end. Returns the items received, or the error.
absl::StatusOr<int64_t> FetchBatch(pb::Dots::Stub& stub, const pb::NextBatchRequest& request,
                                   std::vector<pb::NextBatchChunk>* capture = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(kCallDeadline));
  context.AddMetadata(kRoutingHeader, request.run_id());  // as dots::Client: a router needs it
  std::unique_ptr<grpc::ClientReader<pb::NextBatchChunk>> reader =
      stub.NextBatch(&context, request);
  pb::NextBatchChunk chunk;
  int64_t items = 0;
  while (reader->Read(&chunk)) {
    items += chunk.items_size();
    if (capture != nullptr) capture->push_back(chunk);
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("NextBatch: gRPC code ", status.error_code(), ": ", status.error_message()));
  }
  return items;
}

// One ReportRollouts call with `messages` (already encoded).
using ReportMessages = std::vector<pb::ReportRolloutsRequest>;
absl::StatusOr<pb::ReportRolloutsResponse> SendReport(pb::Dots::Stub& stub,
                                                      const ReportMessages& messages) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(kCallDeadline));
  if (!messages.empty()) context.AddMetadata(kRoutingHeader, messages.front().run_id());
  pb::ReportRolloutsResponse response;
  std::unique_ptr<grpc::ClientWriter<pb::ReportRolloutsRequest>> writer =
      stub.ReportRollouts(&context, &response);
  for (const pb::ReportRolloutsRequest& message : messages) {
    if (!writer->Write(message)) break;
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("ReportRollouts: gRPC code ", status.error_code(),
                                               ": ", status.error_message()));
  }
  return response;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) {
  grpc::ChannelArguments args;
  // One HTTP/2 connection per client thread, as separate trainer processes would have.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

struct RpcStats {
  int64_t calls = 0;
  double qps = 0, p50_ms = 0, p99_ms = 0;
};

struct PhaseResult {
  RpcStats next_batch, report;
};

// Nearest-rank percentile of sorted `v` (0 when empty).
double Percentile(const std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

RpcStats Summarize(std::vector<double> latencies_ms, absl::Duration window) {
  std::sort(latencies_ms.begin(), latencies_ms.end());
  RpcStats s;
  s.calls = static_cast<int64_t>(latencies_ms.size());
  s.qps = static_cast<double>(s.calls) / absl::ToDoubleSeconds(window);
  s.p50_ms = Percentile(latencies_ms, 0.50);
  s.p99_ms = Percentile(latencies_ms, 0.99);
  return s;
}

// `clients` threads, each on its own channel, loop NextBatch + ReportRollouts against `address`
// for `window` after one untimed warm-up iteration each. Calls that complete after the window
// are not counted. Errors: the first failed call or item-count mismatch.
absl::StatusOr<PhaseResult> RunPhase(const std::string& address, int clients, absl::Duration window,
                                     const pb::NextBatchRequest& next,
                                     const std::vector<ReportMessages>& reports,
                                     int64_t expected_items) {
  std::atomic<bool> stop{false};
  std::latch ready(clients + 1);
  std::latch go(1);
  Mutex mu;
  std::vector<double> next_ms, report_ms;
  absl::Status first_error;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<pb::Dots::Stub> stub = pb::Dots::NewStub(NewChannel(address));
      const ReportMessages& report = reports[static_cast<size_t>(c) % reports.size()];
      std::vector<double> my_next, my_report;
      absl::Status error;
      auto iterate = [&](bool timed) {
        const absl::Time t0 = absl::Now();
        absl::StatusOr<int64_t> items = FetchBatch(*stub, next);
        const absl::Time t1 = absl::Now();
        if (!items.ok()) return items.status();
        if (*items != expected_items) {
          return absl::InternalError(
              absl::StrCat("NextBatch: ", *items, " items, expected ", expected_items));
        }
        absl::StatusOr<pb::ReportRolloutsResponse> response = SendReport(*stub, report);
        const absl::Time t2 = absl::Now();
        if (!response.ok()) return response.status();
        if (response->rejected_size() > 0) {
          return absl::InternalError(
              absl::StrCat("ReportRollouts rejected: ", response->rejected(0).error()));
        }
        if (timed && !stop.load(std::memory_order_relaxed)) {
          my_next.push_back(absl::ToDoubleMilliseconds(t1 - t0));
          my_report.push_back(absl::ToDoubleMilliseconds(t2 - t1));
        }
        return absl::OkStatus();
      };
      error = iterate(false);
      ready.count_down();
      go.wait();
      while (error.ok() && !stop.load(std::memory_order_relaxed)) error = iterate(true);
      MutexLock lock(&mu);
      next_ms.insert(next_ms.end(), my_next.begin(), my_next.end());
      report_ms.insert(report_ms.end(), my_report.begin(), my_report.end());
      if (!error.ok() && first_error.ok()) first_error = error;
    });
  }
  ready.arrive_and_wait();
  go.count_down();
  absl::SleepFor(window);
  stop.store(true);
  for (std::thread& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  PhaseResult result;
  result.next_batch = Summarize(std::move(next_ms), window);
  result.report = Summarize(std::move(report_ms), window);
  return result;
}

// ---- setup ----

// `n` questions with prompts of about 200 characters and small JSON metadata.
std::vector<Question> MakePool(int64_t n) {
  std::vector<Question> pool;
  pool.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrFormat(
        "Problem %d. Let a = %d and b = %d. A sequence starts at a and each term adds b to the "
        "previous one. What is the sum of the first %d terms? Give the exact value and explain.",
        i, i % 97, i % 13 + 1, i % 50 + 10);
    q.prompt.resize(200, ' ');
    q.metadata_json = absl::StrCat("{\"answer\": ", i, "}");
    pool.push_back(std::move(q));
  }
  return pool;
}

struct Level {
  int clients = 0;
  PhaseResult dots, bare;
  std::optional<PhaseResult> direct;  // --direct: the replica itself, bypassing --server
};

double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

std::string StatsJson(const RpcStats& s) {
  return absl::StrFormat(R"({"calls": %d, "qps": %.2f, "p50_ms": %.4f, "p99_ms": %.4f})", s.calls,
                         s.qps, s.p50_ms, s.p99_ms);
}

struct LoadArgs {
  std::vector<int> clients = {1, 8, 32, 64};
  double seconds = 3;
  int64_t batch_size = 512;
  int64_t payload_bytes = 65536;
  int64_t pool = 20000;
  bool json = false;
  std::string
      server;  // measure this server (e.g. the cluster's router) instead of an in-process one
  std::string direct;  // with --server: the replicas, to measure the run's own replica directly too
};

int RunLoad(const LoadArgs& args) {
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "dots-bench load: %s\n", s.ToString().c_str());
    return 1;
  };
  if (args.pool < 2 * args.batch_size + 32) {
    std::fprintf(stderr, "dots-bench load: need --pool >= 2 * batch-size + 32\n");
    return 2;
  }
  const absl::Duration window = absl::Seconds(args.seconds);

  // The real server (in-process, or --server), its run and a composed step 0.
  std::unique_ptr<Server> in_process;
  std::string address = args.server;
  std::string run_id = kRunId;
  if (address.empty()) {
    Server::Options options;
    options.listen_address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(options);
    if (!server.ok()) return fail(server.status());
    in_process = std::move(*server);
    address = in_process->address();
  } else {
    // A fresh run on a shared server, deleted at the end.
    run_id = absl::StrCat(kRunId, "-", absl::ToUnixMicros(absl::Now()));
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create({.target = address});
  if (!client.ok()) return fail(client.status());
  const std::string config = absl::StrFormat(
      R"({"batch_size": %d, "group_size": %d, "steps_per_round": 2, "reference_size": 32,
          "estimator": {"mode": "history"}, "replay": {"enabled": true}})",
      args.batch_size, kGroupSize);
  if (absl::StatusOr<RunInfo> run = (*client)->CreateRun(run_id, config); !run.ok()) {
    return fail(run.status());
  }
  const absl::Time setup_start = absl::Now();
  absl::StatusOr<UpsertResult> upserted =
      (*client)->UpsertQuestions(run_id, MakePool(args.pool), FloatMatrix());
  if (!upserted.ok()) return fail(upserted.status());
  pb::NextBatchRequest next;
  next.set_run_id(run_id);
  next.set_step(0);
  next.set_rank(0);
  next.set_world_size(1);
  std::vector<pb::NextBatchChunk> chunks;
  std::unique_ptr<pb::Dots::Stub> setup_stub = pb::Dots::NewStub(NewChannel(address));
  absl::StatusOr<int64_t> items = FetchBatch(*setup_stub, next, &chunks);  // plans round 0
  if (!items.ok()) return fail(items.status());
  int64_t batch_bytes = 0;
  std::vector<std::string> keys;
  for (const pb::NextBatchChunk& chunk : chunks) {
    batch_bytes += static_cast<int64_t>(chunk.ByteSizeLong());
    for (const pb::BatchItem& item : chunk.items()) keys.push_back(item.key());
  }
  if (keys.empty()) return fail(absl::InternalError("step 0 has no items"));
  const double setup_seconds = absl::ToDoubleSeconds(absl::Now() - setup_start);

  // One report per client thread (reused every iteration): a different item's key each, so the
  // first report of each is applied and the rest are duplicates.
  const std::string payload(static_cast<size_t>(args.payload_bytes), 'x');
  const int max_clients = *std::max_element(args.clients.begin(), args.clients.end());
  std::vector<ReportMessages> reports;
  for (int c = 0; c < max_clients; ++c) {
    std::vector<float> rewards(kGroupSize, 0.0f);
    rewards[0] = 1.0f;
    const RolloutReport group{keys[static_cast<size_t>(c) % keys.size()], rewards, 0, payload};
    ReportEncoder encoder(run_id, 0, {&group, 1}, {.max_message_bytes = 4 << 20});
    ReportMessages messages;
    for (pb::ReportRolloutsRequest m; encoder.Next(&m);) messages.push_back(m);
    reports.push_back(std::move(messages));
  }

  // The bare server, answering with the captured bytes.
  pb::ReportRolloutsResponse fixed_response;
  fixed_response.set_duplicates(1);
  BareService bare_service(chunks, fixed_response);
  grpc::ServerBuilder builder;
  int bare_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &bare_port);
  builder.RegisterService(&bare_service);
  std::unique_ptr<grpc::Server> bare = builder.BuildAndStart();
  if (bare == nullptr || bare_port == 0) {
    return fail(absl::UnavailableError("bare server: cannot bind 127.0.0.1:0"));
  }
  const std::string bare_address = absl::StrCat("127.0.0.1:", bare_port);

  // --direct: the replica that holds the run (the router placed it there).
  std::string direct_address;
  for (const absl::string_view candidate : absl::StrSplit(args.direct, ',', absl::SkipEmpty())) {
    absl::StatusOr<std::unique_ptr<Client>> replica =
        Client::Create({.target = std::string(candidate), .default_deadline = absl::Seconds(10)});
    if (!replica.ok()) return fail(replica.status());
    absl::StatusOr<RunInfo> info = (*replica)->GetRun(run_id);
    if (info.ok()) {
      direct_address = std::string(candidate);
      break;
    }
    if (info.status().code() != absl::StatusCode::kNotFound) {
      return fail(absl::Status(info.status().code(), absl::StrCat("--direct ", candidate, ": ",
                                                                  info.status().message())));
    }
  }
  if (!args.direct.empty() && direct_address.empty()) {
    return fail(absl::NotFoundError(
        absl::StrCat("--direct: no replica of ", args.direct, " holds run ", run_id)));
  }

  std::vector<Level> results;
  for (int clients : args.clients) {
    Level level;
    level.clients = clients;
    std::fprintf(stderr, "%d client(s): dots ...\n", clients);
    absl::StatusOr<PhaseResult> dots = RunPhase(address, clients, window, next, reports, *items);
    if (!dots.ok()) return fail(dots.status());
    if (!direct_address.empty()) {
      std::fprintf(stderr, "%d client(s): direct to %s ...\n", clients, direct_address.c_str());
      absl::StatusOr<PhaseResult> direct =
          RunPhase(direct_address, clients, window, next, reports, *items);
      if (!direct.ok()) return fail(direct.status());
      level.direct = *direct;
    }
    std::fprintf(stderr, "%d client(s): bare ...\n", clients);
    absl::StatusOr<PhaseResult> baseline =
        RunPhase(bare_address, clients, window, next, reports, *items);
    if (!baseline.ok()) return fail(baseline.status());
    level.dots = *dots;
    level.bare = *baseline;
    results.push_back(level);
  }
  // What the dots server made of the reports: one applied group per key, the rest duplicates.
  pb::RunStats run_stats;
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    context.AddMetadata(kRoutingHeader, run_id);
    pb::GetRunStatsRequest request;
    request.set_run_id(run_id);
    const grpc::Status status = setup_stub->GetRunStats(&context, request, &run_stats);
    if (!status.ok()) {
      return fail(absl::UnavailableError(absl::StrCat("GetRunStats: ", status.error_message())));
    }
  }
  bare->Shutdown(DeadlineIn(absl::Seconds(1)));
  if (in_process != nullptr) {
    in_process->Shutdown(absl::Seconds(1));
  } else if (absl::Status deleted = (*client)->DeleteRun(run_id); !deleted.ok()) {
    std::fprintf(stderr, "dots-bench load: could not delete run %s: %s\n", run_id.c_str(),
                 deleted.ToString().c_str());
  }

  // Verdicts.
  const Level* at32 = nullptr;
  bool ratios_ok = true;
  for (const Level& l : results) {
    if (l.clients == 32) at32 = &l;
    ratios_ok = ratios_ok && Ratio(l.dots.next_batch.qps, l.bare.next_batch.qps) >= 0.5 &&
                Ratio(l.dots.report.qps, l.bare.report.qps) >= 0.5;
  }
  const bool p99_ok = at32 != nullptr && at32->dots.next_batch.p99_ms <= 5.0;

  if (args.json) {
    std::string out = absl::StrFormat(
        R"({"batch_size": %d, "items_per_batch": %d, "chunks_per_batch": %d, )"
        R"("batch_bytes": %d, "payload_bytes": %d, "pool": %d, "seconds": %g, )"
        R"("setup_seconds": %.3f, "cores": %d, "repeated_reports_are_duplicates": true, )"
        R"("dots_reported_groups": %d, "dots_duplicate_reports": %d, "levels": [)",
        args.batch_size, *items, chunks.size(), batch_bytes, args.payload_bytes, args.pool,
        args.seconds, setup_seconds, std::thread::hardware_concurrency(),
        run_stats.reported_groups(), run_stats.duplicate_reports());
    for (size_t i = 0; i < results.size(); ++i) {
      const Level& l = results[i];
      absl::StrAppend(
          &out, i ? ", " : "",
          absl::StrFormat(R"({"clients": %d, "dots": {"next_batch": %s, "report": %s}, )"
                          R"("bare": {"next_batch": %s, "report": %s}, "next_batch_ratio": %.4f, )"
                          R"("report_ratio": %.4f})",
                          l.clients, StatsJson(l.dots.next_batch), StatsJson(l.dots.report),
                          StatsJson(l.bare.next_batch), StatsJson(l.bare.report),
                          Ratio(l.dots.next_batch.qps, l.bare.next_batch.qps),
                          Ratio(l.dots.report.qps, l.bare.report.qps)));
      if (l.direct.has_value()) {
        out.pop_back();  // the level's closing brace
        absl::StrAppend(
            &out, absl::StrFormat(
                      R"(, "direct": {"next_batch": %s, "report": %s}, )"
                      R"("next_batch_ratio_to_direct": %.4f, "report_ratio_to_direct": %.4f})",
                      StatsJson(l.direct->next_batch), StatsJson(l.direct->report),
                      Ratio(l.dots.next_batch.qps, l.direct->next_batch.qps),
                      Ratio(l.dots.report.qps, l.direct->report.qps)));
      }
    }
    absl::StrAppend(
        &out,
        absl::StrFormat(
            R"(], "targets": {"next_batch_p99_at_32_ms": %s, "next_batch_p99_at_32_le_5ms": %s, )"
            R"("qps_ratio_ge_0.5_at_every_level": %s}})",
            at32 != nullptr ? absl::StrFormat("%.4f", at32->dots.next_batch.p99_ms) : "null",
            at32 == nullptr ? "null" : (p99_ok ? "true" : "false"), ratios_ok ? "true" : "false"),
        "\n");
    std::fputs(out.c_str(), stdout);
    return 0;
  }

  std::printf(
      "dots-bench load: B = %d, %d items per NextBatch (%d chunks, %.1f KiB), ReportRollouts of "
      "1 group with a %d-byte payload; %g s per level and server; %u cores\n",
      static_cast<int>(args.batch_size), static_cast<int>(*items), static_cast<int>(chunks.size()),
      static_cast<double>(batch_bytes) / 1024.0, static_cast<int>(args.payload_bytes), args.seconds,
      std::thread::hardware_concurrency());
  std::printf(
      "NextBatch serves an already-composed step (step 0, rank 0 of 1); repeated reports of a "
      "key are duplicates (received, reassembled and checked, not re-applied)\n\n");
  auto table = [&](const char* name, RpcStats PhaseResult::*rpc) {
    std::printf("%s\n%7s | %10s %8s %8s | %10s %8s %8s | %6s\n", name, "clients", "dots qps",
                "p50 ms", "p99 ms", "bare qps", "p50 ms", "p99 ms", "ratio");
    for (const Level& l : results) {
      const RpcStats& d = l.dots.*rpc;
      const RpcStats& b = l.bare.*rpc;
      std::printf("%7d | %10.1f %8.3f %8.3f | %10.1f %8.3f %8.3f | %6.3f\n", l.clients, d.qps,
                  d.p50_ms, d.p99_ms, b.qps, b.p50_ms, b.p99_ms, Ratio(d.qps, b.qps));
    }
    std::printf("\n");
  };
  table("NextBatch", &PhaseResult::next_batch);
  table("ReportRollouts", &PhaseResult::report);
  if (!direct_address.empty()) {
    std::printf("Through --server %s against the run's replica %s directly:\n", address.c_str(),
                direct_address.c_str());
    std::printf("%7s | %14s %14s %7s | %14s %14s %7s\n", "clients", "NextBatch qps", "direct qps",
                "ratio", "Report qps", "direct qps", "ratio");
    for (const Level& l : results) {
      std::printf("%7d | %14.1f %14.1f %7.3f | %14.1f %14.1f %7.3f\n", l.clients,
                  l.dots.next_batch.qps, l.direct->next_batch.qps,
                  Ratio(l.dots.next_batch.qps, l.direct->next_batch.qps), l.dots.report.qps,
                  l.direct->report.qps, Ratio(l.dots.report.qps, l.direct->report.qps));
    }
    std::printf("\n");
  }
  if (at32 == nullptr) {
    std::printf("target NextBatch p99 <= 5 ms at 32 clients: not measured (no 32 in --clients)\n");
  } else {
    std::printf("target NextBatch p99 <= 5 ms at 32 clients: %s (%.3f ms)\n",
                p99_ok ? "MET" : "MISSED", at32->dots.next_batch.p99_ms);
  }
  std::printf("target throughput >= 0.5 x bare at every level (both RPCs): %s\n",
              ratios_ok ? "MET" : "MISSED");
  std::printf("dots server afterwards: %lld groups applied, %lld duplicate reports\n",
              static_cast<long long>(run_stats.reported_groups()),
              static_cast<long long>(run_stats.duplicate_reports()));
  return 0;
}

}  // namespace

void AddLoadCommand(CLI::App* app, cli::Action* action) {
  auto args = std::make_shared<LoadArgs>();
  CLI::App* load = cli::AddCommand(
      app, "load",
      "NextBatch / ReportRollouts QPS and latency against an in-process server and a bare gRPC "
      "baseline",
      "Client threads loop NextBatch (an already-composed step, whole batch) + ReportRollouts "
      "(one group, one payload) against an in-process dots-server and against a bare gRPC "
      "server replaying the same bytes; prints QPS and p50/p99 latency of each.");
  load->add_option("--clients", args->clients, "comma-separated client thread counts")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  load->add_option("--seconds", args->seconds, "measured seconds per level and server")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  load->add_option("--batch-size", args->batch_size, "run batch size B")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  load->add_option("--payload-bytes", args->payload_bytes,
                   "ReportRollouts payload per group, bytes, at most 3 MiB")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3} << 20));
  load->add_option("--pool", args->pool, "questions in the pool, >= 2 * batch-size + 32")
      ->capture_default_str();
  load->add_flag("--json", args->json, "print one JSON object instead of a table");
  load->add_option("--server", args->server,
                   "measure this dots-server (host:port, e.g. a cluster's router from "
                   "scripts/cluster.sh) instead of an in-process one; a fresh run is created "
                   "there and deleted at the end");
  load->add_option("--direct", args->direct,
                   "with --server: the replicas (host:port, comma-separated); the one holding the "
                   "run is measured directly too, in the same run, and each level reports "
                   "through/direct ratios")
      ->needs("--server");
  cli::RunsWhenSelected(load, action, [args] { return RunLoad(*args); });
}

}  // namespace dots::bench
