#include "core/estimation/probe.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <utility>

#include "Eigen/Dense"
#include "absl/strings/str_format.h"

namespace dots {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// L-BFGS memory (pairs of steps and gradient changes kept).
constexpr int kHistory = 10;
// Armijo sufficient-decrease constant and the most step halvings per line search.
constexpr double kArmijo = 1e-4;
constexpr int kMaxHalvings = 30;
// Logits are clamped here before the sigmoid: BCE stays finite for saturated predictions.
constexpr double kMaxLogit = 30.0;

double Sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// BCE of soft target y against the logit z, computed stably: log(1 + e^z) - y z.
double LogisticLoss(double z, double y) {
  const double softplus = z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
  return softplus - y * z;
}

// The weighted objective over standardised labelled rows. Parameters: D weights, then the bias.
class Objective {
 public:
  Objective(RowMatrix rows, Eigen::VectorXd targets, Eigen::VectorXd weights, double l2)
      : rows_(std::move(rows)),
        targets_(std::move(targets)),
        weights_(std::move(weights)),
        l2_(l2),
        total_weight_(weights_.sum()) {}

  int64_t dim() const { return rows_.cols(); }

  // Loss (with penalty) at `theta`; fills `gradient` (D + 1 values) and, when wanted, the mean
  // BCE without penalty.
  double Evaluate(const Eigen::VectorXd& theta, Eigen::VectorXd* gradient,
                  double* bce = nullptr) const {
    const int64_t d = dim();
    const Eigen::VectorXf w = theta.head(d).cast<float>();
    const Eigen::VectorXf logits = rows_ * w;
    Eigen::VectorXf residual(rows_.rows());
    double loss = 0, bias_gradient = 0;
    for (int64_t i = 0; i < rows_.rows(); ++i) {
      const double z = std::clamp(double{logits[i]} + theta[d], -kMaxLogit, kMaxLogit);
      const double v = weights_[i] / total_weight_;
      loss += v * LogisticLoss(z, targets_[i]);
      const double r = v * (Sigmoid(z) - targets_[i]);
      residual[i] = static_cast<float>(r);
      bias_gradient += r;
    }
    if (bce != nullptr) *bce = loss;
    gradient->resize(d + 1);
    gradient->head(d) = (rows_.transpose() * residual).cast<double>() + l2_ * theta.head(d);
    (*gradient)[d] = bias_gradient;
    return loss + 0.5 * l2_ * theta.head(d).squaredNorm();
  }

 private:
  RowMatrix rows_;  // L x D standardised embeddings of the labelled questions
  Eigen::VectorXd targets_;
  Eigen::VectorXd weights_;
  double l2_;
  double total_weight_;
};

absl::Status ValidateLabels(const FloatMatrix& embeddings, const Standardization& standardization,
                            const ProbeLabels& labels) {
  const size_t l = labels.questions.size();
  if (labels.rates.size() != l || labels.weights.size() != l) {
    return absl::InvalidArgumentError(
        absl::StrFormat("probe labels: %d questions, %d rates and %d weights", l,
                        labels.rates.size(), labels.weights.size()));
  }
  const size_t d = static_cast<size_t>(embeddings.cols);
  if (standardization.mean.size() != d || standardization.inv_std.size() != d) {
    return absl::InvalidArgumentError(
        absl::StrFormat("probe standardization: %d means and %d scales for %d dimensions",
                        standardization.mean.size(), standardization.inv_std.size(), d));
  }
  double total = 0;
  for (size_t i = 0; i < l; ++i) {
    if (labels.questions[i] < 0 || labels.questions[i] >= embeddings.rows) {
      return absl::InvalidArgumentError(
          absl::StrFormat("probe labels[%d]: question %d outside [0, %d)", i, labels.questions[i],
                          embeddings.rows));
    }
    if (!(labels.rates[i] >= 0 && labels.rates[i] <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("probe labels[%d]: rate %g outside [0, 1]", i, labels.rates[i]));
    }
    if (!(labels.weights[i] >= 0) || !std::isfinite(labels.weights[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "probe labels[%d]: weight %g must be finite and >= 0", i, labels.weights[i]));
    }
    total += labels.weights[i];
  }
  if (!(total > 0)) {
    return absl::InvalidArgumentError("probe labels: no label has a positive weight");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ProbeOptions::Validate() const {
  if (!(std::isfinite(l2) && l2 >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.l2: %g must be finite and >= 0", l2));
  }
  if (max_iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("estimator.model.iterations: %d must be >= 1", max_iterations));
  }
  return absl::OkStatus();
}

Standardization Standardize(const FloatMatrix& embeddings) {
  const int64_t n = embeddings.rows, d = embeddings.cols;
  std::vector<double> sum(static_cast<size_t>(d), 0.0), sum_sq(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = embeddings.row(i);
    for (int64_t j = 0; j < d; ++j) {
      sum[j] += row[j];
      sum_sq[j] += double{row[j]} * row[j];
    }
  }
  Standardization s;
  s.mean.resize(static_cast<size_t>(d));
  s.inv_std.resize(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    const double mean = n > 0 ? sum[j] / n : 0.0;
    const double var = n > 0 ? std::max(0.0, sum_sq[j] / n - mean * mean) : 0.0;
    s.mean[j] = static_cast<float>(mean);
    // A dimension constant up to rounding carries no signal; scaling its noise up would.
    s.inv_std[j] =
        var > 1e-12 * std::max(1.0, mean * mean) ? static_cast<float>(1 / std::sqrt(var)) : 0.0f;
  }
  return s;
}

absl::StatusOr<Probe> Probe::FromParameters(Standardization standardization,
                                            std::vector<float> weights, float bias) {
  const size_t d = weights.size();
  if (standardization.mean.size() != d || standardization.inv_std.size() != d) {
    return absl::InvalidArgumentError(
        absl::StrFormat("probe: %d weights but %d means and %d scales", d,
                        standardization.mean.size(), standardization.inv_std.size()));
  }
  auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  if (!finite(weights) || !finite(standardization.mean) || !finite(standardization.inv_std) ||
      !std::isfinite(bias)) {
    return absl::InvalidArgumentError("probe: a parameter is not finite");
  }
  Probe probe;
  probe.standardization_ = std::move(standardization);
  probe.weights_ = std::move(weights);
  probe.bias_ = bias;
  return probe;
}

absl::StatusOr<Probe> Probe::Train(const FloatMatrix& embeddings,
                                   const Standardization& standardization,
                                   const ProbeLabels& labels, const ProbeOptions& options,
                                   const Probe* warm_start) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateLabels(embeddings, standardization, labels); !s.ok()) return s;
  const int64_t l = static_cast<int64_t>(labels.questions.size());
  const int64_t d = embeddings.cols;
  RowMatrix rows(l, d);
  Eigen::VectorXd targets(l), weights(l);
  for (int64_t i = 0; i < l; ++i) {
    const float* x = embeddings.row(labels.questions[i]);
    for (int64_t j = 0; j < d; ++j) {
      rows(i, j) = (x[j] - standardization.mean[j]) * standardization.inv_std[j];
    }
    targets[i] = labels.rates[i];
    weights[i] = labels.weights[i];
  }
  const Objective objective(std::move(rows), targets, weights, options.l2);

  Eigen::VectorXd theta = Eigen::VectorXd::Zero(d + 1);
  if (warm_start != nullptr && warm_start->dim() == d) {
    for (int64_t j = 0; j < d; ++j) theta[j] = warm_start->weights_[j];
    theta[d] = warm_start->bias_;
  } else {
    const double mean = std::clamp(targets.dot(weights) / weights.sum(), 1e-4, 1 - 1e-4);
    theta[d] = std::log(mean / (1 - mean));
  }

  // L-BFGS (Nocedal & Wright, Algorithm 7.4) with a backtracking Armijo line search.
  Eigen::VectorXd gradient;
  double loss = objective.Evaluate(theta, &gradient);
  std::deque<std::pair<Eigen::VectorXd, Eigen::VectorXd>> memory;  // (s, y) pairs, oldest first
  for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
    if (!std::isfinite(loss)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("probe training diverged: loss %g at iteration %d", loss, iteration));
    }
    if (gradient.norm() < 1e-9) break;
    Eigen::VectorXd q = gradient;
    std::vector<double> alphas(memory.size());
    for (int i = static_cast<int>(memory.size()) - 1; i >= 0; --i) {
      const auto& [s, y] = memory[i];
      alphas[i] = s.dot(q) / y.dot(s);
      q -= alphas[i] * y;
    }
    if (!memory.empty()) {
      const auto& [s, y] = memory.back();
      q *= s.dot(y) / y.dot(y);
    }
    for (size_t i = 0; i < memory.size(); ++i) {
      const auto& [s, y] = memory[i];
      q += s * (alphas[i] - y.dot(q) / y.dot(s));
    }
    Eigen::VectorXd direction = -q;
    double slope = gradient.dot(direction);
    if (!(slope < 0)) {  // not a descent direction: restart from steepest descent
      memory.clear();
      direction = -gradient;
      slope = -gradient.squaredNorm();
    }
    double step = memory.empty() ? std::min(1.0, 1.0 / std::max(gradient.norm(), 1e-12)) : 1.0;
    Eigen::VectorXd next_gradient;
    Eigen::VectorXd next = theta + step * direction;
    double next_loss = objective.Evaluate(next, &next_gradient);
    int halvings = 0;
    while (!(next_loss <= loss + kArmijo * step * slope) && halvings < kMaxHalvings) {
      step *= 0.5;
      next = theta + step * direction;
      next_loss = objective.Evaluate(next, &next_gradient);
      ++halvings;
    }
    if (!(next_loss <= loss)) break;  // no progress possible at this precision
    Eigen::VectorXd s = next - theta, y = next_gradient - gradient;
    const bool converged = loss - next_loss <= 1e-12 * std::max(1.0, std::abs(loss));
    if (s.dot(y) > 1e-12) {
      memory.emplace_back(std::move(s), std::move(y));
      if (memory.size() > kHistory) memory.pop_front();
    }
    theta = std::move(next);
    gradient = std::move(next_gradient);
    loss = next_loss;
    if (converged) break;
  }
  double bce = 0;
  loss = objective.Evaluate(theta, &gradient, &bce);
  if (!std::isfinite(loss)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("probe training diverged: final loss %g", loss));
  }
  Probe probe;
  probe.standardization_ = standardization;
  probe.weights_.resize(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) probe.weights_[j] = static_cast<float>(theta[j]);
  probe.bias_ = static_cast<float>(theta[d]);
  probe.training_loss_ = bce;
  return probe;
}

absl::Status Probe::Predict(const FloatMatrix& embeddings, absl::Span<const int64_t> rows,
                            absl::Span<float> out) const {
  if (empty() || embeddings.cols != dim() || out.size() != rows.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("probe: %d-dimensional probe, %d-dimensional embeddings, %d rows for %d "
                        "outputs",
                        dim(), embeddings.cols, rows.size(), out.size()));
  }
  // Folding the standardisation into the weights: w . ((x - m) * s) = (w * s) . x - (w * s) . m.
  const int64_t d = dim();
  std::vector<float> scaled(static_cast<size_t>(d));
  double offset = bias_;
  for (int64_t j = 0; j < d; ++j) {
    scaled[j] = weights_[j] * standardization_.inv_std[j];
    offset -= double{scaled[j]} * standardization_.mean[j];
  }
  const Eigen::Map<const Eigen::VectorXf> w(scaled.data(), d);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= embeddings.rows) {
      return absl::InvalidArgumentError(
          absl::StrFormat("probe: row %d outside [0, %d)", rows[i], embeddings.rows));
    }
    const Eigen::Map<const Eigen::VectorXf> x(embeddings.row(rows[i]), d);
    const double z = std::clamp(double{x.dot(w)} + offset, -kMaxLogit, kMaxLogit);
    out[i] = static_cast<float>(Sigmoid(z));
  }
  return absl::OkStatus();
}

absl::Status Probe::PredictAll(const FloatMatrix& embeddings, absl::Span<float> out) const {
  std::vector<int64_t> rows(static_cast<size_t>(embeddings.rows));
  for (int64_t i = 0; i < embeddings.rows; ++i) rows[i] = i;
  return Predict(embeddings, rows, out);
}

}  // namespace dots
