// dots-bench soak: many trainer ranks doing full training steps against a real
// dots-server process for a long time; fails on any error, on resident memory
// growing >= 5 % after warm-up, or on the last minute's p99 step latency
// exceeding 1.5x the first minute's.
#ifndef DOTS_BENCH_SOAK_SOAK_H_
#define DOTS_BENCH_SOAK_SOAK_H_

#include "client/cli/cli.h"

namespace dots::bench {

inline constexpr char kSoakDescription[] =
    "Starts dots-server (temporary state directory) and runs --clients trainer "
    "ranks on "
    "loopback, each looping full training steps (NextBatch of its slice, "
    "ReportRollouts of "
    "every item with a payload) for --seconds. Passes (exit 0) with zero "
    "errors, resident memory "
    "of the server growing < 5 % after warm-up (a quarter of the run, at least "
    "60 s: the medians "
    "of the first and second half of the rest, sampled every 1 s), and the p99 "
    "step latency of "
    "the last minute within 1.5x the first minute's.";

// Registers the `soak` subcommand; when selected it stores its run in *action.
void AddSoakCommand(CLI::App *app, cli::Action *action);

}  // namespace dots::bench

#endif  // DOTS_BENCH_SOAK_SOAK_H_
