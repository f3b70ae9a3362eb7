// dots-bench soak: many trainer ranks doing full training steps against a real dots-server
// process for a long time; fails on any error, on resident memory growing >= 5 % after
// warm-up, or on the last minute's p99 step latency exceeding 1.5x the first minute's.
#ifndef DOTS_BENCH_SOAK_SOAK_H_
#define DOTS_BENCH_SOAK_SOAK_H_

namespace dots::bench {

int Soak(int argc, char** argv);

}  // namespace dots::bench

#endif  // DOTS_BENCH_SOAK_SOAK_H_
