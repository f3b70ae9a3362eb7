#include "core/estimation/adapter_eval.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/estimator.h"
#include "core/formats/pool.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

constexpr uint64_t kEvalSplitTag = 0x65766131;  // "eva1"
constexpr double kIntervalLow = 0.125, kIntervalHigh = 0.875;

}  // namespace

PredictionMetrics ComputePredictionMetrics(absl::Span<const double> predicted,
                                           absl::Span<const double> truth) {
  PredictionMetrics m;
  const size_t n = std::min(predicted.size(), truth.size());
  m.count = static_cast<int64_t>(n);
  if (n == 0) return m;
  double mp = 0, mt = 0;
  for (size_t i = 0; i < n; ++i) {
    mp += predicted[i];
    mt += truth[i];
    m.mae += std::abs(predicted[i] - truth[i]);
  }
  mp /= n;
  mt /= n;
  m.mae /= n;
  double cov = 0, vp = 0, vt = 0;
  for (size_t i = 0; i < n; ++i) {
    cov += (predicted[i] - mp) * (truth[i] - mt);
    vp += (predicted[i] - mp) * (predicted[i] - mp);
    vt += (truth[i] - mt) * (truth[i] - mt);
  }
  m.pearson = (vp > 0 && vt > 0) ? cov / std::sqrt(vp * vt) : 0.0;

  auto in_interval = [](double y) { return y >= kIntervalLow && y <= kIntervalHigh; };
  const size_t b = std::max<size_t>(1, std::min<size_t>(1024, n / 2));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t c) {
    return std::abs(predicted[a] - 0.5) < std::abs(predicted[c] - 0.5);
  });
  size_t hits = 0, all = 0;
  for (size_t i = 0; i < b; ++i) hits += in_interval(truth[order[i]]);
  for (size_t i = 0; i < n; ++i) all += in_interval(truth[i]);
  m.interval_precision = static_cast<double>(hits) / static_cast<double>(b);
  m.interval_base_rate = static_cast<double>(all) / static_cast<double>(n);
  return m;
}

PredictionMetrics AverageMetrics(absl::Span<const PredictionMetrics> metrics) {
  PredictionMetrics out;
  if (metrics.empty()) return out;
  for (const PredictionMetrics& m : metrics) {
    out.count += m.count;
    out.pearson += m.pearson / metrics.size();
    out.mae += m.mae / metrics.size();
    out.interval_precision += m.interval_precision / metrics.size();
    out.interval_base_rate += m.interval_base_rate / metrics.size();
  }
  return out;
}

absl::StatusOr<PredictionMetrics> EvaluatePaperProtocol(std::shared_ptr<const Adapter> adapter,
                                                        const FloatMatrix& embeddings,
                                                        const HeldOutSet& set,
                                                        const PaperProtocolOptions& options) {
  const int64_t n = static_cast<int64_t>(set.rows.size());
  if (n < 4 || set.rates.size() != set.rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat("held-out set \"", set.name, "\": ", n,
                                                   " rows and ", set.rates.size(),
                                                   " rates (need >= 4 of each, as many)"));
  }
  // A pool of the set's questions with their embeddings, for the estimator's paper path.
  Pool pool;
  FloatMatrix x(n, embeddings.cols);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = set.rows[i];
    if (row < 0 || row >= embeddings.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("held-out set \"", set.name, "\": row ", row, " outside the embeddings"));
    }
    if (!(set.rates[i] >= 0 && set.rates[i] <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("held-out set \"", set.name, "\": rate ", set.rates[i], " outside [0, 1]"));
    }
    std::copy_n(embeddings.row(row), embeddings.cols, x.row(i));
    Question q;
    q.key = absl::StrCat("row-", row);
    DOTS_RETURN_IF_ERROR(pool.Add(std::move(q)));
  }
  EstimatorOptions estimator_options;
  estimator_options.mode = EstimatorMode::kPaper;
  estimator_options.attention_tau = options.attention_tau;
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Estimator> estimator,
                        Estimator::Create(pool, std::move(adapter), estimator_options, &x));

  const int64_t k = std::max<int64_t>(2, std::min<int64_t>(options.ref_size, n / 2));
  std::vector<PredictionMetrics> per_seed;
  for (uint64_t seed : options.seeds) {
    DOTS_RETURN_IF_ERROR(estimator->RestoreState(
        EstimatorState{std::vector<QuestionHistory>(static_cast<size_t>(n)), {}, {}}));
    Rng rng(MixSeed(seed, kEvalSplitTag));
    absl::flat_hash_set<int64_t> chosen;  // Floyd's sample of k positions
    for (int64_t j = n - k; j < n; ++j) {
      const int64_t t = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(j + 1)));
      chosen.insert(chosen.contains(t) ? j : t);
    }
    std::vector<int64_t> refs(chosen.begin(), chosen.end());
    std::sort(refs.begin(), refs.end());
    for (int64_t r : refs) {
      DOTS_RETURN_IF_ERROR(estimator->Observe(r, set.rates[r], 1, /*policy_version=*/0));
    }
    DOTS_ASSIGN_OR_RETURN(Estimates estimates, estimator->Estimate(0, refs));
    std::vector<double> predicted, truth;
    for (int64_t i = 0; i < n; ++i) {
      if (chosen.contains(i)) continue;
      predicted.push_back(estimates.p_hat[i]);
      truth.push_back(set.rates[i]);
    }
    per_seed.push_back(ComputePredictionMetrics(predicted, truth));
  }
  return AverageMetrics(per_seed);
}

}  // namespace dots
