// dots-bench load: the service load benchmark of issue 4.
//
//   dots-bench load [--clients 1,8,32,64] [--seconds 3] [--batch-size 512]
//                   [--payload-bytes 65536] [--pool 20000] [--json]
//
// Starts a real dots::Server in this process on 127.0.0.1:0, creates a run (B = --batch-size,
// G = 8, mu = 2, K = 32 inline references, history estimator, replay on), uploads a pool of
// --pool questions with ~200-character prompts and composes step 0 once. It also starts a bare
// gRPC server (same dots.v1.Dots service, callback API) that answers NextBatch with the real
// server's step-0 chunks, captured once and replayed byte for byte, and ReportRollouts by reading
// the whole stream and returning a fixed response.
//
// For each concurrency level N, N client threads (one channel each, raw generated stubs, the
// same code against both servers) loop for --seconds on: NextBatch(step 0, rank 0 of 1: the
// whole composed batch, read to the end) then ReportRollouts(step 0, one group of G rewards and
// a --payload-bytes payload). Only the first report of each key is applied by the dots server;
// later ones are duplicates, which it still receives, reassembles and checks. NextBatch here
// measures serving an already-composed step (steady-state cost per rank), not planning.
//
// Output: per level, QPS and p50/p99 latency (ms) of each RPC on both servers and the ratio of
// dots to bare throughput, then the targets (NextBatch p99 <= 5 ms at 32 clients; QPS
// ratio >= 0.5 at every level) with a pass/fail verdict. --json prints one JSON object instead.
//
// Cost: about 2 * levels * --seconds of wall time plus setup (pool upload and one planning
// round, ~1 s). Blocks the calling thread throughout. Exit code: 0 on a completed run (whatever
// the verdicts), 1 when setup or a call fails, 2 on bad flags.
#ifndef DOTS_BENCH_LOAD_LOAD_H_
#define DOTS_BENCH_LOAD_LOAD_H_

#include "client/cli/cli.h"

namespace dots::bench {

// Registers the `load` subcommand; when selected it stores its run in *action.
void AddLoadCommand(CLI::App* app, cli::Action* action);

}  // namespace dots::bench

#endif  // DOTS_BENCH_LOAD_LOAD_H_
