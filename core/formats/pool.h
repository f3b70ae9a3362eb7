// The question pool of a run: questions (key, prompt, opaque metadata, optional prior success
// rate) and, optionally, one fixed-dimension float32 embedding per question. Plus the loader for
// the JSONL (+ optional .npy) files a pool is imported from.
//
// JSONL format, one JSON object per line:
//   {"key": "q17", "prompt": "Compute ...", "metadata": {...}, "prior": 0.25,
//    "embedding": [0.1, -0.3, ...]}
// "key" (non-empty string, <= kMaxKeyBytes) and "prompt" (string, may be empty) are required;
// "metadata" is any JSON value and is kept byte-for-byte ("{}" when absent); "prior" is a number
// in [0, 1] or null (absent); "embedding" is an optional inline array of finite numbers. Unknown
// fields (e.g. "history", "pass_rate") are ignored.
#ifndef DOTS_CORE_FORMATS_POOL_H_
#define DOTS_CORE_FORMATS_POOL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace dots {

inline constexpr int kMaxEmbeddingDim = 65536;
inline constexpr size_t kMaxKeyBytes = 4096;

class Pool {
 public:
  Pool() = default;  // empty, dim 0

  int64_t size() const { return static_cast<int64_t>(questions_.size()); }
  int dim() const { return dim_; }  // 0 when the pool has no embeddings
  bool has_embeddings() const { return dim_ > 0; }
  // Requires 0 <= i < size().
  const Question& question(int64_t i) const { return questions_[static_cast<size_t>(i)]; }
  const std::vector<Question>& questions() const { return questions_; }
  // Index of the question with `key`, or nullopt. O(1) expected (hash lookup).
  std::optional<int64_t> IndexOf(std::string_view key) const;
  // size() x dim(), row-major, row i belongs to question(i); empty (0 x 0) when none.
  const FloatMatrix& embeddings() const { return embeddings_; }

  // Appends a question. `embedding` is empty or exactly dim() floats; the first embedded question
  // of an empty pool fixes dim() (1..kMaxEmbeddingDim). Rejects (InvalidArgument, pool unchanged):
  // empty, over-long or duplicate keys; a prior outside [0, 1] or non-finite; non-finite
  // embedding values; a dimension mismatch; mixing embedded and non-embedded questions.
  // Amortised O(dim + len(key)).
  absl::Status Add(Question q, absl::Span<const float> embedding = {});

  // Replaces all embeddings at once (used by the text embedder for text-only pools). Requires
  // m.rows == size(), 1 <= m.cols <= kMaxEmbeddingDim, m.data.size() == rows * cols and all
  // values finite; otherwise InvalidArgument and the pool is unchanged. O(rows * cols).
  absl::Status SetEmbeddings(FloatMatrix m);

  // Replaces question i in place (same key; an embedding of the pool's dimension, or none when
  // the pool has none). Validates like Add; changes nothing on error. O(dim).
  absl::Status Replace(int64_t i, Question q, absl::Span<const float> embedding = {});

  // Pre-allocates room for `n` questions and their embeddings (a capacity hint; changes no
  // observable state). O(n) allocation.
  void Reserve(int64_t n);

 private:
  std::vector<Question> questions_;
  absl::flat_hash_map<std::string, int64_t> index_;
  FloatMatrix embeddings_;
  int dim_ = 0;
  int64_t reserved_ = 0;  // Reserve's hint, applied to embeddings_ once dim_ is known
};

// One parsed JSONL line.
struct ParsedQuestionLine {
  Question question;
  std::vector<float> embedding;  // empty when the line has no "embedding"
};

// Parses one JSONL line into a question (validated as Pool::Add would, except uniqueness).
// Errors are InvalidArgument naming the field, e.g. "field \"prior\": 1.5 is outside [0, 1]",
// without a file or line (the caller adds those). O(len(line)). Does not block.
absl::StatusOr<ParsedQuestionLine> ParseQuestionLine(std::string_view line);

// Loads a pool from a JSONL file, and its embeddings from `npy_path` if non-empty (then the .npy
// must be N x D with N == number of questions, and inline "embedding" fields are an error).
// Blank lines (only whitespace) are skipped; a missing final newline is fine; a file with no
// questions at all is an error. Every error is
// InvalidArgument (NotFound / Internal for I/O) naming file:line and the field, e.g.
//   questions.jsonl:17: field "prior": 1.5 is outside [0, 1]
// and nothing is half-loaded: on error no pool is returned. Cost: O(file bytes + N * D); reads
// both files fully into memory; blocks on file I/O.
// `progress`, when given, is called with the number of questions parsed so far about every
// tenth of the file (on the calling thread), for progress reporting.
absl::StatusOr<Pool> LoadPool(const std::string& jsonl_path, const std::string& npy_path = "",
                              const std::function<void(int64_t)>& progress = nullptr);

}  // namespace dots

#endif  // DOTS_CORE_FORMATS_POOL_H_
