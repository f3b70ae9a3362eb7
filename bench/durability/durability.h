// dots-bench ingest | restart: the cost of durability (issue: durable state).
//
//   ingest   ReportRollouts into a durable run (--sync always and group, 1 and 32 concurrent
//            writers, 64 KiB payloads): groups/s and MB/s next to raw RocksDB puts of the same
//            sizes with the same fsync per write, measured by the same binary in the same run.
//   restart  builds a run of N questions x D dims with R replay groups of P bytes, closes it
//            and times reopening it (Run::Open: pool, snapshot, events, estimator).
#ifndef DOTS_BENCH_DURABILITY_DURABILITY_H_
#define DOTS_BENCH_DURABILITY_DURABILITY_H_

#include "client/cli/cli.h"

namespace dots::bench {

// Registers the `ingest` and `restart` subcommands; the selected one stores its run in *action.
// Exit codes: 0 done, 1 a step failed (message on stderr).
void AddDurabilityCommands(CLI::App* app, cli::Action* action);

}  // namespace dots::bench

#endif  // DOTS_BENCH_DURABILITY_DURABILITY_H_
