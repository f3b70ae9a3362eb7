#include "core/estimation/estimator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "Eigen/Dense"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/estimation/text_embedder.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

// Fewer labels than this and a least-squares fit of a few features is noise: use the cold start.
constexpr int64_t kMinLabelsForFit = 8;
// Fewer (estimate, outcome) pairs than this and the posterior recalibration is skipped.
constexpr int64_t kMinOutcomesForRecalibration = 16;
// Default attention temperature for the identity projection (cosine scores in [-1, 1]).
constexpr float kIdentityAttentionTau = 0.05f;
// Keeps Beta parameters strictly positive when a prior mean is exactly 0 or 1.
constexpr double kMinPriorMean = 1e-3;

float Clip01(double v) { return static_cast<float>(std::clamp(v, 0.0, 1.0)); }

}  // namespace

absl::StatusOr<EstimatorMode> ParseEstimatorMode(std::string_view name) {
  if (name == "paper") return EstimatorMode::kPaper;
  if (name == "history") return EstimatorMode::kHistory;
  if (name == "default") return EstimatorMode::kDefault;
  return absl::InvalidArgumentError(
      absl::StrCat("estimator.mode: unknown mode \"", std::string(name),
                   "\" (want \"paper\", \"history\" or \"default\")"));
}

std::string_view EstimatorModeName(EstimatorMode mode) {
  switch (mode) {
    case EstimatorMode::kPaper:
      return "paper";
    case EstimatorMode::kHistory:
      return "history";
    case EstimatorMode::kDefault:
      return "default";
  }
  return "unknown";
}

absl::Status EstimatorOptions::Validate() const {
  if (attention_tau.has_value() && !(std::isfinite(*attention_tau) && *attention_tau > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.attention_tau: %g must be finite and > 0", *attention_tau));
  }
  if (top_k.has_value() && *top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.top_k: %d must be >= 0 (0 = all references)", *top_k));
  }
  if (label_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.label_window: %d must be >= 0 (0 = unlimited)", label_window));
  }
  if (!(std::isfinite(decay) && decay > 0 && decay <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.decay: %g is outside (0, 1]", decay));
  }
  if (!(std::isfinite(prior_strength) && prior_strength > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.prior_strength: %g must be finite and > 0", prior_strength));
  }
  if (max_labeled < kMinLabelsForFit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.max_labeled: %d must be >= %d", max_labeled, kMinLabelsForFit));
  }
  if (absl::Status s = model.Validate(); !s.ok()) return s;
  if (absl::Status s = adapter_training.Validate(); !s.ok()) return s;
  if (adapter_training.enabled && mode != EstimatorMode::kPaper) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "estimator.adapter_training: \"online\" needs mode \"paper\" (mode is \"%s\"; the "
        "default mode learns online through estimator.model)",
        std::string(EstimatorModeName(mode))));
  }
  if (recalibration_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.recalibration_window: %d must be >= 0", recalibration_window));
  }
  return absl::OkStatus();
}

double LinearFit::Apply(const double* features) const {
  double v = intercept;
  for (size_t j = 0; j < weights.size(); ++j) v += weights[j] * features[j];
  return v;
}

LinearFit FitLeastSquares(absl::Span<const double> x, int64_t rows, int64_t cols,
                          absl::Span<const double> y) {
  LinearFit fit;
  fit.weights.assign(static_cast<size_t>(cols), 0.0);
  if (rows <= 0) return fit;
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> xm(
      x.data(), rows, cols);
  Eigen::Map<const Eigen::VectorXd> ym(y.data(), rows);
  const Eigen::RowVectorXd x_mean = xm.colwise().mean();
  const double y_mean = ym.mean();
  if (cols > 0) {
    const Eigen::MatrixXd xc = xm.rowwise() - x_mean;
    const Eigen::VectorXd yc = ym.array() - y_mean;
    // Rank-revealing with a relative threshold, so an (almost) constant column counts as rank
    // deficient and receives the minimum-norm weight 0.
    Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd> cod(xc);
    cod.setThreshold(1e-10);
    const Eigen::VectorXd w = cod.solve(yc);
    for (int64_t j = 0; j < cols; ++j) fit.weights[j] = std::isfinite(w[j]) ? w[j] : 0.0;
  }
  fit.intercept = y_mean;
  for (int64_t j = 0; j < cols; ++j) fit.intercept -= fit.weights[j] * x_mean[j];
  return fit;
}

absl::StatusOr<std::unique_ptr<Estimator>> Estimator::Create(const Pool& pool,
                                                             std::shared_ptr<const Adapter> adapter,
                                                             const EstimatorOptions& options,
                                                             const FloatMatrix* embeddings) {
  DOTS_RETURN_IF_ERROR(options.Validate());
  if (embeddings == nullptr) embeddings = &pool.embeddings();
  std::unique_ptr<SimilarityScorer> scorer;
  if (options.mode != EstimatorMode::kHistory) {
    if (embeddings->rows != pool.size() || embeddings->rows == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("estimator.mode: \"", std::string(EstimatorModeName(options.mode)),
                       "\" needs embeddings and the pool has none (embed the prompts first)"));
    }
    const int dim = static_cast<int>(embeddings->cols);
    if (adapter == nullptr) adapter = Adapter::Identity(dim);
    if (adapter->input_dim() != dim) {
      return absl::InvalidArgumentError(
          absl::StrFormat("estimator.adapter_path: the adapter takes %d-dimensional embeddings "
                          "but the pool's embeddings have %d dimensions",
                          adapter->input_dim(), dim));
    }
    DOTS_ASSIGN_OR_RETURN(scorer, SimilarityScorer::Create(adapter, *embeddings));
  }
  return std::unique_ptr<Estimator>(new Estimator(pool, options, std::move(scorer)));
}

Estimator::Estimator(const Pool& pool, const EstimatorOptions& options,
                     std::unique_ptr<SimilarityScorer> scorer)
    : pool_(pool),
      options_(options),
      scorer_(std::move(scorer)),
      state_(static_cast<size_t>(pool.size())) {
  if (scorer_ != nullptr) {
    const Adapter& adapter = scorer_->adapter();
    const bool identity = adapter.num_layers() == 0;
    similarity_options_.tau =
        options.attention_tau.value_or(identity ? kIdentityAttentionTau : adapter.tau());
    similarity_options_.top_k = options.top_k.value_or(adapter.top_k());
  }
  double sum = 0;
  int64_t count = 0;
  for (const Question& q : pool.questions()) {
    if (q.prior.has_value()) {
      sum += *q.prior;
      ++count;
    }
  }
  any_prior_ = options.use_priors && count > 0;
  if (any_prior_) mean_prior_ = static_cast<float>(sum / count);
}

absl::Status Estimator::Observe(int64_t question, double successes, int trials,
                                int64_t policy_version) {
  if (question < 0 || question >= size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "question: index %d is outside the pool of %d questions", question, size()));
  }
  if (trials < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("trials: %d must be >= 1", trials));
  }
  if (!std::isfinite(successes) || successes < 0 || successes > trials) {
    return absl::InvalidArgumentError(
        absl::StrFormat("successes: %g is outside [0, %d]", successes, trials));
  }
  if (policy_version < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("policy_version: %d must be >= 0", policy_version));
  }
  QuestionHistory& s = state_[question];
  const double rate = successes / trials;
  if (question < static_cast<int64_t>(last_estimate_.size())) {
    outcomes_.push_back({policy_version, last_estimate_[question], static_cast<float>(rate)});
  }
  if (s.last_version >= 0 && policy_version > s.last_version) {
    const double d = std::pow(options_.decay, static_cast<double>(policy_version - s.last_version));
    s.successes *= d;
    s.failures *= d;
  }
  s.successes += successes;
  s.failures += trials - successes;
  s.last_version = std::max(s.last_version, policy_version);
  s.last_rate = rate;
  ++s.observations;
  return absl::OkStatus();
}

absl::Status Estimator::RestoreHistories(absl::Span<const QuestionHistory> histories) {
  if (histories.size() > state_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "histories: %d entries for a pool of %d questions", histories.size(), state_.size()));
  }
  for (size_t i = 0; i < histories.size(); ++i) {
    const QuestionHistory& h = histories[i];
    if (!(h.successes >= 0 && h.failures >= 0 && std::isfinite(h.successes + h.failures) &&
          h.observations >= 0 && h.last_version >= -1 && h.last_rate >= 0 && h.last_rate <= 1)) {
      return absl::InvalidArgumentError(absl::StrFormat("histories[%d]: out of range", i));
    }
  }
  std::copy(histories.begin(), histories.end(), state_.begin());
  return absl::OkStatus();
}

EstimatorState Estimator::ExportState() const {
  return {state_, last_estimate_, {outcomes_.begin(), outcomes_.end()}};
}

absl::Status Estimator::RestoreState(EstimatorState state) {
  if (state.last_estimate.size() > state_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("last_estimate: %d values for a pool of %d questions",
                        state.last_estimate.size(), state_.size()));
  }
  DOTS_RETURN_IF_ERROR(RestoreHistories(state.histories));
  last_estimate_ = std::move(state.last_estimate);
  outcomes_.assign(state.outcomes.begin(), state.outcomes.end());
  return absl::OkStatus();
}

absl::Status Estimator::SetOnlineModel(std::shared_ptr<const OnlineModel> model,
                                       std::shared_ptr<const std::vector<float>> predictions) {
  if (model != nullptr &&
      (predictions == nullptr || static_cast<int64_t>(predictions->size()) != size())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("online model: %d predictions for a pool of %d questions",
                        predictions == nullptr ? 0 : predictions->size(), size()));
  }
  online_model_ = std::move(model);
  online_predictions_ = online_model_ != nullptr ? std::move(predictions) : nullptr;
  return absl::OkStatus();
}

void Estimator::RecordEstimate(std::vector<float> raw, int64_t version) {
  last_estimate_ = std::move(raw);
  PruneOutcomes(version);
}

void Estimator::PruneOutcomes(int64_t version) {
  while (!outcomes_.empty() &&
         outcomes_.front().version < version - options_.recalibration_window) {
    outcomes_.pop_front();
  }
}

float Estimator::ColdStartPrior(int64_t q) const {
  const std::optional<double>& prior = pool_.question(q).prior;
  if (options_.use_priors && prior.has_value()) return static_cast<float>(*prior);
  return any_prior_ ? mean_prior_ : 0.5f;
}

absl::StatusOr<Estimates> Estimator::Estimate(int64_t policy_version,
                                              absl::Span<const int64_t> reference_set) {
  for (size_t i = 0; i < reference_set.size(); ++i) {
    if (reference_set[i] < 0 || reference_set[i] >= size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("reference_set[%d]: index %d is outside the pool of %d questions", i,
                          reference_set[i], size()));
    }
  }
  switch (options_.mode) {
    case EstimatorMode::kPaper:
      return EstimatePaper(policy_version, reference_set);
    case EstimatorMode::kHistory:
      return EstimatePosterior(policy_version, /*with_similarity=*/false);
    case EstimatorMode::kDefault:
      return EstimatePosterior(policy_version, /*with_similarity=*/true);
  }
  return absl::InternalError("unknown estimator mode");
}

absl::StatusOr<Estimates> Estimator::EstimatePaper(int64_t version,
                                                   absl::Span<const int64_t> refs) {
  Estimates out;
  out.policy_version = version;
  const int64_t n = size();
  std::vector<int64_t> labeled;
  std::vector<float> labels;
  const bool failure_labels = scorer_->adapter().labels_are_failure_rate();
  for (int64_t r : refs) {
    if (!observed(r)) continue;
    labeled.push_back(r);
    const double rate = state_[r].last_rate;
    labels.push_back(static_cast<float>(failure_labels ? 1.0 - rate : rate));
  }
  out.labeled = static_cast<int64_t>(labeled.size());
  out.p_hat.resize(static_cast<size_t>(n));
  if (labeled.empty()) {
    for (int64_t q = 0; q < n; ++q) out.p_hat[q] = ColdStartPrior(q);
    return out;
  }
  std::vector<float> base(static_cast<size_t>(n));
  DOTS_RETURN_IF_ERROR(
      scorer_->Predict(labeled, labels, similarity_options_, absl::MakeSpan(base)));
  const LabelStats stats = ComputeLabelStats(labels);
  std::vector<double> calibrated(static_cast<size_t>(n));
  for (int64_t q = 0; q < n; ++q) {
    calibrated[q] = scorer_->adapter().Calibrate(base[q], stats.mean, stats.std);
  }
  // The released code's post-hoc OLS, fitted on the references' own predictions (which
  // attended to themselves) and applied unclipped.
  std::vector<double> x(labeled.size()), y(labeled.size());
  for (size_t i = 0; i < labeled.size(); ++i) {
    x[i] = calibrated[labeled[i]];
    y[i] = labels[i];
  }
  const LinearFit fit = FitLeastSquares(x, static_cast<int64_t>(x.size()), 1, y);
  for (int64_t q = 0; q < n; ++q) {
    const double pred = fit.Apply(&calibrated[q]);
    out.p_hat[q] = static_cast<float>(failure_labels ? 1.0 - pred : pred);
  }
  return out;
}

absl::Status Estimator::SimilarityPrior(int64_t version, std::vector<float>* prior_mean,
                                        int64_t* labeled_count) {
  const int64_t n = size();
  std::vector<int64_t> labeled;
  for (int64_t q = 0; q < n; ++q) {
    const QuestionHistory& s = state_[q];
    if (s.observations == 0) continue;
    if (options_.label_window > 0 && s.last_version < version - options_.label_window) continue;
    labeled.push_back(q);
  }
  if (static_cast<int64_t>(labeled.size()) > options_.max_labeled) {
    // Keep the most recently observed; ties by index for determinism.
    std::nth_element(labeled.begin(), labeled.begin() + options_.max_labeled, labeled.end(),
                     [&](int64_t a, int64_t b) {
                       return state_[a].last_version != state_[b].last_version
                                  ? state_[a].last_version > state_[b].last_version
                                  : a < b;
                     });
    labeled.resize(static_cast<size_t>(options_.max_labeled));
    std::sort(labeled.begin(), labeled.end());
  }
  *labeled_count = static_cast<int64_t>(labeled.size());
  prior_mean->resize(static_cast<size_t>(n));
  if (*labeled_count < kMinLabelsForFit) {
    for (int64_t q = 0; q < n; ++q) (*prior_mean)[q] = ColdStartPrior(q);
    return absl::OkStatus();
  }
  const bool failure_labels = scorer_->adapter().labels_are_failure_rate();
  std::vector<float> labels(labeled.size());
  for (size_t i = 0; i < labeled.size(); ++i) {
    const QuestionHistory& s = state_[labeled[i]];
    const double rate = s.successes / std::max(s.successes + s.failures, 1e-12);
    labels[i] = static_cast<float>(failure_labels ? 1.0 - rate : rate);
  }
  SimilarityOptions sim = similarity_options_;
  sim.leave_one_out = true;  // a labeled question must not predict itself from its own label
  std::vector<float> base(static_cast<size_t>(n));
  DOTS_RETURN_IF_ERROR(scorer_->Predict(labeled, labels, sim, absl::MakeSpan(base)));
  const LabelStats stats = ComputeLabelStats(labels);

  // Features per question: calibrated similarity prediction, the online model's prediction
  // (out of fold for its own training labels) when there is one, and (when the pool has priors)
  // the static prior and whether it is known. Stacked by least squares on the labeled set.
  const bool with_model = options_.model.enabled && online_model_ != nullptr &&
                          online_predictions_ != nullptr &&
                          static_cast<int64_t>(online_predictions_->size()) == n;
  const int model_col = 1;
  const int prior_col = with_model ? 2 : 1;
  const int cols = prior_col + (any_prior_ ? 2 : 0);
  std::vector<double> features(static_cast<size_t>(n * cols));
  for (int64_t q = 0; q < n; ++q) {
    double c = scorer_->adapter().Calibrate(base[q], stats.mean, stats.std);
    if (failure_labels) c = 1.0 - c;
    double* f = &features[static_cast<size_t>(q * cols)];
    f[0] = c;
    if (with_model) f[model_col] = online_model_->StackFeature(q, *online_predictions_);
    if (any_prior_) {
      const std::optional<double>& prior = pool_.question(q).prior;
      f[prior_col] = prior.value_or(0.0);
      f[prior_col + 1] = prior.has_value() ? 1.0 : 0.0;
    }
  }
  std::vector<double> x(labeled.size() * cols), y(labeled.size());
  for (size_t i = 0; i < labeled.size(); ++i) {
    std::copy_n(&features[static_cast<size_t>(labeled[i] * cols)], cols, &x[i * cols]);
    y[i] = failure_labels ? 1.0 - labels[i] : labels[i];
  }
  const LinearFit fit = FitLeastSquares(x, static_cast<int64_t>(labeled.size()), cols, y);
  for (int64_t q = 0; q < n; ++q) {
    (*prior_mean)[q] = Clip01(fit.Apply(&features[static_cast<size_t>(q * cols)]));
  }
  return absl::OkStatus();
}

absl::StatusOr<Estimates> Estimator::EstimatePosterior(int64_t version, bool with_similarity) {
  const int64_t n = size();
  Estimates out;
  out.policy_version = version;
  std::vector<float> prior_mean;
  if (with_similarity) {
    DOTS_RETURN_IF_ERROR(SimilarityPrior(version, &prior_mean, &out.labeled));
  } else {
    prior_mean.resize(static_cast<size_t>(n));
    for (int64_t q = 0; q < n; ++q) prior_mean[q] = ColdStartPrior(q);
  }
  const double n0 = options_.prior_strength;
  out.p_hat.resize(static_cast<size_t>(n));
  out.beta_a.resize(static_cast<size_t>(n));
  out.beta_b.resize(static_cast<size_t>(n));
  for (int64_t q = 0; q < n; ++q) {
    const QuestionHistory& s = state_[q];
    double a = 0, b = 0;
    if (s.observations > 0) {
      const double d = s.last_version < version
                           ? std::pow(options_.decay, static_cast<double>(version - s.last_version))
                           : 1.0;
      a = s.successes * d;
      b = s.failures * d;
      if (!with_similarity) ++out.labeled;
    }
    const double m = std::clamp<double>(prior_mean[q], kMinPriorMean, 1 - kMinPriorMean);
    out.beta_a[q] = static_cast<float>(n0 * m + a);
    out.beta_b[q] = static_cast<float>(n0 * (1 - m) + b);
    out.p_hat[q] = static_cast<float>((n0 * prior_mean[q] + a) / (n0 + a + b));
  }
  last_estimate_ = out.p_hat;
  PruneOutcomes(version);
  if (with_similarity && options_.recalibration_window > 0) Recalibrate(version, &out.p_hat);
  return out;
}

void Estimator::Recalibrate(int64_t version, std::vector<float>* p_hat) const {
  const int64_t oldest = version - options_.recalibration_window;
  std::vector<double> x, y;
  for (const Outcome& o : outcomes_) {
    if (o.version < oldest || o.version >= version) continue;
    x.push_back(o.estimate);
    y.push_back(o.observed);
  }
  if (static_cast<int64_t>(x.size()) < kMinOutcomesForRecalibration) return;
  const LinearFit fit = FitLeastSquares(x, static_cast<int64_t>(x.size()), 1, y);
  for (float& p : *p_hat) {
    const double v = p;
    p = Clip01(fit.Apply(&v));
  }
}

absl::Status EnsureEmbeddings(Pool* pool, int dim) {
  if (pool->has_embeddings() || pool->size() == 0) return absl::OkStatus();
  std::vector<std::string> prompts;
  prompts.reserve(static_cast<size_t>(pool->size()));
  for (const Question& q : pool->questions()) prompts.push_back(q.prompt);
  TextEmbedderOptions options;
  options.dim = dim;
  const TextEmbedder embedder = TextEmbedder::Fit(prompts, options);
  return pool->SetEmbeddings(embedder.EmbedAll(prompts));
}

}  // namespace dots
