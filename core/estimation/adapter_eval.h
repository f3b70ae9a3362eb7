// Held-out evaluation of a difficulty adapter by the released code's protocol (docs/paper.md
// §2.3, `train.py` evaluate_test_groups): for a labelled question set of one source and each of
// several seeds, split off a random reference set, predict the other questions exactly as
// `paper` mode does (attention over the references, the calibration head, then the post-hoc
// OLS fitted on the references' own predictions; Estimator::Estimate in kPaper), and score the
// predictions against the true rates. Metrics are averaged over the seeds.
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_EVAL_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_EVAL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/adapter.h"
#include "core/types.h"

namespace dots {

struct PredictionMetrics {
  int64_t count = 0;   // predictions scored
  double pearson = 0;  // 0 when either side is constant
  double mae = 0;
  // The released `interval_classification_metrics`: among the B = min(1024, count / 2)
  // predictions closest to 0.5 (ties by position), the fraction whose true rate lies in
  // [0.125, 0.875]; `interval_base_rate` is that fraction over all `count` questions (what a
  // random choice of B would score on average).
  double interval_precision = 0;
  double interval_base_rate = 0;
};

// Metrics of `predicted` against `truth` (same length >= 1, finite). O(n log n).
PredictionMetrics ComputePredictionMetrics(absl::Span<const double> predicted,
                                           absl::Span<const double> truth);

// Mean of several metric sets (count summed). Empty input gives zeros.
PredictionMetrics AverageMetrics(absl::Span<const PredictionMetrics> metrics);

struct HeldOutSet {
  std::string name;           // for reports, e.g. the source
  std::vector<int64_t> rows;  // rows of the embedding matrix, distinct
  std::vector<float> rates;   // true success rates, one per row, in [0, 1]
};

struct PaperProtocolOptions {
  int ref_size = 256;  // references per split; min(ref_size, rows / 2) when the set is small
  std::vector<uint64_t> seeds = {1, 2, 3, 4, 5};  // the released evaluation's five seeds
  // Attention temperature; unset = the adapter's (0.05 for the identity, as the estimator).
  std::optional<float> attention_tau;
};

// Evaluates `adapter` (an identity adapter is the off-the-shelf baseline) on `set` with the
// embeddings N x D. Errors: INVALID_ARGUMENT for fewer than 4 rows, a row out of range, a rate
// outside [0, 1], a dimension mismatch. Cost: one projection of the set's rows plus, per seed,
// one paper-mode estimate, O(rows * (D*h + K*h)) flops; blocks the caller.
absl::StatusOr<PredictionMetrics> EvaluatePaperProtocol(std::shared_ptr<const Adapter> adapter,
                                                        const FloatMatrix& embeddings,
                                                        const HeldOutSet& set,
                                                        const PaperProtocolOptions& options);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_EVAL_H_
