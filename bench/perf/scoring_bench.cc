// The estimator's scoring round against the machine's own GEMM peak, in one binary:
//
//   OMP_WAIT_POLICY=passive dots-perf --benchmark_filter='BM_GemmPeak|BM_ScoringRound'
//
// BM_GemmPeak/eigen, BM_GemmPeak/openblas (bench/perf/gemm_peak.cc): the ceiling, the faster
// of the two float 2048^3 GEMMs the binary has.
// BM_ScoringRound/N: one round of the paper's estimator over N pool questions with cached query
// projections: ProjectRef of K = 256 reference embeddings (D = 1536 -> h = 896, 3 layers), the
// attention pass (S = Q R^T per row block, row softmax, weighted label sum) and the
// group_logit_temp head for every question. Random data (speed does not depend on values).
// Counters:
//   GFLOP/s   = (2*N*K*h [the score GEMM] + 2*N*K [the weighted label sum]) / wall time. The
//               reference projection (~1.5 GFLOP), softmax exps and the head are NOT counted,
//               though their time is included, so this understates the GEMM's own rate.
//   peak_frac = GFLOP/s over the GEMM peak of the same run (GemmPeakGflops: the faster of
//               Eigen and OpenBLAS), so it cannot exceed 1 by the peak's fault.
//   bytes_per_question = what the scorer holds per pool question (here h floats of projection).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench/perf/gemm_peak.h"
#include "core/estimation/adapter.h"
#include "core/estimation/similarity.h"
#include "core/types.h"
#include "core/util/random.h"

namespace dots {

namespace {

constexpr int kInputDim = 1536;
constexpr int kHidden = 896;
constexpr int kLayers = 3;
constexpr int64_t kRefs = 256;

FloatMatrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  FloatMatrix m(rows, cols);
#pragma omp parallel
  {
    Rng rng(MixSeed(seed, static_cast<uint64_t>(omp_get_thread_num())));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = m.row(r);
      // Roughly unit-variance values, like LayerNorm outputs.
      for (int64_t c = 0; c < cols; ++c) row[c] = static_cast<float>(3.4 * rng.UniformOpen() - 1.7);
    }
  }
  return m;
}

struct ScoringSetup {
  std::shared_ptr<const Adapter> adapter;
  std::unique_ptr<SimilarityScorer> scorer;
  FloatMatrix ref_embeddings;  // K x D
  std::vector<int64_t> ref_indices;
  std::vector<float> ref_labels;
};

// Built once per N and kept: generating 1M x 896 projections takes seconds.
ScoringSetup* GetSetup(int64_t n) {
  static std::map<int64_t, std::unique_ptr<ScoringSetup>> setups;
  auto& slot = setups[n];
  if (slot != nullptr) return slot.get();
  setups.clear();  // keep only one pool in memory (the 1M one is 3.6 GB)
  auto& fresh = setups[n];
  fresh = std::make_unique<ScoringSetup>();
  auto adapter = Adapter::FromTensors(
      MakeRandomAdapterTensors(kInputDim, kHidden, kLayers, CalibrationHead::kGroupLogitTemp, 7),
      "benchmark");
  if (!adapter.ok()) return nullptr;
  fresh->adapter = *adapter;
  auto scorer = SimilarityScorer::CreateFromProjections(fresh->adapter, FloatMatrix(),
                                                        RandomMatrix(n, kHidden, 11));
  if (!scorer.ok()) return nullptr;
  fresh->scorer = std::move(*scorer);
  fresh->ref_embeddings = RandomMatrix(kRefs, kInputDim, 13);
  Rng rng(17);
  fresh->ref_indices.resize(kRefs);
  std::iota(fresh->ref_indices.begin(), fresh->ref_indices.end(), 0);
  for (int64_t& index : fresh->ref_indices) index = index * (n / kRefs);  // distinct, spread out
  for (int64_t j = 0; j < kRefs; ++j) fresh->ref_labels.push_back(rng.Below(9) / 8.0f);
  return fresh.get();
}

// One round as described in the file comment; top_k = 0 is the paper's default (all K).
// With pass_only, just the attention pass (PredictProjected), without projecting the references
// or applying the head.
void RunScoringRound(benchmark::State& state, int top_k, bool pass_only = false) {
  const int64_t n = state.range(0);
  ScoringSetup* setup = GetSetup(n);
  if (setup == nullptr) {
    state.SkipWithError("setup failed");
    return;
  }
  std::vector<float> base(n), calibrated(n);
  const LabelStats stats = ComputeLabelStats(setup->ref_labels);
  const SimilarityOptions opts{.tau = setup->adapter->tau(), .top_k = top_k};
  FloatMatrix ref_proj;
  setup->adapter->ProjectRef(setup->ref_embeddings, &ref_proj);
  const double start = omp_get_wtime();
  for (auto _ : state) {
    if (!pass_only) setup->adapter->ProjectRef(setup->ref_embeddings, &ref_proj);
    const absl::Status status = setup->scorer->PredictProjected(
        setup->ref_indices, ref_proj, setup->ref_labels, opts, absl::MakeSpan(base));
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
    if (pass_only) continue;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      calibrated[i] = static_cast<float>(setup->adapter->Calibrate(base[i], stats.mean, stats.std));
    }
    benchmark::DoNotOptimize(calibrated.data());
  }
  const double flops = 2.0 * n * kRefs * kHidden + 2.0 * n * kRefs;
  const double gflops = flops * 1e-9 * state.iterations() / (omp_get_wtime() - start);
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_frac"] = gflops / GemmPeakGflops();
  state.counters["bytes_per_question"] = static_cast<double>(setup->scorer->BytesPerQuestion());
}

void BM_ScoringRound(benchmark::State& state) { RunScoringRound(state, 0); }
BENCHMARK(BM_ScoringRound)
    ->Arg(10000)
    ->Arg(100000)
    ->Arg(1000000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The attention pass alone (no reference projection, no head), for N = 10k.
void BM_ScoringPassOnly(benchmark::State& state) { RunScoringRound(state, 0, true); }
BENCHMARK(BM_ScoringPassOnly)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

// Projection throughput (the per-round reference projection at 256 rows; the one-off query
// projection of the pool at 16384 rows): GFLOP/s = 2 * rows * (D*h + 2*h*h) / time.
void BM_Project(benchmark::State& state) {
  const int64_t rows = state.range(0);
  auto adapter = Adapter::FromTensors(
      MakeRandomAdapterTensors(kInputDim, kHidden, kLayers, CalibrationHead::kGroupLogitTemp, 7),
      "benchmark");
  if (!adapter.ok()) {
    state.SkipWithError("adapter failed");
    return;
  }
  const FloatMatrix x = RandomMatrix(rows, kInputDim, 19);
  FloatMatrix out;
  const double start = omp_get_wtime();
  for (auto _ : state) {
    (*adapter)->ProjectRef(x, &out);
    benchmark::DoNotOptimize(out.data.data());
  }
  const double flops =
      2.0 * rows * (double{kInputDim} * kHidden + double{kLayers - 1} * kHidden * kHidden);
  const double gflops = flops * 1e-9 * state.iterations() / (omp_get_wtime() - start);
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_frac"] = gflops / GemmPeakGflops();
}
BENCHMARK(BM_Project)->Arg(256)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime();

// The optional top-k path (FAISS IndexFlatIP over the K reference projections), top_k = 32;
// GFLOP/s counts the same useful work as above, for comparison.
void BM_ScoringRoundTopK(benchmark::State& state) { RunScoringRound(state, 32); }
BENCHMARK(BM_ScoringRoundTopK)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace dots
