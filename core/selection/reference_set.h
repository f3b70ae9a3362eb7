// Choosing a round's reference set: the K questions whose fresh rollouts label the estimator
// (docs/design.md §2.1, §2.4).
//
//   kUniform      K questions uniformly at random without replacement (the paper).
//   kInformative  a quarter of K (coverage_fraction) goes to the questions observed least
//                 recently (never-observed first), so every question's estimate is refreshed
//                 periodically and stale extremes cannot hide a drifting policy; the rest is
//                 drawn without replacement with probability proportional to
//                 P_eff(q)^sharpness, where P_eff is the posterior predictive probability that
//                 a group of G rollouts is informative (0 < successes < G). Reference rollouts
//                 are trained on in inline mode, so reference slots spent on questions that are
//                 almost surely solved by all or by none are wasted compute.
#ifndef DOTS_CORE_SELECTION_REFERENCE_SET_H_
#define DOTS_CORE_SELECTION_REFERENCE_SET_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/estimator.h"

namespace dots {

enum class ReferenceSampling { kUniform, kInformative };

// "uniform" or "informative"; INVALID_ARGUMENT naming the value otherwise.
absl::StatusOr<ReferenceSampling> ParseReferenceSampling(std::string_view name);
std::string_view ReferenceSamplingName(ReferenceSampling sampling);

struct ReferenceSamplingOptions {
  ReferenceSampling strategy = ReferenceSampling::kInformative;
  double coverage_fraction = 0.25;  // in [0, 1]
  double sharpness = 5.0;           // >= 0; 0 makes the informative part uniform
  int group_size = 8;               // G, rollouts per question
};

// Probability that G Bernoulli(p) draws are neither all 1 nor all 0 when p ~ Beta(a, b):
// 1 - E[p^G] - E[(1-p)^G], with E[p^G] = prod_{i<G} (a+i)/(a+b+i). a, b > 0. O(G).
double InformativeProbability(double a, double b, int group_size);

// Draws min(k, eligible) distinct questions, never one flagged in `excluded` (empty or N
// flags). kInformative needs the posterior of `estimates` (beta_a/beta_b) and falls back to
// kUniform when it is absent (kPaper estimates). Deterministic for a seed. O(N + k log k).
// Errors: INVALID_ARGUMENT for k < 0, option values out of range, size mismatches.
absl::StatusOr<std::vector<int64_t>> SampleReferenceSet(const Estimator& estimator,
                                                        const Estimates& estimates, int64_t k,
                                                        const ReferenceSamplingOptions& options,
                                                        absl::Span<const uint8_t> excluded,
                                                        uint64_t seed);

}  // namespace dots

#endif  // DOTS_CORE_SELECTION_REFERENCE_SET_H_
