// BM_GemmPeak/eigen and BM_GemmPeak/openblas, and the peak the other benchmarks divide by.
#include "bench/perf/gemm_peak.h"

#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>

namespace dots {
namespace {

constexpr int kSize = 2048;
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

double g_peak_gflops = 0;  // the largest figure measured in this run

void Multiply(GemmLibrary library, const Mat& a, const Mat& b, Mat* c) {
  if (library == GemmLibrary::kEigen) {
    c->noalias() = a * b;
  } else {  // column-major, as Eigen stores them
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, kSize, kSize, kSize, 1.0f, a.data(),
                kSize, b.data(), kSize, 0.0f, c->data(), kSize);
  }
}

void BM_GemmPeak(benchmark::State& state, GemmLibrary library) {
  const Mat a = Mat::Random(kSize, kSize), b = Mat::Random(kSize, kSize);
  Mat c(kSize, kSize);
  Multiply(library, a, b, &c);  // warm-up: page in c, start the threads
  const double start = omp_get_wtime();
  for (auto _ : state) {
    Multiply(library, a, b, &c);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  const double gflops =
      2.0 * kSize * kSize * kSize * 1e-9 * state.iterations() / (omp_get_wtime() - start);
  state.counters["GFLOP/s"] = gflops;
  state.counters["threads"] = omp_get_max_threads();
  g_peak_gflops = std::max(g_peak_gflops, gflops);
}
BENCHMARK_CAPTURE(BM_GemmPeak, eigen, GemmLibrary::kEigen)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_GemmPeak, openblas, GemmLibrary::kOpenBlas)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

double MeasureGemmGflops(GemmLibrary library, int reps) {
  const Mat a = Mat::Random(kSize, kSize), b = Mat::Random(kSize, kSize);
  Mat c(kSize, kSize);
  Multiply(library, a, b, &c);
  const double start = omp_get_wtime();
  for (int i = 0; i < reps; ++i) Multiply(library, a, b, &c);
  return 2.0 * kSize * kSize * kSize * reps * 1e-9 / (omp_get_wtime() - start);
}

double GemmPeakGflops() {
  if (g_peak_gflops > 0) return g_peak_gflops;
  g_peak_gflops = std::max(MeasureGemmGflops(GemmLibrary::kEigen, 3),
                           MeasureGemmGflops(GemmLibrary::kOpenBlas, 3));
  return g_peak_gflops;
}

}  // namespace dots
