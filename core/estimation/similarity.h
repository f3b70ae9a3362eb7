// The scoring pass of the estimator (docs/design.md §2.1 step 1, paper §4.1): every pool question
// attends over a reference set of labelled questions,
//   s_ij  = score_scale * <query_proj(z_i), ref_proj(z_j)>          (score_scale = 1/sqrt(h))
//   w_ij  = softmax_j(s_ij / tau)        (optionally over the top_k largest s_ij of row i only)
//   base_i = sum_j w_ij * y_j,
// a convex combination, so base_i lies in [min y, max y]. The calibration head is applied by the
// caller (Adapter::Calibrate), because it needs the reference labels' statistics once per round.
//
// Implementation: query projections are computed once (N x h float32) and cached; a round
// projects only the K references, then processes the queries in row blocks with one GEMM per
// block (S = Q_block * R^T), a vectorised row softmax that subtracts the row max (no overflow for
// any tau), and the weighted label sum; blocks run in parallel with OpenMP. With top_k, the
// per-row top-k references come from a FAISS IndexFlatIP over the K reference projections.
#ifndef DOTS_CORE_ESTIMATION_SIMILARITY_H_
#define DOTS_CORE_ESTIMATION_SIMILARITY_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/adapter.h"
#include "core/types.h"

namespace dots {

struct SimilarityOptions {
  // Attention temperature, finite and > 0: weights = softmax(score_scale * <q, r> / tau).
  float tau = 1.0f;
  // 0 = attend to all references; else only to each query's top_k highest-scoring references
  // (ignored when top_k >= the number of candidates, as in the paper's code).
  int top_k = 0;
  // A query that is itself one of the references does not attend to itself. When that leaves it
  // no candidate (K == 1), its base is the mean of the labels.
  bool leave_one_out = false;
};

class SimilarityScorer {
 public:
  // Projects all N pool embeddings (N x D row-major, D == adapter->input_dim(), all finite) with
  // ProjectQuery and caches them (N x h float32) along with the embeddings, which each round
  // needs to project its references. With the identity adapter the embeddings are dropped: its
  // reference projections equal the cached query projections. Errors: InvalidArgument on a null
  // adapter, N == 0, a dimension mismatch or a non-finite value (naming the row and column).
  // Cost: one ProjectQuery over N rows, O(N * (D*h + (L-1)*h*h)) flops; blocks the caller.
  // `embeddings` is taken by value: std::move it in to avoid copying N * D * 4 bytes.
  static absl::StatusOr<std::unique_ptr<SimilarityScorer>> Create(
      std::shared_ptr<const Adapter> adapter, FloatMatrix embeddings);

  // Wraps precomputed query projections (N x h, h == adapter->output_dim()) and, optionally, the
  // pool's embeddings (N x D; or empty, in which case only PredictProjected works unless the
  // adapter is the identity). For benchmarks and for callers that persist projections. O(1)
  // besides validation.
  static absl::StatusOr<std::unique_ptr<SimilarityScorer>> CreateFromProjections(
      std::shared_ptr<const Adapter> adapter, FloatMatrix embeddings_of_pool_or_empty,
      FloatMatrix query_projections);

  int64_t size() const { return query_proj_.rows; }  // N
  const Adapter& adapter() const { return *adapter_; }
  const FloatMatrix& query_projections() const { return query_proj_; }  // N x h
  // Bytes held per pool question: 4 * (D + h) with embeddings, 4 * h without (and always 4 * h
  // for the identity adapter).
  int64_t BytesPerQuestion() const;

  // One round: projects the K references (pool indices) with ProjectRef, then computes base[i]
  // for every pool question i = 0..N-1 in pool order.
  //   ref_indices: K distinct pool indices in [0, N).  ref_labels: K finite values (rates in
  //   [0, 1] in the adapter's label convention; any finite values work).  base_out: N floats.
  // Errors (InvalidArgument, nothing written): K == 0, ref_labels.size() != K, base_out.size()
  // != N, an index out of range or repeated, a non-finite label, tau not finite and > 0, top_k <
  // 0; FailedPrecondition when the scorer holds no embeddings (and the adapter is not the
  // identity); Internal if FAISS fails.
  // Cost: O(K * cost(ProjectRef) + N*K*h) flops (+ O(N*K*log top_k) with top_k); blocks the
  // caller; uses all OpenMP threads; const and safe to call concurrently.
  absl::Status Predict(absl::Span<const int64_t> ref_indices, absl::Span<const float> ref_labels,
                       const SimilarityOptions& opts, absl::Span<float> base_out) const;

  // Same for a subset of the pool: queries are pool indices in [0, N) (repeats allowed), and
  // base_out has queries.size() entries, base_out[t] for question queries[t]. Cost as Predict
  // with N replaced by queries.size() (plus a gather of their projections).
  absl::Status PredictSubset(absl::Span<const int64_t> queries,
                             absl::Span<const int64_t> ref_indices,
                             absl::Span<const float> ref_labels, const SimilarityOptions& opts,
                             absl::Span<float> base_out) const;

  // The scoring half of Predict, with the K references already projected (K x h, e.g. by
  // adapter().ProjectRef); ref_indices are still needed for validation and leave-one-out. Works
  // without pool embeddings. Errors as Predict, plus a ref_projections shape mismatch.
  // Cost: O(N*K*h) flops.
  absl::Status PredictProjected(absl::Span<const int64_t> ref_indices,
                                const FloatMatrix& ref_projections,
                                absl::Span<const float> ref_labels, const SimilarityOptions& opts,
                                absl::Span<float> base_out) const;

 private:
  SimilarityScorer(std::shared_ptr<const Adapter> adapter, FloatMatrix embeddings,
                   FloatMatrix query_proj)
      : adapter_(std::move(adapter)),
        embeddings_(std::move(embeddings)),
        query_proj_(std::move(query_proj)) {}

  absl::Status ProjectReferences(absl::Span<const int64_t> ref_indices, FloatMatrix* out) const;
  // queries == nullptr means all N in order; otherwise `num_queries` pool indices.
  absl::Status Score(const int64_t* queries, int64_t num_queries,
                     absl::Span<const int64_t> ref_indices, const FloatMatrix& ref_projections,
                     absl::Span<const float> ref_labels, const SimilarityOptions& opts,
                     absl::Span<float> base_out) const;

  std::shared_ptr<const Adapter> adapter_;
  FloatMatrix embeddings_;  // N x D, or empty
  FloatMatrix query_proj_;  // N x h
};

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_SIMILARITY_H_
