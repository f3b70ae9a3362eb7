#include "core/selection/reference_set.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/selection/selector.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {

absl::StatusOr<ReferenceSampling> ParseReferenceSampling(std::string_view name) {
  if (name == "uniform") return ReferenceSampling::kUniform;
  if (name == "informative") return ReferenceSampling::kInformative;
  return absl::InvalidArgumentError(absl::StrCat("reference_sampling: unknown strategy \"",
                                                 std::string(name),
                                                 "\" (want \"uniform\" or \"informative\")"));
}

std::string_view ReferenceSamplingName(ReferenceSampling sampling) {
  return sampling == ReferenceSampling::kUniform ? "uniform" : "informative";
}

double InformativeProbability(double a, double b, int group_size) {
  double all_success = 1, all_failure = 1;
  for (int i = 0; i < group_size; ++i) {
    all_success *= (a + i) / (a + b + i);
    all_failure *= (b + i) / (a + b + i);
  }
  return std::clamp(1.0 - all_success - all_failure, 0.0, 1.0);
}

absl::StatusOr<std::vector<int64_t>> SampleReferenceSet(const Estimator& estimator,
                                                        const Estimates& estimates, int64_t k,
                                                        const ReferenceSamplingOptions& options,
                                                        absl::Span<const uint8_t> excluded,
                                                        uint64_t seed) {
  const int64_t n = estimator.size();
  if (k < 0) return absl::InvalidArgumentError(absl::StrFormat("reference_size: %d < 0", k));
  if (!excluded.empty() && static_cast<int64_t>(excluded.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("excluded: %d flags for a pool of %d questions", excluded.size(), n));
  }
  if (!(options.coverage_fraction >= 0 && options.coverage_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reference_coverage_fraction: %g is outside [0, 1]", options.coverage_fraction));
  }
  if (!(std::isfinite(options.sharpness) && options.sharpness >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("reference_sharpness: %g must be finite and >= 0", options.sharpness));
  }
  if (options.group_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("group_size: %d must be >= 1", options.group_size));
  }
  const bool informative = options.strategy == ReferenceSampling::kInformative &&
                           static_cast<int64_t>(estimates.beta_a.size()) == n &&
                           static_cast<int64_t>(estimates.beta_b.size()) == n;
  std::vector<uint8_t> blocked(excluded.begin(), excluded.end());
  blocked.resize(static_cast<size_t>(n), 0);
  std::vector<int64_t> chosen;
  int64_t coverage = 0;
  if (informative) {
    coverage = static_cast<int64_t>(std::llround(options.coverage_fraction * k));
    // Least recently observed first (never observed = version -1), random tie-break.
    Rng rng(MixSeed(seed, 0x636f76 /* "cov" */));
    std::vector<std::tuple<int64_t, uint64_t, int64_t>> order;
    order.reserve(static_cast<size_t>(n));
    for (int64_t q = 0; q < n; ++q) {
      const uint64_t tie = rng();
      if (!blocked[q]) order.emplace_back(estimator.last_policy_version(q), tie, q);
    }
    const int64_t take = std::min<int64_t>(coverage, static_cast<int64_t>(order.size()));
    std::partial_sort(order.begin(), order.begin() + take, order.end());
    for (int64_t i = 0; i < take; ++i) {
      const int64_t q = std::get<2>(order[i]);
      chosen.push_back(q);
      blocked[q] = 1;
    }
  }
  const int64_t rest = k - static_cast<int64_t>(chosen.size());
  if (rest <= 0) return chosen;
  // Gumbel-top-k over logits sharpness * log P_eff, expressed through the selector: with
  // alpha = 0 and tau = 1 its key is -|x| + Gumbel, so x = -sharpness * log P_eff >= 0 gives
  // exactly these logits. Uniform sampling is the selector's kUniform.
  std::vector<float> score(static_cast<size_t>(n), 0.0f);
  SelectorOptions select;
  select.strategy = SelectorStrategy::kUniform;
  if (informative) {
    select.strategy = SelectorStrategy::kDots;
    select.alpha = 0;
    select.tau = 1;
    for (int64_t q = 0; q < n; ++q) {
      const double p =
          InformativeProbability(estimates.beta_a[q], estimates.beta_b[q], options.group_size);
      score[q] = static_cast<float>(-options.sharpness * std::log(std::max(p, 1e-30)));
    }
  }
  SelectorInput input;
  input.p_hat = score;
  input.excluded = blocked;
  DOTS_ASSIGN_OR_RETURN(std::vector<int64_t> drawn,
                        SelectQuestions(input, rest, select, MixSeed(seed, 0x726566 /* "ref" */)));
  chosen.insert(chosen.end(), drawn.begin(), drawn.end());
  return chosen;
}

}  // namespace dots
