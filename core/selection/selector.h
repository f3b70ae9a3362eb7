// Question selection for one DOTS round: draws `budget` distinct questions from a pool of N
// given each question's predicted success rate p_hat (docs/design.md §2.2, docs/paper.md §3).
//
// The paper's distribution is pi(q) ∝ exp(-|p_hat_q - alpha| / tau), sampled without
// replacement. We draw it with the Gumbel-top-k trick: give every question the key
// logit_q + G_q with G_q ~ Gumbel(0, 1) and take the `budget` largest keys; sorting the winners by
// key gives exactly the order in which sequential sampling without replacement would draw them.
// Nothing is ever exponentiated, so no tau and no p_hat (even outside [0, 1]) can overflow.
#ifndef DOTS_CORE_SELECTION_SELECTOR_H_
#define DOTS_CORE_SELECTION_SELECTOR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dots {

enum class SelectorStrategy {
  // pi(q) ∝ exp(-|p_hat - alpha| / tau) without replacement (the paper's DOTS).
  kDots,
  // Uniform without replacement over the eligible questions (the GRPO baseline).
  kUniform,
  // The `budget` questions with the smallest |p_hat - alpha|; exact ties are broken uniformly at
  // random. This is the tau -> 0 limit of kDots.
  kGreedy,
  // Uniform among questions with p_hat in [band_lo, band_hi]. When fewer than `budget` are in
  // the band, the rest are the out-of-band questions closest to the band (smallest
  // max(band_lo - p, p - band_hi)), ties broken at random; in-band questions always come first.
  kBand,
  // Thompson sampling: draw p_q ~ Beta(a_q, b_q) for every question, then greedy on
  // |p_q - alpha| (see SelectorInput::beta_a for the default posterior).
  kThompson,
  // DOTS on the posterior: pi(q) ∝ exp(-d_q / tau) without replacement, with
  // d_q = sqrt(E[(p - alpha)^2]) under a Beta posterior of mean m = clamp(p_hat, 0, 1) and
  // concentration kappa = beta_a + beta_b: d_q^2 = (m - alpha)^2 + m (1 - m) / (kappa + 1). A
  // question whose success rate is known (kappa -> infinity) has the paper's |p_hat - alpha|; one
  // whose estimate rests on little evidence (a prediction from similar questions, a stale
  // history) is further from the target by its posterior spread. At alpha = 0.5, d_q^2 =
  // 0.25 - E[p (1 - p)], so this ranks by the expected GRPO gradient signal of Theorem 1 under the
  // posterior. Without beta_a / beta_b (paper-mode estimates) it is kDots.
  kPosterior,
};

// "dots", "uniform", "greedy", "band", "thompson", "posterior" (exact, lower case).
// INVALID_ARGUMENT otherwise. O(1).
absl::StatusOr<SelectorStrategy> ParseSelectorStrategy(std::string_view name);
// The inverse of ParseSelectorStrategy. O(1).
std::string_view SelectorStrategyName(SelectorStrategy strategy);

struct SelectorOptions {
  SelectorStrategy strategy = SelectorStrategy::kDots;
  // Target success rate. Must be finite.
  double alpha = 0.5;
  // Temperature of pi(q) ∝ exp(-|p_hat - alpha| / tau); finite and > 0. Used by kDots and
  // kPosterior only, but always validated.
  double tau = 1e-3;
  // kBand: eligible questions have p_hat in [band_lo, band_hi], the bounds rounded to float (the
  // precision of p_hat). Finite, band_lo <= band_hi.
  double band_lo = 0.2;
  double band_hi = 0.8;
};

struct SelectorInput {
  // N predicted success rates. Any finite value is allowed (the unclipped OLS calibration can
  // leave [0, 1]); NaN or infinity anywhere is an error, also on excluded questions.
  absl::Span<const float> p_hat;
  // Empty, or N flags: nonzero = never select (leased, cooling down, reference question).
  absl::Span<const uint8_t> excluded;
  // kThompson and kPosterior: N Beta posterior parameters each (finite, > 0), or both empty.
  // kPosterior uses only their sum, the posterior's concentration. For kThompson, when empty,
  // Thompson uses the pseudo-count posterior a = 1 + 8 p, b = 1 + 8 (1 - p) with
  // p = clamp(p_hat, 0, 1): the p_hat of one G = 8 rollout group on a uniform prior. The sizes are
  // validated for every strategy; the values only for kThompson.
  absl::Span<const float> beta_a;
  absl::Span<const float> beta_b;
};

// Draws min(budget, number of eligible questions) distinct indices into input.p_hat, in draw
// order: element 0 is the question sequential sampling without replacement would draw first (for
// kGreedy / kBand / kThompson: the highest priority first).
//
// Deterministic for a given (input, budget, options, seed), including across thread counts: the
// random numbers come from dots::Rng streams keyed by (seed, block of 4096 questions), one draw
// per question whether it is excluded or not (kThompson: one stream per question), so a
// question's random numbers depend only on the seed and its index, never on how many threads
// ran or which other questions were excluded.
//
// Cost: O(N) time plus O(c log b) for the c candidates that survive pruning (c is a small
// multiple of the budget b in typical pools), and O(b) memory (a candidate buffer of at most
// max(2 b, b + 256) entries per thread); nothing proportional to N is allocated. kDots evaluates
// its two logarithms only for questions whose key could still reach the current b-th best (a
// cheap integer bound on the Gumbel tail decides), and kUniform evaluates none. kThompson draws
// two Gamma variates per eligible question; it alone runs over OpenMP threads (for N >= 16384),
// the others on the calling thread. Measured at N = 10^6, b = 1024 on the 2-core build machine
// (bench/perf/selector_bench.cc): kDots 4.4 ms (tau = 1e-3 or 1), kUniform 2.6 ms, kThompson
// 28 ms on 2 threads. Never blocks on anything but its own threads.
//
// Errors (INVALID_ARGUMENT, naming the field): an options.strategy outside the enum; budget < 0;
// excluded / beta_a / beta_b of a size other than 0 or N (beta_a and beta_b must match); a
// non-finite p_hat; non-finite alpha, band_lo or band_hi; band_lo > band_hi; tau not finite or <=
// 0; for kThompson and kPosterior, a beta parameter that is not finite and > 0.
absl::StatusOr<std::vector<int64_t>> SelectQuestions(const SelectorInput& input, int64_t budget,
                                                     const SelectorOptions& options, uint64_t seed);

}  // namespace dots

#endif  // DOTS_CORE_SELECTION_SELECTOR_H_
