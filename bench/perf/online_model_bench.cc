// The cost of the online difficulty model a run retrains before every plan (docs/design.md §2.6),
// against the paper's step time:
//
//   OMP_WAIT_POLICY=passive dots-perf --benchmark_filter='BM_OnlineModelPlan'
//
// BM_OnlineModelPlan/N/L: what RefreshOnlineModelLocked does for a pool of N questions of
// dimension 1536 with L of them observed: TrainOnlineModel from zero (the full probe plus 5
// out-of-fold probes, at most 4,096 labels: the estimator.model defaults) and the probe's
// prediction of the whole pool. A run of 100,000 questions at the paper's pace labels 1,280
// questions a round, so after four rounds every training is at the 4,096-label cap.
// Counters:
//   seconds      wall time of one training plus the pool prediction
//   train_s      of which the training (all folds)
//   step_frac    seconds over the paper's 60 s step (the target is <= 0.1)
//   bytes_per_q  memory the model adds per pool question: its prediction of every question
//                (float32), plus its weights and out-of-fold predictions spread over the pool
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/estimation/history.h"
#include "core/estimation/online_model.h"
#include "core/types.h"
#include "core/util/random.h"

namespace dots {
namespace {

constexpr int kDim = 1536;
constexpr double kStepSeconds = 60;  // the paper's pace: a step of 512 questions a minute

// Embeddings whose first coordinates carry a difficulty signal, and histories of the first
// `labelled` questions observed at versions spread over the last 8.
void MakeRun(int64_t n, int64_t labelled, FloatMatrix* embeddings,
             std::vector<QuestionHistory>* histories) {
  *embeddings = FloatMatrix(n, kDim);
#pragma omp parallel
  {
    Rng rng(MixSeed(13, static_cast<uint64_t>(omp_get_thread_num())));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      float* row = embeddings->row(r);
      for (int c = 0; c < kDim; ++c) row[c] = static_cast<float>(rng.UniformOpen() - 0.5);
    }
  }
  histories->assign(static_cast<size_t>(n), QuestionHistory());
  Rng rng(17);
  for (int64_t q = 0; q < labelled; ++q) {
    const float* row = embeddings->row(q);
    const double logit = 4 * (row[0] + row[1] - row[2]);
    const double p = 1 / (1 + std::exp(-logit));
    QuestionHistory& h = (*histories)[q];
    for (int i = 0; i < 8; ++i) (rng.UniformOpen() < p ? h.successes : h.failures) += 1;
    h.observations = 1;
    h.last_version = 8 - static_cast<int64_t>(q % 8);
    h.last_rate = h.successes / 8;
  }
}

void BM_OnlineModelPlan(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int64_t labelled = state.range(1);
  FloatMatrix embeddings;
  std::vector<QuestionHistory> histories;
  MakeRun(n, labelled, &embeddings, &histories);
  OnlineModelOptions options;
  options.warm_start = false;  // as a run trains it
  std::vector<float> predictions(static_cast<size_t>(n));
  double seconds = 0, train_seconds = 0, loss = 0;
  int64_t labels = 0, oof = 0;
  for (auto _ : state) {
    const double t0 = omp_get_wtime();
    absl::StatusOr<OnlineModel> model =
        TrainOnlineModel(embeddings, histories, /*policy_version=*/8, options, nullptr);
    const double t1 = omp_get_wtime();
    if (!model.ok()) {
      state.SkipWithError(std::string(model.status().message()).c_str());
      return;
    }
    absl::Status predicted = model->probe.PredictAll(embeddings, absl::MakeSpan(predictions));
    seconds += omp_get_wtime() - t0;
    train_seconds += t1 - t0;
    if (!predicted.ok()) {
      state.SkipWithError(std::string(predicted.message()).c_str());
      return;
    }
    loss = model->training_loss;
    labels = model->labels;
    oof = static_cast<int64_t>(model->oof_questions.size());
    benchmark::DoNotOptimize(predictions.data());
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters["seconds"] = seconds / iterations;
  state.counters["train_s"] = train_seconds / iterations;
  state.counters["step_frac"] = seconds / iterations / kStepSeconds;
  state.counters["labels"] = static_cast<double>(labels);
  state.counters["loss"] = loss;
  // Predictions of the pool, plus weights and standardisation (3 D floats) and the
  // out-of-fold (question, prediction) pairs, spread over the pool.
  state.counters["bytes_per_q"] =
      4.0 + (3.0 * kDim * 4 + static_cast<double>(oof) * 12) / static_cast<double>(n);
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK(BM_OnlineModelPlan)
    ->Args({100000, 1280})
    ->Args({100000, 4096})
    ->Args({100000, 20000})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);

}  // namespace
}  // namespace dots
