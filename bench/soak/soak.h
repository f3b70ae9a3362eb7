// dots-bench soak: many trainer ranks doing full training steps against a real dots-server
// process for a long time; fails on any error, on a leak (the server's heap floor growing 20 % or
// more after warm-up; why this statistic: bench/soak/soak.cc), or on the last minute's p99 step
// latency exceeding 1.5x the first minute's.
#ifndef DOTS_BENCH_SOAK_SOAK_H_
#define DOTS_BENCH_SOAK_SOAK_H_

#include "client/cli/cli.h"

namespace dots::bench {

inline constexpr char kSoakDescription[] =
    "Starts dots-server (temporary state directory) and runs --clients trainer ranks on "
    "loopback, each looping full training steps (NextBatch of its slice, ReportRollouts of "
    "every item with a payload) for --seconds. Passes (exit 0) with zero errors, the server's "
    "heap floor (smallest heap in use, read from its /metrics every second) growing less than "
    "20 % from the first half of the run after a 30 s warm-up to the second, and the p99 step "
    "latency of the last minute within 1.5x the first minute's.";

// Registers the `soak` subcommand; when selected it stores its run in *action.
void AddSoakCommand(CLI::App* app, cli::Action* action);

}  // namespace dots::bench

#endif  // DOTS_BENCH_SOAK_SOAK_H_
