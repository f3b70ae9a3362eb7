// The machine's float GEMM peak, shared by the dots-perf benchmarks that report a fraction of
// it: the faster of the two single-precision GEMMs this binary has, Eigen's and OpenBLAS's
// (the one the estimator calls), each a 2048^3 product on all OpenMP threads, measured in the
// same run. A fraction of it therefore cannot exceed 1 because the peak picked the slower
// library.
#ifndef DOTS_BENCH_PERF_GEMM_PEAK_H_
#define DOTS_BENCH_PERF_GEMM_PEAK_H_

namespace dots {

enum class GemmLibrary { kEigen, kOpenBlas };

// GFLOP/s of one timed loop of `reps` 2048^3 float GEMMs of `library` after one warm-up product.
// Blocks for reps + 1 GEMMs (about 0.1 s each at 150 GFLOP/s).
double MeasureGemmGflops(GemmLibrary library, int reps);

// The largest figure BM_GemmPeak measured in this run, or, when it has not run (filtered out or
// registered later), a measurement of both libraries (3 repetitions each), cached. Blocks the
// first time only.
double GemmPeakGflops();

}  // namespace dots

#endif  // DOTS_BENCH_PERF_GEMM_PEAK_H_
