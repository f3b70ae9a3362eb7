// Text-only question embeddings for pools that ship no embeddings (the bundled data in
// data/ has only prompts): deterministic hashed word and character n-gram TF-IDF,
// followed by a sparse signed random projection (a count sketch / very sparse JL transform) to
// `dim` coordinates, L2-normalised. Cosine similarity of two embeddings then approximates the
// cosine similarity of the two texts' TF-IDF vectors.
//
// Features of a text, after lowercasing ASCII:
//   * words: maximal runs of [a-z0-9] and non-ASCII bytes (UTF-8 letters and symbols stay whole),
//     plus LaTeX commands: a backslash followed by letters ("\frac", "\sqrt") is one token;
//   * word bigrams (optional): consecutive word pairs;
//   * character n-grams, n in [min_char_ngram, max_char_ngram], over the text with whitespace runs
//     collapsed to one space and one space of padding at each end (so they also see operators,
//     digits and punctuation: "x^2", "{3}").
// Each feature is hashed (seeded FNV-1a 64 with a SplitMix64 finaliser; never std::hash, so the
// output is the same on every run and machine) into one of 2^hash_bits buckets. Weight of a
// bucket in a text: (1 + ln tf) * idf, idf = ln((1 + n) / (1 + df)) + 1 (smoothed, as in
// scikit-learn), n = corpus size and df = number of corpus texts containing the bucket. Each
// bucket adds ±weight / sqrt(s) to s pseudo-random output coordinates (s =
// projection_nonzeros); the result is L2-normalised.
#ifndef DOTS_CORE_ESTIMATION_TEXT_EMBEDDER_H_
#define DOTS_CORE_ESTIMATION_TEXT_EMBEDDER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace dots {

// Defaults chosen on data/oneshot-rlvr (1,209 questions): leave-one-out prediction of
// a question's first-visit success rate as the softmax(cosine / 0.1)-weighted mean over its 32
// nearest neighbours; Pearson r, mean over 8 projection seeds (seed sd 0.01-0.025):
//              words  words+bigrams  char3-4+words  same,word_weight2  char3-5+words+bigrams
//   dim 256    0.276  0.199          0.264          0.273              0.242
//   dim 512    0.291  0.238          0.303          0.300              0.289
// Bigrams hurt (rare features that mostly add projection noise), hence off by default. The
// unprojected TF-IDF (dim 16384) reaches ~0.34. For scale: log(prompt length) alone gives
// r = -0.33, and a larger model's pass rate (the `prior` of 898 of them) 0.77.
struct TextEmbedderOptions {
  // Output dimension, >= 1.
  int dim = 256;
  // Character n-gram lengths, 1 <= min_char_ngram <= max_char_ngram <= 16; max_char_ngram = 0
  // turns character n-grams off.
  int min_char_ngram = 3;
  int max_char_ngram = 4;
  bool word_bigrams = false;
  // Fixes the hash functions and the projection's coordinates and signs.
  uint64_t seed = 0x646f7473;
  // log2 of the number of feature buckets (IDF table: 4 * 2^hash_bits bytes). In [8, 24].
  int hash_bits = 20;
  // Output coordinates per bucket (s of the sparse projection), in [1, dim].
  int projection_nonzeros = 4;
  // Multiplier on the weight of word and bigram features relative to character n-grams, which are
  // several times more numerous. Finite, >= 0.
  float word_weight = 2.0f;
};

// OK, or INVALID_ARGUMENT naming the first option outside the ranges documented above. O(1).
absl::Status ValidateTextEmbedderOptions(const TextEmbedderOptions& options);

class TextEmbedder {
 public:
  // Learns IDF weights from `corpus` (document frequencies of hashed features). Options outside
  // their documented ranges are clamped into them (ValidateTextEmbedderOptions reports them as
  // errors instead). An empty corpus gives idf = 1 everywhere (plain sublinear TF). O(total text
  // length * max_char_ngram + 2^hash_bits * threads); allocates the 2^hash_bits IDF table plus one
  // document-frequency table per OpenMP thread while fitting. Deterministic for any thread count.
  // About 0.3 s for the 29,411 DeepScaleR prompts (7.2 MB of text) on one core.
  static TextEmbedder Fit(absl::Span<const std::string> corpus, const TextEmbedderOptions& options);

  int dim() const { return options_.dim; }
  const TextEmbedderOptions& options() const { return options_; }

  // Writes dim() floats to out[0, dim()): L2 norm 1, or all zeros for a text with no features
  // (empty or whitespace only; with character n-grams off, also text without a word). O(F s) for
  // the text's F features (F ~ len * number of n-gram lengths + words), counted in a hash table.
  // Thread-safe (const); allocates only per-call scratch.
  void Embed(std::string_view text, float* out) const;

  // texts.size() x dim() matrix, row i = Embed(texts[i]) bit for bit. Parallel over OpenMP
  // threads (per-thread scratch reused across texts); the result does not depend on the thread
  // count.
  FloatMatrix EmbedAll(absl::Span<const std::string> texts) const;

  // The IDF weight of a word (as the tokenizer would produce it, lower case) or of a LaTeX command
  // such as "\frac". For tests and diagnostics. O(len(word)).
  float WordIdf(std::string_view word) const;

  struct Scratch;  // Internal: per-thread buffers (defined in the .cc).

 private:
  TextEmbedder(const TextEmbedderOptions& options, std::vector<float> idf)
      : options_(options), idf_(std::move(idf)) {}
  void EmbedWith(std::string_view text, float* out, Scratch& scratch) const;

  TextEmbedderOptions options_;
  std::vector<float> idf_;  // 2^hash_bits smoothed IDF weights, indexed by bucket.
};

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_TEXT_EMBEDDER_H_
