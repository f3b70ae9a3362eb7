#include "core/estimation/similarity.h"

#include <cblas.h>
#include <faiss/IndexFlat.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMatrix>;

// Most query rows per scoring block. A block's score matrix (kBlockRows x K floats, 2 MB at
// K = 256) is re-read by the softmax right after the GEMM, so it should mostly still be in cache;
// should mostly still be in cache; larger blocks gain nothing once the GEMM is at peak.
constexpr int64_t kBlockRows = 2048;
// Queries per FAISS search call in the top-k path (bounds its distance/label buffers).
constexpr int64_t kTopKChunkRows = 16384;

// Position of each reference in ref_indices, keyed by pool index.
using RefPositions = absl::flat_hash_map<int64_t, int32_t>;

absl::Status ValidateRound(absl::Span<const int64_t> ref_indices,
                           absl::Span<const float> ref_labels, const SimilarityOptions& opts,
                           int64_t pool_size, RefPositions* positions) {
  if (ref_indices.empty()) {
    return absl::InvalidArgumentError("ref_indices: empty reference set (K == 0)");
  }
  if (ref_labels.size() != ref_indices.size()) {
    return absl::InvalidArgumentError(absl::StrCat("ref_labels: ", ref_labels.size(),
                                                   " values for K = ", ref_indices.size(),
                                                   " reference indices"));
  }
  if (!(std::isfinite(opts.tau) && opts.tau > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SimilarityOptions.tau: ", opts.tau, ", expected a finite number > 0"));
  }
  if (opts.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SimilarityOptions.top_k: ", opts.top_k, ", expected >= 0"));
  }
  positions->reserve(ref_indices.size());
  for (size_t j = 0; j < ref_indices.size(); ++j) {
    const int64_t index = ref_indices[j];
    if (index < 0 || index >= pool_size) {
      return absl::InvalidArgumentError(absl::StrCat("ref_indices[", j, "] = ", index,
                                                     " is outside the pool [0, ", pool_size, ")"));
    }
    auto [it, inserted] = positions->try_emplace(index, static_cast<int32_t>(j));
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("ref_indices[", j, "] = ", index, " repeats ref_indices[", it->second, "]"));
    }
    if (!std::isfinite(ref_labels[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat("ref_labels[", j, "] = ", ref_labels[j], " is not finite"));
    }
  }
  return absl::OkStatus();
}

// Factor applied to (s - max s) before exp: score_scale / tau, kept finite for tiny tau (a
// finite factor times the zero of the row max stays 0, so the max always gets weight 1).
float ExponentFactor(float score_scale, float tau) {
  const double c = static_cast<double>(score_scale) / static_cast<double>(tau);
  return static_cast<float>(std::min(c, static_cast<double>(std::numeric_limits<float>::max())));
}

double Mean(absl::Span<const float> v) {
  double sum = 0;
  for (float x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

// Softmax-weighted label average over `count` scores, written to *base (scores become the
// unnormalised weights). Returns false, writing nothing, when every score is -inf (no candidate).
bool WeightedAverage(float* scores, const float* labels, int64_t count, float factor, float* base) {
  if (count == 0) return false;
  Eigen::Map<Eigen::ArrayXf> s(scores, count);
  const float max = s.maxCoeff();
  if (max == -std::numeric_limits<float>::infinity()) return false;
  s = ((s - max) * factor).exp();
  const float numerator = s.matrix().dot(Eigen::Map<const Eigen::VectorXf>(labels, count));
  *base = numerator / s.sum();
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SimilarityScorer>> SimilarityScorer::Create(
    std::shared_ptr<const Adapter> adapter, FloatMatrix embeddings) {
  if (adapter == nullptr) return absl::InvalidArgumentError("SimilarityScorer: null adapter");
  if (embeddings.rows < 1) return absl::InvalidArgumentError("embeddings: empty pool (N == 0)");
  if (embeddings.cols != adapter->input_dim() ||
      static_cast<int64_t>(embeddings.data.size()) != embeddings.rows * embeddings.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embeddings: ", embeddings.rows, " x ", embeddings.cols, " (", embeddings.data.size(),
        " values), expected N x ", adapter->input_dim(), " (the adapter's input dimension)"));
  }
  for (size_t k = 0; k < embeddings.data.size(); ++k) {
    if (!std::isfinite(embeddings.data[k])) {
      return absl::InvalidArgumentError(absl::StrCat("embeddings: row ", k / embeddings.cols,
                                                     ", column ", k % embeddings.cols,
                                                     ": non-finite value ", embeddings.data[k]));
    }
  }
  FloatMatrix projections;
  adapter->ProjectQuery(embeddings, &projections);
  // The identity adapter projects references exactly like queries, so the cached projections
  // serve both and the embeddings need not be kept.
  if (adapter->is_identity()) embeddings = FloatMatrix();
  return std::unique_ptr<SimilarityScorer>(
      new SimilarityScorer(std::move(adapter), std::move(embeddings), std::move(projections)));
}

absl::StatusOr<std::unique_ptr<SimilarityScorer>> SimilarityScorer::CreateFromProjections(
    std::shared_ptr<const Adapter> adapter, FloatMatrix embeddings_of_pool_or_empty,
    FloatMatrix query_projections) {
  if (adapter == nullptr) return absl::InvalidArgumentError("SimilarityScorer: null adapter");
  const FloatMatrix& q = query_projections;
  if (q.rows < 1 || q.cols != adapter->output_dim() ||
      static_cast<int64_t>(q.data.size()) != q.rows * q.cols) {
    return absl::InvalidArgumentError(absl::StrCat("query_projections: ", q.rows, " x ", q.cols,
                                                   " (", q.data.size(), " values), expected N x ",
                                                   adapter->output_dim(), " with N >= 1"));
  }
  const FloatMatrix& e = embeddings_of_pool_or_empty;
  if (!e.empty() && (e.rows != q.rows || e.cols != adapter->input_dim() ||
                     static_cast<int64_t>(e.data.size()) != e.rows * e.cols)) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings: ", e.rows, " x ", e.cols,
                                                   ", expected empty or ", q.rows, " x ",
                                                   adapter->input_dim()));
  }
  if (adapter->is_identity()) embeddings_of_pool_or_empty = FloatMatrix();  // see Create
  return std::unique_ptr<SimilarityScorer>(new SimilarityScorer(
      std::move(adapter), std::move(embeddings_of_pool_or_empty), std::move(query_projections)));
}

int64_t SimilarityScorer::BytesPerQuestion() const {
  const int64_t floats = query_proj_.cols + (embeddings_.empty() ? 0 : embeddings_.cols);
  return floats * static_cast<int64_t>(sizeof(float));
}

absl::Status SimilarityScorer::ProjectReferences(absl::Span<const int64_t> ref_indices,
                                                 FloatMatrix* out) const {
  if (adapter_->is_identity()) {
    *out = FloatMatrix(static_cast<int64_t>(ref_indices.size()), query_proj_.cols);
    for (size_t j = 0; j < ref_indices.size(); ++j) {
      std::copy_n(query_proj_.row(ref_indices[j]), query_proj_.cols, out->row(j));
    }
    return absl::OkStatus();
  }
  if (embeddings_.empty()) {
    return absl::FailedPreconditionError(
        "SimilarityScorer holds no pool embeddings (built from projections only): use "
        "PredictProjected with reference projections");
  }
  FloatMatrix refs(static_cast<int64_t>(ref_indices.size()), embeddings_.cols);
  for (size_t j = 0; j < ref_indices.size(); ++j) {
    std::copy_n(embeddings_.row(ref_indices[j]), embeddings_.cols, refs.row(j));
  }
  adapter_->ProjectRef(refs, out);
  return absl::OkStatus();
}

absl::Status SimilarityScorer::Predict(absl::Span<const int64_t> ref_indices,
                                       absl::Span<const float> ref_labels,
                                       const SimilarityOptions& opts,
                                       absl::Span<float> base_out) const {
  // Validated before projecting, so that ProjectReferences only sees indices in range;
  // PredictProjected checks the rest.
  RefPositions positions;
  DOTS_RETURN_IF_ERROR(ValidateRound(ref_indices, ref_labels, opts, size(), &positions));
  FloatMatrix refs;
  DOTS_RETURN_IF_ERROR(ProjectReferences(ref_indices, &refs));
  return PredictProjected(ref_indices, refs, ref_labels, opts, base_out);
}

absl::Status SimilarityScorer::PredictSubset(absl::Span<const int64_t> queries,
                                             absl::Span<const int64_t> ref_indices,
                                             absl::Span<const float> ref_labels,
                                             const SimilarityOptions& opts,
                                             absl::Span<float> base_out) const {
  RefPositions positions;
  DOTS_RETURN_IF_ERROR(ValidateRound(ref_indices, ref_labels, opts, size(), &positions));
  if (base_out.size() != queries.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base_out: ", base_out.size(), " entries, expected ", queries.size(), " (one per query)"));
  }
  for (size_t t = 0; t < queries.size(); ++t) {
    if (queries[t] < 0 || queries[t] >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("queries[", t, "] = ", queries[t],
                                                     " is outside the pool [0, ", size(), ")"));
    }
  }
  if (queries.empty()) return absl::OkStatus();
  FloatMatrix refs;
  DOTS_RETURN_IF_ERROR(ProjectReferences(ref_indices, &refs));
  return Score(queries.data(), static_cast<int64_t>(queries.size()), ref_indices, refs, ref_labels,
               opts, base_out);
}

absl::Status SimilarityScorer::PredictProjected(absl::Span<const int64_t> ref_indices,
                                                const FloatMatrix& ref_projections,
                                                absl::Span<const float> ref_labels,
                                                const SimilarityOptions& opts,
                                                absl::Span<float> base_out) const {
  RefPositions positions;
  DOTS_RETURN_IF_ERROR(ValidateRound(ref_indices, ref_labels, opts, size(), &positions));
  if (static_cast<int64_t>(base_out.size()) != size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("base_out: ", base_out.size(), " entries, expected N = ", size()));
  }
  const int64_t k = static_cast<int64_t>(ref_indices.size());
  if (ref_projections.rows != k || ref_projections.cols != query_proj_.cols ||
      static_cast<int64_t>(ref_projections.data.size()) != k * ref_projections.cols) {
    return absl::InvalidArgumentError(absl::StrCat("ref_projections: ", ref_projections.rows, " x ",
                                                   ref_projections.cols, ", expected ", k, " x ",
                                                   query_proj_.cols));
  }
  return Score(nullptr, size(), ref_indices, ref_projections, ref_labels, opts, base_out);
}

absl::Status SimilarityScorer::Score(const int64_t* queries, int64_t num_queries,
                                     absl::Span<const int64_t> ref_indices,
                                     const FloatMatrix& ref_projections,
                                     absl::Span<const float> ref_labels,
                                     const SimilarityOptions& opts,
                                     absl::Span<float> base_out) const {
  const int64_t k = static_cast<int64_t>(ref_indices.size());
  const int64_t h = query_proj_.cols;
  const float factor = ExponentFactor(adapter_->score_scale(), opts.tau);
  const float fallback = static_cast<float>(Mean(ref_labels));
  const float* labels = ref_labels.data();
  RefPositions self_position;  // only filled for leave-one-out
  if (opts.leave_one_out) {
    for (int64_t j = 0; j < k; ++j) self_position[ref_indices[j]] = static_cast<int32_t>(j);
  }
  auto pool_index = [&](int64_t t) { return queries == nullptr ? t : queries[t]; };
  auto self_of = [&](int64_t pool) -> int32_t {
    if (!opts.leave_one_out) return -1;
    auto it = self_position.find(pool);
    return it == self_position.end() ? -1 : it->second;
  };

  if (opts.top_k > 0 && opts.top_k < k) {
    // Top-k path: FAISS returns each query's best references by raw inner product, sorted
    // descending; one extra neighbour covers the query's own entry under leave-one-out.
    const int64_t k_search = std::min<int64_t>(opts.top_k + (opts.leave_one_out ? 1 : 0), k);
    try {
      faiss::IndexFlatIP index(static_cast<int>(h));
      index.add(k, ref_projections.data.data());
      std::vector<float> distances;
      std::vector<int64_t> neighbours;
      FloatMatrix gathered;
      for (int64_t c0 = 0; c0 < num_queries; c0 += kTopKChunkRows) {
        const int64_t rows = std::min(kTopKChunkRows, num_queries - c0);
        const float* q = nullptr;
        if (queries == nullptr) {
          q = query_proj_.row(c0);
        } else {
          gathered = FloatMatrix(rows, h);
          for (int64_t t = 0; t < rows; ++t) {
            std::copy_n(query_proj_.row(queries[c0 + t]), h, gathered.row(t));
          }
          q = gathered.data.data();
        }
        distances.resize(static_cast<size_t>(rows * k_search));
        neighbours.resize(static_cast<size_t>(rows * k_search));
        index.search(rows, q, k_search, distances.data(), neighbours.data());
#pragma omp parallel
        {
          std::vector<float> s(static_cast<size_t>(opts.top_k)), y(s.size());
#pragma omp for schedule(static)
          for (int64_t t = 0; t < rows; ++t) {
            const int32_t self = self_of(pool_index(c0 + t));
            int64_t kept = 0;
            for (int64_t r = 0; r < k_search && kept < opts.top_k; ++r) {
              const int64_t j = neighbours[t * k_search + r];
              if (j < 0 || j == self) continue;
              s[kept] = distances[t * k_search + r];
              y[kept] = labels[j];
              ++kept;
            }
            if (!WeightedAverage(s.data(), y.data(), kept, factor, &base_out[c0 + t])) {
              base_out[c0 + t] = fallback;
            }
          }
        }
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("FAISS top-k search failed: ", e.what()));
    }
    return absl::OkStatus();
  }

  // Dense path: S = Q_block * R^T, then the row softmax and weighted sum, per block.
  const ConstRowMap refs(ref_projections.data.data(), k, h);
  // Equal blocks, their count a multiple of the thread count, so no thread idles at the end
  // (5 blocks on 2 threads would cost 3 block-times instead of 2.5).
  const int64_t threads = std::max(1, omp_get_max_threads());
  int64_t num_blocks = (num_queries + kBlockRows - 1) / kBlockRows;
  if (num_blocks > 1) num_blocks = (num_blocks + threads - 1) / threads * threads;
  const int64_t block_rows = (num_queries + num_blocks - 1) / num_blocks;
  num_blocks = (num_queries + block_rows - 1) / block_rows;
  auto run_block = [&](int64_t b, RowMatrix& scores, RowMatrix& gathered) {
    const int64_t r0 = b * block_rows;
    const int64_t rows = std::min(block_rows, num_queries - r0);
    scores.resize(rows, k);
    if (queries == nullptr) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(k), static_cast<int>(h), 1.0f, query_proj_.row(r0),
                  static_cast<int>(h), refs.data(), static_cast<int>(h), 0.0f, scores.data(),
                  static_cast<int>(k));
    } else {
      gathered.resize(rows, h);
      for (int64_t t = 0; t < rows; ++t) {
        gathered.row(t) = Eigen::Map<const Eigen::RowVectorXf>(query_proj_.row(queries[r0 + t]), h);
      }
      scores.noalias() = gathered * refs.transpose();
    }
    for (int64_t t = 0; t < rows; ++t) {
      float* s = scores.row(t).data();
      const int32_t self = self_of(pool_index(r0 + t));
      if (self >= 0) s[self] = -std::numeric_limits<float>::infinity();
      if (!WeightedAverage(s, labels, k, factor, &base_out[r0 + t])) base_out[r0 + t] = fallback;
    }
  };
  if (num_blocks == 1) {
    RowMatrix scores, gathered;
    run_block(0, scores, gathered);  // Eigen parallelises this single GEMM itself
    return absl::OkStatus();
  }
#pragma omp parallel
  {
    RowMatrix scores, gathered;  // per-thread scratch, reused across blocks
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < num_blocks; ++b) run_block(b, scores, gathered);
  }
  return absl::OkStatus();
}

}  // namespace dots
