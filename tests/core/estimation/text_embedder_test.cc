#include "core/estimation/text_embedder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dots {
namespace {

std::vector<float> EmbedOne(const TextEmbedder& embedder, std::string_view text) {
  std::vector<float> out(embedder.dim(), -1.0f);
  embedder.Embed(text, out.data());
  return out;
}

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += double{a[i]} * b[i];
  return sum;
}

double Norm(const std::vector<float>& a) { return std::sqrt(Dot(a, a)); }

const std::vector<std::string>& MathCorpus() {
  static const auto* corpus = new std::vector<std::string>{
      "Find the area of the triangle with sides 3, 4 and 5.",
      "Find the area of a triangle whose sides are 5, 12 and 13.",
      "What is the area of an equilateral triangle with side length 6?",
      "Compute the probability that two fair dice sum to 7.",
      "A fair coin is flipped 10 times. What is the probability of exactly 4 heads?",
      "Evaluate $\\int_0^1 x^2 \\, dx$.",
      "Compute $\\frac{1}{2} + \\frac{1}{3}$ as a reduced fraction.",
      "Let $f(x) = x^2 - 4x + 3$. Find the roots of $f$.",
      "Solve for $x$: $2x + 3 = 11$.",
      "How many positive divisors does 360 have?",
      "Find the greatest common divisor of 84 and 126.",
      "The sum of two numbers is 20 and their difference is 4. Find the larger number.",
  };
  return *corpus;
}

TEST(TextEmbedderTest, OutputHasDimAndUnitNorm) {
  for (int dim : {16, 256, 300}) {
    TextEmbedderOptions options;
    options.dim = dim;
    const TextEmbedder embedder = TextEmbedder::Fit(MathCorpus(), options);
    ASSERT_EQ(embedder.dim(), dim);
    for (const std::string& text : MathCorpus()) {
      const std::vector<float> e = EmbedOne(embedder, text);
      EXPECT_NEAR(Norm(e), 1.0, 1e-5) << text;
    }
    // Unseen text, punctuation only (character n-grams still see it), non-ASCII bytes.
    for (std::string_view text : {"zebra quagga okapi", "?!", "Ünïcødé ∑ ≤ π"}) {
      EXPECT_NEAR(Norm(EmbedOne(embedder, text)), 1.0, 1e-5) << text;
    }
  }
}

TEST(TextEmbedderTest, EmptyOrWhitespaceTextIsAllZeros) {
  const TextEmbedder embedder = TextEmbedder::Fit(MathCorpus(), TextEmbedderOptions());
  for (std::string_view text : {"", " ", "\n\t  \r\n"}) {
    const std::vector<float> e = EmbedOne(embedder, text);
    EXPECT_THAT(e, ::testing::Each(0.0f)) << "\"" << text << "\"";
  }
  // Without character n-grams, text with no word has no feature either.
  TextEmbedderOptions words_only;
  words_only.max_char_ngram = 0;
  const TextEmbedder word_embedder = TextEmbedder::Fit(MathCorpus(), words_only);
  EXPECT_THAT(EmbedOne(word_embedder, "?! + = ()"), ::testing::Each(0.0f));
  EXPECT_NEAR(Norm(EmbedOne(word_embedder, "triangle")), 1.0, 1e-5);
}

TEST(TextEmbedderTest, DeterministicAndSeedDependent) {
  const TextEmbedderOptions options;
  const TextEmbedder first = TextEmbedder::Fit(MathCorpus(), options);
  const TextEmbedder second = TextEmbedder::Fit(MathCorpus(), options);
  const std::string text = "Find the area of the triangle with sides 7, 8 and 9.";
  EXPECT_EQ(EmbedOne(first, text), EmbedOne(second, text));  // Bitwise.

  TextEmbedderOptions reseeded = options;
  reseeded.seed = options.seed + 1;
  const TextEmbedder other = TextEmbedder::Fit(MathCorpus(), reseeded);
  // A different projection: the embeddings are nearly orthogonal, not equal.
  EXPECT_LT(std::fabs(Dot(EmbedOne(first, text), EmbedOne(other, text))), 0.5);
}

TEST(TextEmbedderTest, EmbedAllMatchesEmbedForAnyThreadCount) {
  std::vector<std::string> texts;
  for (int i = 0; i < 600; ++i) {  // Enough texts for the parallel path (>= 256).
    texts.push_back(absl::StrCat(MathCorpus()[i % MathCorpus().size()], " Variant ", i, "."));
  }
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const TextEmbedder serial_fit = TextEmbedder::Fit(texts, TextEmbedderOptions());
  const FloatMatrix serial = serial_fit.EmbedAll(texts);
  omp_set_num_threads(3);
  const TextEmbedder parallel_fit = TextEmbedder::Fit(texts, TextEmbedderOptions());
  const FloatMatrix parallel = parallel_fit.EmbedAll(texts);
  omp_set_num_threads(saved_threads);

  ASSERT_EQ(serial.rows, 600);
  ASSERT_EQ(serial.cols, 256);
  EXPECT_EQ(serial.data, parallel.data);
  for (int64_t i : {0, 17, 599}) {
    const std::vector<float> single = EmbedOne(parallel_fit, texts[i]);
    EXPECT_EQ(std::vector<float>(parallel.row(i), parallel.row(i) + parallel.cols), single);
  }
}

TEST(TextEmbedderTest, SimilarTextsAreCloserThanUnrelatedOnes) {
  const TextEmbedder embedder = TextEmbedder::Fit(MathCorpus(), TextEmbedderOptions());
  struct Triple {
    std::string_view anchor, similar, unrelated;
  };
  const Triple triples[] = {
      {"Find the area of the triangle with sides 6, 8 and 10.",
       "What is the area of a triangle with sides 9, 12 and 15?",
       "How many positive divisors does 1000 have?"},
      {"What is the probability of rolling a sum of 9 with two fair dice?",
       "Two fair dice are rolled. Find the probability that the sum is 5.",
       "Solve for $y$: $3y - 7 = 20$."},
      {"Compute $\\frac{2}{3} + \\frac{3}{4}$.", "Simplify $\\frac{5}{6} - \\frac{1}{4}$.",
       "A coin is flipped 8 times; what is the chance of 8 heads?"},
  };
  for (const Triple& t : triples) {
    const std::vector<float> anchor = EmbedOne(embedder, t.anchor);
    const double similar = Dot(anchor, EmbedOne(embedder, t.similar));
    const double unrelated = Dot(anchor, EmbedOne(embedder, t.unrelated));
    EXPECT_GT(similar, unrelated + 0.1) << t.anchor;
  }
  // Identical text: cosine 1.
  const std::vector<float> e = EmbedOne(embedder, triples[0].anchor);
  EXPECT_NEAR(Dot(e, EmbedOne(embedder, triples[0].anchor)), 1.0, 1e-5);
}

TEST(TextEmbedderTest, CaseAndWhitespaceAreNormalised) {
  const TextEmbedder embedder = TextEmbedder::Fit(MathCorpus(), TextEmbedderOptions());
  EXPECT_EQ(EmbedOne(embedder, "Triangle ABC has Area 6"),
            EmbedOne(embedder, "triangle abc has area 6"));
  EXPECT_EQ(EmbedOne(embedder, "  a  b\n\tc "), EmbedOne(embedder, "a b c"));
  EXPECT_NE(EmbedOne(embedder, "a b c"), EmbedOne(embedder, "a b d"));
}

// Smoothed IDF: idf = ln((1 + n) / (1 + df)) + 1.
TEST(TextEmbedderTest, FitLearnsSmoothedIdf) {
  const std::vector<std::string> corpus = {"the cat sat", "the dog ran", "the cat ran",
                                           "the zebra slept"};
  const double n = corpus.size();
  const TextEmbedder embedder = TextEmbedder::Fit(corpus, TextEmbedderOptions());
  EXPECT_NEAR(embedder.WordIdf("the"), std::log((1 + n) / (1 + 4)) + 1, 1e-6);  // = 1.
  EXPECT_NEAR(embedder.WordIdf("cat"), std::log((1 + n) / (1 + 2)) + 1, 1e-6);
  EXPECT_NEAR(embedder.WordIdf("zebra"), std::log((1 + n) / (1 + 1)) + 1, 1e-6);
  EXPECT_NEAR(embedder.WordIdf("okapi"), std::log((1 + n) / (1 + 0)) + 1, 1e-6);
  EXPECT_LT(embedder.WordIdf("the"), embedder.WordIdf("cat"));

  // An empty corpus: idf = ln(1) + 1 = 1 for everything.
  const TextEmbedder unfitted = TextEmbedder::Fit({}, TextEmbedderOptions());
  EXPECT_FLOAT_EQ(unfitted.WordIdf("the"), 1.0f);
  EXPECT_FLOAT_EQ(unfitted.WordIdf("zebra"), 1.0f);
}

// A term present in every document weighs less, so a text mixing it with a rare term points
// towards the rare term.
TEST(TextEmbedderTest, CommonTermHasLowerWeightInEmbedding) {
  TextEmbedderOptions options;
  options.max_char_ngram = 0;  // Words only: exactly two features per text below.
  options.dim = 1024;          // Keeps the projection's distortion small for this comparison.
  std::vector<std::string> corpus;
  for (int i = 0; i < 50; ++i) corpus.push_back(absl::StrCat("common filler", i));
  corpus.push_back("common rare");
  const TextEmbedder fitted = TextEmbedder::Fit(corpus, options);
  const std::vector<float> mixed = EmbedOne(fitted, "common rare");
  const double to_rare = Dot(mixed, EmbedOne(fitted, "rare"));
  const double to_common = Dot(mixed, EmbedOne(fitted, "common"));
  // Weights 1 (common) and ln(52/2) + 1 = 4.26 (rare): cosines 0.97 and 0.23 in exact arithmetic.
  EXPECT_GT(to_rare, 0.9);
  EXPECT_LT(to_common, 0.4);

  const TextEmbedder unfitted = TextEmbedder::Fit({}, options);
  const std::vector<float> plain = EmbedOne(unfitted, "common rare");
  EXPECT_NEAR(Dot(plain, EmbedOne(unfitted, "rare")), Dot(plain, EmbedOne(unfitted, "common")),
              0.15);  // Equal weights: both ~0.71 up to projection noise.
}

// With one output coordinate per feature (s = 1) two words land on different coordinates unless
// they collide (probability 1/dim), so cosines are exact: "x" four times and "y" once weigh
// 1 + ln 4 and 1 (unfitted IDF = 1), i.e. cos(e, e("x")) = 2.386 / sqrt(2.386^2 + 1) = 0.9223
// (raw counts would give 0.970, binary ones 0.707).
TEST(TextEmbedderTest, SublinearTermFrequency) {
  TextEmbedderOptions options;
  options.max_char_ngram = 0;
  options.dim = 1024;
  options.projection_nonzeros = 1;
  const TextEmbedder embedder = TextEmbedder::Fit({}, options);
  const std::vector<float> e = EmbedOne(embedder, "x x x x y");
  const std::vector<float> x = EmbedOne(embedder, "x");
  ASSERT_EQ(Dot(x, EmbedOne(embedder, "y")), 0.0) << "x and y collide for this seed";
  const double tf_weight = 1.0 + std::log(4.0);
  EXPECT_NEAR(Dot(e, x), tf_weight / std::sqrt(tf_weight * tf_weight + 1.0), 1e-5);
}

TEST(TextEmbedderTest, LatexCommandsAreSingleTokens) {
  const std::vector<std::string> corpus = {"$\\frac{1}{2}$", "$\\frac{a}{b} + \\sqrt{2}$",
                                           "\\frac{3}{4} of the cake"};
  const TextEmbedder embedder = TextEmbedder::Fit(corpus, TextEmbedderOptions());
  EXPECT_NEAR(embedder.WordIdf("\\frac"), 1.0, 1e-6);  // In every document.
  // "frac" alone is never a token, so it has the IDF of an unseen word.
  EXPECT_NEAR(embedder.WordIdf("frac"), std::log(4.0) + 1, 1e-6);
  EXPECT_NEAR(embedder.WordIdf("\\sqrt"), std::log(4.0 / 2.0) + 1, 1e-6);
  EXPECT_NEAR(embedder.WordIdf("2"), std::log(4.0 / 3.0) + 1, 1e-6);  // Digits are words.
}

TEST(TextEmbedderTest, ValidateOptions) {
  EXPECT_TRUE(ValidateTextEmbedderOptions(TextEmbedderOptions()).ok());
  TextEmbedderOptions no_chars;
  no_chars.max_char_ngram = 0;
  no_chars.min_char_ngram = 99;  // Irrelevant when character n-grams are off.
  EXPECT_TRUE(ValidateTextEmbedderOptions(no_chars).ok());

  auto invalid = [](auto mutate, std::string_view field) {
    TextEmbedderOptions options;
    mutate(options);
    const absl::Status status = ValidateTextEmbedderOptions(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(std::string(field)));
  };
  invalid([](TextEmbedderOptions& o) { o.dim = 0; }, "dim");
  invalid([](TextEmbedderOptions& o) { o.hash_bits = 7; }, "hash_bits");
  invalid([](TextEmbedderOptions& o) { o.hash_bits = 25; }, "hash_bits");
  invalid([](TextEmbedderOptions& o) { o.max_char_ngram = 17; }, "max_char_ngram");
  invalid([](TextEmbedderOptions& o) { o.min_char_ngram = 5; }, "min_char_ngram");
  invalid([](TextEmbedderOptions& o) { o.min_char_ngram = 0; }, "min_char_ngram");
  invalid([](TextEmbedderOptions& o) { o.projection_nonzeros = 0; }, "projection_nonzeros");
  invalid(
      [](TextEmbedderOptions& o) {
        o.dim = 8;
        o.projection_nonzeros = 9;
      },
      "projection_nonzeros");
  invalid([](TextEmbedderOptions& o) { o.word_weight = -1.0f; }, "word_weight");
  invalid([](TextEmbedderOptions& o) { o.word_weight = std::nanf(""); }, "word_weight");
}

TEST(TextEmbedderTest, FitClampsInvalidOptions) {
  TextEmbedderOptions options;
  options.dim = 0;
  options.projection_nonzeros = 10;
  options.min_char_ngram = 9;
  options.max_char_ngram = 40;
  options.hash_bits = 2;
  const TextEmbedder embedder = TextEmbedder::Fit(MathCorpus(), options);
  EXPECT_EQ(embedder.dim(), 1);
  EXPECT_EQ(embedder.options().projection_nonzeros, 1);
  EXPECT_EQ(embedder.options().max_char_ngram, 16);
  EXPECT_EQ(embedder.options().hash_bits, 8);
  EXPECT_TRUE(ValidateTextEmbedderOptions(embedder.options()).ok());
  const std::vector<float> e = EmbedOne(embedder, "a triangle");
  EXPECT_NEAR(std::fabs(e[0]), 1.0f, 1e-6f);  // One coordinate, L2-normalised.
}

}  // namespace
}  // namespace dots
