// SelectQuestions over a pool of N questions, budget 1024 (the paper's round-0 draw, mu B).
// Target (brief): kDots at N = 10^6 within 30 ms on the 2-core build machine.
//
//   dots-perf --benchmark_filter=BM_Select
//
// p_hat is uniform on [-0.1, 1.1] (unclipped OLS output); the _Sorted variant feeds the pool in
// ascending p_hat, the worst order for the running top-k threshold.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/selection/selector.h"
#include "core/util/random.h"

namespace dots {
namespace {

constexpr int64_t kBudget = 1024;

std::vector<float> MakePool(int64_t n, bool sorted) {
  Rng rng(20250605);
  std::vector<float> p_hat(n);
  for (float& p : p_hat) p = static_cast<float>(-0.1 + 1.2 * rng.UniformOpen());
  if (sorted) std::sort(p_hat.begin(), p_hat.end());
  return p_hat;
}

void RunSelect(benchmark::State& state, SelectorStrategy strategy, double tau, bool sorted) {
  const std::vector<float> p_hat = MakePool(state.range(0), sorted);
  SelectorInput input;
  input.p_hat = p_hat;
  SelectorOptions options;
  options.strategy = strategy;
  options.tau = tau;
  uint64_t seed = 0;
  for (auto _ : state) {
    absl::StatusOr<std::vector<int64_t>> picked = SelectQuestions(input, kBudget, options, ++seed);
    if (!picked.ok() || static_cast<int64_t>(picked->size()) != kBudget) {
      state.SkipWithError("SelectQuestions failed");
      break;
    }
    benchmark::DoNotOptimize(picked->data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_SelectDots(benchmark::State& state) {
  RunSelect(state, SelectorStrategy::kDots, 1e-3, false);
}
void BM_SelectDots_Sorted(benchmark::State& state) {
  RunSelect(state, SelectorStrategy::kDots, 1e-3, true);
}
// A warm temperature prunes less: every question's Gumbel tail can reach the threshold.
void BM_SelectDots_Tau1(benchmark::State& state) {
  RunSelect(state, SelectorStrategy::kDots, 1.0, false);
}
void BM_SelectUniform(benchmark::State& state) {
  RunSelect(state, SelectorStrategy::kUniform, 1e-3, false);
}
void BM_SelectThompson(benchmark::State& state) {
  RunSelect(state, SelectorStrategy::kThompson, 1e-3, false);
}

BENCHMARK(BM_SelectDots)->Arg(10240)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SelectDots_Sorted)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SelectDots_Tau1)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SelectUniform)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SelectThompson)->Arg(1000000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace dots
