// A logistic probe of difficulty: p(q) = sigmoid(w . z_q + b), where z_q is question q's
// embedding standardised per dimension over the pool. Trained on soft labels (observed success
// rates) with per-label weights by weighted binary cross-entropy plus an L2 penalty on w, the
// linear probe of Lugoloobi et al. (arXiv 2602.09924), who find that such probes on an LLM's
// activations predict pass rates of held-out questions well.
//
// The run trains one between rounds on every recently labelled question (core/run/): it is the
// part of the default estimator that generalises to questions never handed out. Training is
// deterministic: the same inputs give the same weights bit for bit on one machine (no threads,
// no random numbers; L-BFGS in double precision).
//
// Thread-compatibility: const methods may run concurrently; Train is a pure function.
#ifndef DOTS_CORE_ESTIMATION_PROBE_H_
#define DOTS_CORE_ESTIMATION_PROBE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace dots {

struct ProbeOptions {
  // L2 penalty on w, relative to the total label weight: the objective is
  //   sum_i v_i BCE(y_i, p_i) / sum_i v_i + l2 * |w|^2 / 2.
  // Finite and >= 0.
  double l2 = 1e-2;
  // L-BFGS iterations per training (each costs two passes over the labels: O(L * D)). >= 1.
  int max_iterations = 100;

  // INVALID_ARGUMENT naming the field (estimator.model.*) for a value out of range.
  absl::Status Validate() const;
};

// Labels of one training: question indices into the embedding matrix, soft targets in [0, 1]
// and weights >= 0 (all three the same length L).
struct ProbeLabels {
  std::vector<int64_t> questions;
  std::vector<float> rates;
  std::vector<float> weights;
};

// The per-dimension standardisation of a pool's embeddings: z = (x - mean) * inv_std, with
// inv_std = 1 / std (0 for a constant dimension, which the probe then ignores). D values each.
struct Standardization {
  std::vector<float> mean;
  std::vector<float> inv_std;
};

// Column means and inverse standard deviations of `embeddings` (N x D, N >= 1). O(N * D).
Standardization Standardize(const FloatMatrix& embeddings);

// The learned parameters. A default-constructed Probe has no weights (empty()).
class Probe {
 public:
  Probe() = default;
  // From stored parameters; INVALID_ARGUMENT when the sizes disagree or a value is not finite.
  static absl::StatusOr<Probe> FromParameters(Standardization standardization,
                                              std::vector<float> weights, float bias);

  // Fits the probe to `labels` over `embeddings` (N x D). `warm_start`, when it has the same
  // dimension, is the starting point (an online run refits every round from the last fit);
  // otherwise training starts from w = 0 and b = logit of the weighted mean label.
  // `standardization` (D values each) is kept in the probe. Cost: O(max_iterations * L * D)
  // flops, O(L * D) memory for the standardised labelled rows; blocks the caller, no locks.
  // Errors: INVALID_ARGUMENT for mismatched sizes, an index outside [0, N), a rate outside [0, 1]
  // or not finite, a negative or non-finite weight, no label with positive weight, or bad
  // options; FAILED_PRECONDITION naming the iteration when the loss stops being finite.
  static absl::StatusOr<Probe> Train(const FloatMatrix& embeddings,
                                     const Standardization& standardization,
                                     const ProbeLabels& labels, const ProbeOptions& options,
                                     const Probe* warm_start = nullptr);

  bool empty() const { return weights_.empty(); }
  int dim() const { return static_cast<int>(weights_.size()); }
  const Standardization& standardization() const { return standardization_; }
  const std::vector<float>& weights() const { return weights_; }
  float bias() const { return bias_; }
  // The weighted mean binary cross-entropy of the last training on its labels (without the
  // penalty), in nats; 0 for a probe made from parameters.
  double training_loss() const { return training_loss_; }

  // p for rows `rows` of `embeddings` (N x dim()); out has rows.size() entries. An empty probe
  // or a dimension mismatch writes nothing and returns INVALID_ARGUMENT. O(|rows| * D).
  absl::Status Predict(const FloatMatrix& embeddings, absl::Span<const int64_t> rows,
                       absl::Span<float> out) const;
  // p for every row of `embeddings`. O(N * D).
  absl::Status PredictAll(const FloatMatrix& embeddings, absl::Span<float> out) const;

 private:
  Standardization standardization_;
  std::vector<float> weights_;
  float bias_ = 0;
  double training_loss_ = 0;
};

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_PROBE_H_
