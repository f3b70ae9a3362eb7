// The difficulty estimator: p_hat(q), the current policy's predicted success rate of every pool
// question (docs/design.md §2.1). Three modes:
//
//   kPaper    exactly the released code path of Sun et al.: attention over the current reference
//             set only, the adapter's calibration head, OLS of the reference labels on the
//             references' own predictions (each reference attends to itself), no clipping, no
//             history. For A/B comparisons.
//   kHistory  per-question Beta posterior over the question's own decayed outcomes with a prior
//             pseudo-count (MoPPS-style); no similarity.
//   kDefault  the history posterior whose prior mean is a calibrated similarity prediction:
//             leave-one-out attention over every recently observed question, stacked with the
//             question's static prior by least squares on the labeled set and clipped to [0, 1];
//             then a linear recalibration of the posterior mean on the outcomes of the last few
//             policy versions (which corrects the lag of decayed counts while the policy drifts).
//
// All success rates are in [0, 1] (docs/design.md speaks p; the paper's difficulty is 1 - p).
//
// Thread-compatibility: const methods may run concurrently; Observe and Estimate need external
// synchronisation (the run that owns an Estimator holds its lock).
#ifndef DOTS_CORE_ESTIMATION_ESTIMATOR_H_
#define DOTS_CORE_ESTIMATION_ESTIMATOR_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_online.h"
#include "core/estimation/history.h"
#include "core/estimation/online_model.h"
#include "core/estimation/similarity.h"
#include "core/formats/pool.h"

namespace dots {

enum class EstimatorMode { kPaper, kHistory, kDefault };

// "paper", "history", "default"; INVALID_ARGUMENT naming the value otherwise.
absl::StatusOr<EstimatorMode> ParseEstimatorMode(std::string_view name);
std::string_view EstimatorModeName(EstimatorMode mode);

struct EstimatorOptions {
  EstimatorMode mode = EstimatorMode::kDefault;
  // Attention temperature. Unset: the adapter's own tau (metadata), or 0.05 for the identity
  // projection, whose scores are cosine similarities in [-1, 1].
  std::optional<float> attention_tau;
  // Keep only the top_k attention scores per query (0 = all). Unset: the adapter's metadata.
  std::optional<int> top_k;
  // kDefault: the labeled set holds every question observed within the last label_window policy
  // versions (0 = every question ever observed).
  int64_t label_window = 0;
  // lambda: a question's success and failure counts are multiplied by decay^(v - v_last) before
  // an observation at version v, and when estimating at version v.
  double decay = 0.95;
  // n0: pseudo-count (in rollouts) of the similarity / prior mean in the Beta posterior.
  double prior_strength = 1.0;
  // kDefault: at most this many labeled questions (the most recently observed) enter the
  // similarity pass, which bounds its cost at O(N * max_labeled * h) on huge pools.
  int64_t max_labeled = 4096;
  // kDefault: policy versions of (estimate, outcome) pairs used to recalibrate the posterior
  // mean; 0 disables the recalibration.
  int64_t recalibration_window = 3;
  // Use the questions' static priors (the pool's `prior` field). False reproduces a pool that
  // has none, for ablations.
  bool use_priors = true;
  // kDefault: the difficulty model learned online from the run's outcomes (a logistic probe on
  // the embeddings, core/estimation/online_model.h), one more feature of the similarity stack.
  // The run trains it between rounds and hands it over with SetOnlineModel; without one (or
  // with enabled = false) the stack is as before.
  OnlineModelOptions model;
  // kPaper only: fine-tune the adapter on the run's own outcomes before each round plan
  // (core/estimation/adapter_online.h). Off by default, which keeps paper mode bit-exact.
  AdapterOnlineOptions adapter_training;

  // Checks ranges; INVALID_ARGUMENT naming the field (e.g. "estimator.decay: 1.5 is outside
  // (0, 1]").
  absl::Status Validate() const;
};

// The result of one Estimate call. Shapes: every vector has N = pool size entries.
struct Estimates {
  int64_t policy_version = 0;
  std::vector<float> p_hat;  // predicted success rate; kPaper values may leave [0, 1]
  // Beta posterior of each question's success rate, in rollouts (a = successes + n0 * prior
  // mean, b = failures + n0 * (1 - prior mean)); used by Thompson selection and by informative
  // reference sampling. Empty in kPaper mode, which has no posterior.
  std::vector<float> beta_a;
  std::vector<float> beta_b;
  int64_t labeled = 0;  // size of the labeled set this estimate used
};

// One (estimate in force, observed rate) pair for the posterior recalibration.
struct EstimatorOutcome {
  int64_t version;
  float estimate;
  float observed;
};

// Everything an estimator learned from observations and its own estimates: what survives a
// rebuild over a grown pool and a restart (saved in the run snapshot, core/run/run_persist.cc).
struct EstimatorState {
  std::vector<QuestionHistory> histories;  // one per question (may be fewer than the pool)
  std::vector<float> last_estimate;        // raw p_hat of the latest Estimate, or empty
  std::vector<EstimatorOutcome> outcomes;  // oldest first
};

class Estimator {
 public:
  // Builds an estimator over `pool` (which must outlive it and keep its size). `adapter` may be
  // null: then the identity projection over the pool's embeddings is used. A pool without
  // embeddings is fine for kHistory; kPaper and kDefault need embeddings (see
  // EnsureEmbeddings). Cost: one projection of every pool embedding through the adapter's
  // query projection (O(N * D * h) flops), cached for the estimator's lifetime.
  // Errors: INVALID_ARGUMENT for bad options or an adapter whose input dimension differs from
  // the pool's embedding dimension (naming both).
  // `embeddings`, when given, replaces the pool's own (e.g. text embeddings of a pool that has
  // none); it must have one row per question and outlive nothing (it is projected and dropped).
  static absl::StatusOr<std::unique_ptr<Estimator>> Create(const Pool& pool,
                                                           std::shared_ptr<const Adapter> adapter,
                                                           const EstimatorOptions& options,
                                                           const FloatMatrix* embeddings = nullptr);

  const EstimatorOptions& options() const { return options_; }
  int64_t size() const { return static_cast<int64_t>(state_.size()); }

  // Records one rollout group of `question`: `successes` rewarded rollouts out of `trials`
  // (fractional rewards allowed: successes is the sum of rewards in [0, 1]) under policy
  // version `policy_version`. O(1). Observations at a version older than the question's latest
  // are accepted (counted without extra decay). Errors: INVALID_ARGUMENT for an index out of
  // range, trials < 1, successes outside [0, trials] or not finite, a negative version;
  // nothing changes on error.
  absl::Status Observe(int64_t question, double successes, int trials, int64_t policy_version);

  // Predicts every question for policy version `policy_version`. `reference_set` is the
  // current round's reference questions: kPaper attends over exactly these (labels = their
  // latest observed success rates; questions never observed are skipped); the other modes
  // ignore it. Cost: kHistory O(N); kPaper O(N * K * h); kDefault O(N * |L| * h) for the
  // labeled set L plus an O(|L| * f^2) least-squares fit. Blocks the caller; no locks.
  // Before any usable label exists every mode falls back to the cold start: the question's
  // prior, else the pool's mean prior, else 0.5. Errors: INVALID_ARGUMENT for a reference
  // index out of range or repeated.
  absl::StatusOr<Estimates> Estimate(int64_t policy_version,
                                     absl::Span<const int64_t> reference_set = {});

  // Every question's history (N entries), and its restoration (e.g. into an estimator rebuilt
  // after the pool grew: entries beyond the old size stay empty). Restore errors with
  // INVALID_ARGUMENT when there are more entries than questions or a value is out of range.
  const std::vector<QuestionHistory>& histories() const { return state_; }
  absl::Status RestoreHistories(absl::Span<const QuestionHistory> histories);

  // The learned state, and its restoration (histories as RestoreHistories; outcomes and the last
  // estimate verbatim). RestoreState errors like RestoreHistories, or INVALID_ARGUMENT for a
  // last estimate longer than the pool; nothing changes on error. O(N).
  EstimatorState ExportState() const;
  absl::Status RestoreState(EstimatorState state);

  // The online model for kDefault's stack, with its prediction of every question (N values,
  // computed by the caller, which holds the embeddings: OnlineModel::probe over them). Null
  // clears it. INVALID_ARGUMENT when `predictions` does not have one value per question; the
  // estimator keeps its previous model then. O(1) (the vectors are shared, not copied).
  absl::Status SetOnlineModel(std::shared_ptr<const OnlineModel> model,
                              std::shared_ptr<const std::vector<float>> predictions);
  const std::shared_ptr<const OnlineModel>& online_model() const { return online_model_; }

  // The raw (pre-recalibration) p_hat the latest Estimate recorded, empty before any.
  const std::vector<float>& last_estimate() const { return last_estimate_; }
  // Redoes the bookkeeping of an Estimate call whose result was recorded (a replayed plan):
  // records `raw` as the last estimate and prunes outcomes older than the window at `version`.
  // O(N) for the copy.
  void RecordEstimate(std::vector<float> raw, int64_t version);

  // Per-question observation state, for reference sampling and reporting.
  bool observed(int64_t q) const { return state_[q].observations > 0; }
  int64_t observations(int64_t q) const { return state_[q].observations; }
  int64_t last_policy_version(int64_t q) const { return state_[q].last_version; }
  double last_success_rate(int64_t q) const { return state_[q].last_rate; }

 private:
  using Outcome = EstimatorOutcome;

  Estimator(const Pool& pool, const EstimatorOptions& options,
            std::unique_ptr<SimilarityScorer> scorer);

  float ColdStartPrior(int64_t q) const;
  absl::StatusOr<Estimates> EstimatePaper(int64_t version, absl::Span<const int64_t> refs);
  absl::StatusOr<Estimates> EstimatePosterior(int64_t version, bool with_similarity);
  // kDefault's prior mean p_sim for every question; falls back to the cold start when the
  // labeled set is too small to fit. O(N * |L| * h).
  absl::Status SimilarityPrior(int64_t version, std::vector<float>* prior_mean, int64_t* labeled);
  void Recalibrate(int64_t version, std::vector<float>* p_hat) const;
  void PruneOutcomes(int64_t version);

  const Pool& pool_;
  EstimatorOptions options_;
  std::unique_ptr<SimilarityScorer> scorer_;  // null in kHistory mode
  SimilarityOptions similarity_options_;
  std::vector<QuestionHistory> state_;
  std::vector<float> last_estimate_;  // p_hat of the latest Estimate call, for Outcome pairs
  std::deque<Outcome> outcomes_;      // ordered by insertion; pruned to the window
  std::shared_ptr<const OnlineModel> online_model_;
  std::shared_ptr<const std::vector<float>> online_predictions_;
  float mean_prior_ = 0.5f;
  bool any_prior_ = false;
};

// Gives a pool without embeddings deterministic text embeddings (hashed n-gram TF-IDF with a
// signed random projection, core/estimation/text_embedder.h) of dimension `dim`. No-op when the
// pool already has embeddings. O(total prompt length).
absl::Status EnsureEmbeddings(Pool* pool, int dim = 256);

// Ordinary least squares with an intercept, as sklearn's LinearRegression computes it: centre
// the features and y, take the minimum-norm least-squares solution (complete orthogonal
// decomposition), intercept = mean(y) - w . mean(x). A constant or collinear feature therefore
// gets weight 0 rather than an arbitrary one (constant x: slope 0, intercept mean(y)).
// `x` is rows x cols row-major; `y` has rows values; rows >= 1. O(rows * cols^2).
struct LinearFit {
  std::vector<double> weights;  // cols values
  double intercept = 0;
  double Apply(const double* features) const;
};
LinearFit FitLeastSquares(absl::Span<const double> x, int64_t rows, int64_t cols,
                          absl::Span<const double> y);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ESTIMATOR_H_
