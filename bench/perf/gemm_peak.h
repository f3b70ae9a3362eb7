// The machine's float GEMM peak, shared by the dots-perf benchmarks that report a fraction of
// it (scoring_bench.cc defines both).
#ifndef DOTS_BENCH_PERF_GEMM_PEAK_H_
#define DOTS_BENCH_PERF_GEMM_PEAK_H_

namespace dots {

// GFLOP/s of BM_GemmPeak when it ran, else 0.
extern double g_gemm_peak_gflops;

// BM_GemmPeak's figure, or (when it has not run, e.g. filtered out or registered later) a
// measurement of the same Eigen float 2048^3 GEMM, 3 repetitions, on all OpenMP threads.
// Blocks for about 3 GEMMs the first time; cached afterwards.
double GemmPeakGflops();

}  // namespace dots

#endif  // DOTS_BENCH_PERF_GEMM_PEAK_H_
