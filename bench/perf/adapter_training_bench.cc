// The cost of learning the paper adapter online, against the machine's GEMM peak and the
// paper's step time, in one binary:
//
//   OMP_WAIT_POLICY=passive dots-perf
//   --benchmark_filter='BM_GemmPeak|BM_OnlineAdapterPass|BM_ReprojectPool'
//
// BM_OnlineAdapterPass/L/S: one TrainAdapter call (the online pass a run's background trainer
// makes between rounds) warm-started from an adapter of the released size (D = 1536, h = 896,
// 3 layers), one epoch over L labels from S sources, batch 256, 256 references, dropout 0.1.
// A run of 100,000 questions at the paper's pace (512 questions a step, 2 steps a round, 256
// reference questions) labels 1,280 questions a round: L = 1280 is a pass over the last round,
// L = 5120 over the last four; S = 4 gives each round its own source (policy version), so every
// batch samples and projects 4 x 256 references; S = 1 pools them.
// BM_ReprojectPool/N: after an update the run re-projects its pool through the new query
// projection (N = 100,000 questions of dimension 1536), what paper-mode scoring caches.
// Counters:
//   GFLOP/s      useful flops / wall time (TrainableAdapter::StepFlops per step; 2 N (D h +
//                2 h^2) for the projection)
//   peak_frac    GFLOP/s over the GEMM peak of the same binary (GemmPeakGflops: the faster of
//                Eigen's and OpenBLAS's GEMM, from BM_GemmPeak or measured on demand)
//   step_frac    wall time over the paper's 60 s step (the target is <= 0.1 for the pass)
//   bytes_per_q  (BM_ReprojectPool) what the trained adapter adds per pool question in the
//                scorer: h float32 query projections (the embeddings are kept with any adapter)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/perf/gemm_peak.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_training.h"
#include "core/types.h"
#include "core/util/random.h"

namespace dots {
namespace {

constexpr int kInputDim = 1536;
constexpr int kHidden = 896;
constexpr int kLayers = 3;
constexpr double kStepSeconds = 60;  // the paper's pace: a step of 512 questions a minute

FloatMatrix Embeddings(int64_t rows, uint64_t seed) {
  FloatMatrix m(rows, kInputDim);
#pragma omp parallel
  {
    Rng rng(MixSeed(seed, static_cast<uint64_t>(omp_get_thread_num())));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = m.row(r);
      for (int c = 0; c < kInputDim; ++c) row[c] = static_cast<float>(rng.UniformOpen() - 0.5);
    }
  }
  return m;
}

std::shared_ptr<const Adapter> ReleasedSizeAdapter() {
  static const std::shared_ptr<const Adapter> adapter = [] {
    auto a = Adapter::FromTensors(
        MakeRandomAdapterTensors(kInputDim, kHidden, kLayers, CalibrationHead::kGroupLogitTemp, 7),
        "benchmark");
    return a.ok() ? *a : nullptr;
  }();
  return adapter;
}

void SetRatios(benchmark::State& state, double flops, double seconds) {
  const double gflops = flops * 1e-9 / seconds;
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_frac"] = gflops / GemmPeakGflops();
  state.counters["step_frac"] = seconds / kStepSeconds;
  state.counters["threads"] = omp_get_max_threads();
}

void BM_OnlineAdapterPass(benchmark::State& state) {
  const int64_t labels_count = state.range(0);
  const int sources = static_cast<int>(state.range(1));
  const FloatMatrix embeddings = Embeddings(labels_count, 3);
  std::vector<AdapterLabel> labels;
  Rng rng(5);
  for (int64_t i = 0; i < labels_count; ++i) {
    labels.push_back({i, static_cast<float>(rng.Below(9)) / 8, 1.0f,
                      static_cast<int32_t>(i * sources / labels_count)});
  }
  AdapterTrainingOptions options;
  options.epochs = 1;
  const std::shared_ptr<const Adapter> start = ReleasedSizeAdapter();
  if (start == nullptr) {
    state.SkipWithError("adapter");
    return;
  }
  double flops = 0, seconds = 0, loss = 0;
  for (auto _ : state) {
    const double t0 = omp_get_wtime();
    absl::StatusOr<AdapterTrainingResult> r =
        TrainAdapter(embeddings, labels, start, options, /*seed=*/1);
    seconds += omp_get_wtime() - t0;
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    flops += r->flops;
    loss = r->mean_loss;
    benchmark::DoNotOptimize(r->adapter.get());
  }
  SetRatios(state, flops, seconds);
  state.counters["seconds"] = seconds / static_cast<double>(state.iterations());
  state.counters["loss"] = loss;
}
BENCHMARK(BM_OnlineAdapterPass)
    ->Args({1280, 1})
    ->Args({5120, 1})
    ->Args({5120, 4})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);

void BM_ReprojectPool(benchmark::State& state) {
  const int64_t n = state.range(0);
  const FloatMatrix embeddings = Embeddings(n, 9);
  const std::shared_ptr<const Adapter> adapter = ReleasedSizeAdapter();
  FloatMatrix out;
  double seconds = 0;
  for (auto _ : state) {
    const double t0 = omp_get_wtime();
    adapter->ProjectQuery(embeddings, &out);
    seconds += omp_get_wtime() - t0;
    benchmark::DoNotOptimize(out.data.data());
  }
  const double flops = 2.0 * static_cast<double>(n) *
                       (double{kInputDim} * kHidden + double{kLayers - 1} * kHidden * kHidden) *
                       static_cast<double>(state.iterations());
  SetRatios(state, flops, seconds);
  state.counters["seconds"] = seconds / static_cast<double>(state.iterations());
  state.counters["bytes_per_q"] = 4.0 * adapter->output_dim();
}
BENCHMARK(BM_ReprojectPool)->Arg(100000)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace dots
