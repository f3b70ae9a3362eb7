#include "core/estimation/similarity.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/adapter.h"
#include "core/util/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::HasSubstr;

FloatMatrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  FloatMatrix m(rows, cols);
  for (float& v : m.data) v = static_cast<float>(scale * (2 * rng.UniformOpen() - 1));
  return m;
}

std::vector<float> RandomLabels(int64_t k, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> y(k);
  for (float& v : y) v = static_cast<float>(rng.Below(9)) / 8.0f;  // G = 8 success rates
  return y;
}

std::vector<int64_t> Iota(int64_t n, int64_t start = 0) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::shared_ptr<const Adapter> RandomAdapter(int d, int h, int layers, uint64_t seed) {
  auto a = Adapter::FromTensors(
      MakeRandomAdapterTensors(d, h, layers, CalibrationHead::kGroupLogitTemp, seed), "random");
  EXPECT_TRUE(a.ok()) << a.status();
  return *a;
}

// Double-precision reference of one query's attention average, written from the paper's code:
// scores / sqrt(h) (score_scale), optional top-k, / tau, minus the max, softmax, weighted sum.
double NaiveBase(const float* q, const FloatMatrix& refs, const std::vector<float>& labels,
                 double score_scale, double tau, int top_k, int exclude = -1) {
  std::vector<std::pair<double, int>> s;
  for (int64_t j = 0; j < refs.rows; ++j) {
    if (j == exclude) continue;
    double dot = 0;
    for (int64_t c = 0; c < refs.cols; ++c) dot += static_cast<double>(q[c]) * refs.row(j)[c];
    s.push_back({dot * score_scale, static_cast<int>(j)});
  }
  std::sort(s.begin(), s.end(), std::greater<>());
  if (top_k > 0 && top_k < static_cast<int>(s.size())) s.resize(top_k);
  double num = 0, den = 0;
  for (auto [score, j] : s) {
    const double w = std::exp((score - s[0].first) / tau);
    num += w * labels[j];
    den += w;
  }
  return num / den;
}

struct Fixture {
  std::shared_ptr<const Adapter> adapter;
  FloatMatrix embeddings;
  std::unique_ptr<SimilarityScorer> scorer;
};

Fixture MakeFixture(int64_t n, int d, int h, int layers, uint64_t seed) {
  Fixture f;
  f.adapter = RandomAdapter(d, h, layers, seed);
  f.embeddings = RandomMatrix(n, d, seed + 1);
  auto scorer = SimilarityScorer::Create(f.adapter, f.embeddings);
  EXPECT_TRUE(scorer.ok()) << scorer.status();
  f.scorer = std::move(*scorer);
  return f;
}

FloatMatrix Rows(const FloatMatrix& m, const std::vector<int64_t>& rows) {
  FloatMatrix out(static_cast<int64_t>(rows.size()), m.cols);
  for (size_t t = 0; t < rows.size(); ++t) std::copy_n(m.row(rows[t]), m.cols, out.row(t));
  return out;
}

TEST(SimilarityTest, MatchesNaiveAttentionForEveryQuery) {
  Fixture f = MakeFixture(300, 24, 16, 3, 1);
  const std::vector<int64_t> refs = {5, 17, 42, 99, 100, 250, 299, 0, 3, 77};
  const std::vector<float> y = RandomLabels(refs.size(), 2);
  FloatMatrix ref_proj;
  f.adapter->ProjectRef(Rows(f.embeddings, refs), &ref_proj);
  for (float tau : {1.0f, 0.3f}) {
    for (int top_k : {0, 1, 3, 9, 10, 50}) {
      SCOPED_TRACE(absl::StrCat("tau ", tau, " top_k ", top_k));
      std::vector<float> base(300);
      ASSERT_TRUE(
          f.scorer->Predict(refs, y, {.tau = tau, .top_k = top_k}, absl::MakeSpan(base)).ok());
      for (int64_t i = 0; i < 300; ++i) {
        const double want = NaiveBase(f.scorer->query_projections().row(i), ref_proj, y,
                                      f.adapter->score_scale(), tau, top_k);
        ASSERT_NEAR(base[i], want, 2e-6) << "query " << i;
      }
    }
  }
}

TEST(SimilarityTest, IdenticalReferencesGiveUniformWeights) {
  const int d = 12;
  auto adapter = RandomAdapter(d, 8, 3, 4);
  FloatMatrix e = RandomMatrix(50, d, 5);
  for (int64_t r = 1; r < 6; ++r) std::copy_n(e.row(0), d, e.row(r));  // rows 0..5 identical
  auto scorer = SimilarityScorer::Create(adapter, e);
  ASSERT_TRUE(scorer.ok());
  const std::vector<float> y = {0.0f, 0.25f, 1.0f, 0.5f, 0.125f, 0.875f};
  const double mean = std::accumulate(y.begin(), y.end(), 0.0) / y.size();
  std::vector<float> base(50);
  ASSERT_TRUE((*scorer)->Predict(Iota(6), y, {}, absl::MakeSpan(base)).ok());
  for (float b : base) EXPECT_NEAR(b, mean, 1e-6);
}

TEST(SimilarityTest, DominantReferenceTakesAllWeight) {
  // Identity adapter: scores are cosines; query 0 equals reference 2's direction exactly.
  FloatMatrix e = RandomMatrix(20, 6, 8);
  for (int c = 0; c < 6; ++c) e.row(0)[c] = 3.0f * e.row(12)[c];
  auto scorer = SimilarityScorer::Create(Adapter::Identity(6), e);
  ASSERT_TRUE(scorer.ok());
  const std::vector<int64_t> refs = {10, 11, 12, 13, 14};
  const std::vector<float> y = {0.1f, 0.2f, 0.9f, 0.3f, 0.4f};
  std::vector<float> base(20);
  ASSERT_TRUE((*scorer)->Predict(refs, y, {.tau = 1e-3f}, absl::MakeSpan(base)).ok());
  EXPECT_NEAR(base[0], 0.9f, 1e-6);
  EXPECT_NEAR(base[12], 0.9f, 1e-6);
  // Absurdly small tau must not overflow: still the argmax label, never NaN.
  ASSERT_TRUE((*scorer)->Predict(refs, y, {.tau = 1e-38f}, absl::MakeSpan(base)).ok());
  EXPECT_FLOAT_EQ(base[0], 0.9f);
  for (float b : base) EXPECT_TRUE(std::isfinite(b));
  // Very large tau flattens the attention to the plain mean.
  ASSERT_TRUE((*scorer)->Predict(refs, y, {.tau = 1e7f}, absl::MakeSpan(base)).ok());
  for (float b : base) EXPECT_NEAR(b, 0.38f, 1e-5);
}

TEST(SimilarityTest, BaseStaysWithinLabelRangeAndFlipsWithLabels) {
  Fixture f = MakeFixture(2000, 16, 12, 2, 9);
  const std::vector<int64_t> refs = {1, 8, 64, 512, 1024, 1999, 7, 300};
  std::vector<float> y = {0.25f, 0.5f, 0.375f, 0.625f, 0.5f, 0.75f, 0.25f, 0.5f};
  std::vector<float> flipped(y.size());
  for (size_t j = 0; j < y.size(); ++j) flipped[j] = 1.0f - y[j];
  for (float tau : {1.0f, 0.01f, 100.0f}) {
    std::vector<float> base(2000), base_flipped(2000);
    ASSERT_TRUE(f.scorer->Predict(refs, y, {.tau = tau}, absl::MakeSpan(base)).ok());
    ASSERT_TRUE(f.scorer->Predict(refs, flipped, {.tau = tau}, absl::MakeSpan(base_flipped)).ok());
    for (int64_t i = 0; i < 2000; ++i) {
      EXPECT_GE(base[i], 0.25f - 1e-6f);
      EXPECT_LE(base[i], 0.75f + 1e-6f);
      EXPECT_NEAR(base_flipped[i], 1.0f - base[i], 2e-6f);
    }
  }
}

TEST(SimilarityTest, AddingAConstantToARowsScoresChangesNothing) {
  // Projections with one extra component: queries carry a per-query offset a_i and every
  // reference a 1, so s'_ij = s_ij + a_i for all j.
  const int64_t n = 40, k = 7, h = 5;
  FloatMatrix q = RandomMatrix(n, h, 21), r = RandomMatrix(k, h, 22);
  FloatMatrix q_plain(n, h + 1), q_shift(n, h + 1), r_ext(k, h + 1);
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(q.row(i), h, q_plain.row(i));
    std::copy_n(q.row(i), h, q_shift.row(i));
    q_plain.row(i)[h] = 0;
    q_shift.row(i)[h] = 5.0f + 10.0f * i;  // up to +395: would overflow exp without the max
  }
  for (int64_t j = 0; j < k; ++j) {
    std::copy_n(r.row(j), h, r_ext.row(j));
    r_ext.row(j)[h] = 1;
  }
  auto adapter = Adapter::Identity(h + 1);
  auto plain = SimilarityScorer::CreateFromProjections(adapter, FloatMatrix(), q_plain);
  auto shifted = SimilarityScorer::CreateFromProjections(adapter, FloatMatrix(), q_shift);
  ASSERT_TRUE(plain.ok() && shifted.ok());
  const std::vector<int64_t> refs = {0, 1, 2, 3, 4, 5, 6};
  const std::vector<float> y = RandomLabels(k, 23);
  std::vector<float> a(n), b(n);
  ASSERT_TRUE((*plain)->PredictProjected(refs, r_ext, y, {}, absl::MakeSpan(a)).ok());
  ASSERT_TRUE((*shifted)->PredictProjected(refs, r_ext, y, {}, absl::MakeSpan(b)).ok());
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-4) << i;  // float32 at |s| ~ 400
}

TEST(SimilarityTest, TopOneReturnsTheArgmaxReferenceLabel) {
  Fixture f = MakeFixture(500, 20, 10, 1, 31);
  const std::vector<int64_t> refs = {3, 30, 300, 33, 333, 13};
  const std::vector<float> y = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
  FloatMatrix ref_proj;
  f.adapter->ProjectRef(Rows(f.embeddings, refs), &ref_proj);
  std::vector<float> base(500);
  ASSERT_TRUE(f.scorer->Predict(refs, y, {.top_k = 1}, absl::MakeSpan(base)).ok());
  for (int64_t i = 0; i < 500; ++i) {
    const float* q = f.scorer->query_projections().row(i);
    int best = 0;
    double best_dot = -1e300;
    for (int j = 0; j < 6; ++j) {
      double dot = 0;
      for (int c = 0; c < 10; ++c) dot += static_cast<double>(q[c]) * ref_proj.row(j)[c];
      if (dot > best_dot) best_dot = dot, best = j;
    }
    EXPECT_EQ(base[i], y[best]) << "query " << i;
  }
}

TEST(SimilarityTest, TopKAtLeastKIsTheDensePass) {
  Fixture f = MakeFixture(100, 8, 6, 2, 41);
  const std::vector<int64_t> refs = {1, 2, 3, 4};
  const std::vector<float> y = {0.1f, 0.7f, 0.4f, 1.0f};
  std::vector<float> dense(100), k4(100), k9(100);
  ASSERT_TRUE(f.scorer->Predict(refs, y, {}, absl::MakeSpan(dense)).ok());
  ASSERT_TRUE(f.scorer->Predict(refs, y, {.top_k = 4}, absl::MakeSpan(k4)).ok());
  ASSERT_TRUE(f.scorer->Predict(refs, y, {.top_k = 9}, absl::MakeSpan(k9)).ok());
  EXPECT_EQ(dense, k4);
  EXPECT_EQ(dense, k9);
}

TEST(SimilarityTest, LeaveOneOutExcludesSelf) {
  // Identity adapter and a sharp tau: with self-attention each reference would predict its own
  // label; leave-one-out must instead match predicting it from the other references.
  FloatMatrix e = RandomMatrix(30, 5, 51);
  auto scorer = SimilarityScorer::Create(Adapter::Identity(5), e);
  ASSERT_TRUE(scorer.ok());
  const std::vector<int64_t> refs = {2, 4, 6, 8, 10};
  const std::vector<float> y = {0.0f, 1.0f, 0.5f, 0.25f, 0.75f};
  for (int top_k : {0, 2, 4}) {
    SCOPED_TRACE(absl::StrCat("top_k ", top_k));
    const SimilarityOptions loo{.tau = 0.05f, .top_k = top_k, .leave_one_out = true};
    std::vector<float> with_self(30), without(30);
    SimilarityOptions self = loo;
    self.leave_one_out = false;
    ASSERT_TRUE((*scorer)->Predict(refs, y, self, absl::MakeSpan(with_self)).ok());
    ASSERT_TRUE((*scorer)->Predict(refs, y, loo, absl::MakeSpan(without)).ok());
    for (size_t j = 0; j < refs.size(); ++j) {
      EXPECT_NEAR(with_self[refs[j]], y[j], 0.02);  // cosine 1 with itself dominates
      std::vector<int64_t> others;
      std::vector<float> others_y;
      for (size_t m = 0; m < refs.size(); ++m) {
        if (m != j) others.push_back(refs[m]), others_y.push_back(y[m]);
      }
      float want = 0;
      ASSERT_TRUE((*scorer)
                      ->PredictSubset({refs[j]}, others, others_y, self, absl::MakeSpan(&want, 1))
                      .ok());
      EXPECT_NEAR(without[refs[j]], want, 1e-6) << "reference " << refs[j];
    }
    for (int64_t i : {0, 1, 3, 29}) EXPECT_EQ(without[i], with_self[i]) << "non-reference " << i;
  }
}

TEST(SimilarityTest, LeaveOneOutWithASingleReferenceUsesTheMean) {
  Fixture f = MakeFixture(10, 4, 3, 1, 61);
  std::vector<float> base(10);
  const std::vector<int64_t> refs = {7};
  const std::vector<float> y = {0.625f};
  for (int top_k : {0, 1}) {
    ASSERT_TRUE(
        f.scorer->Predict(refs, y, {.top_k = top_k, .leave_one_out = true}, absl::MakeSpan(base))
            .ok());
    for (float b : base) EXPECT_EQ(b, 0.625f);
  }
}

TEST(SimilarityTest, SubsetMatchesFullPassIncludingRepeats) {
  Fixture f = MakeFixture(5000, 10, 8, 3, 71);  // several parallel blocks
  const std::vector<int64_t> refs = {4999, 0, 2500, 17, 2048, 4096};
  const std::vector<float> y = RandomLabels(6, 72);
  const std::vector<int64_t> queries = {4999, 3, 3, 2047, 2048, 0, 4100};
  for (const SimilarityOptions& opts : {SimilarityOptions{}, SimilarityOptions{.top_k = 2},
                                        SimilarityOptions{.tau = 0.5f, .leave_one_out = true}}) {
    std::vector<float> all(5000), some(queries.size());
    ASSERT_TRUE(f.scorer->Predict(refs, y, opts, absl::MakeSpan(all)).ok());
    ASSERT_TRUE(f.scorer->PredictSubset(queries, refs, y, opts, absl::MakeSpan(some)).ok());
    for (size_t t = 0; t < queries.size(); ++t) EXPECT_NEAR(some[t], all[queries[t]], 1e-6);
  }
  std::vector<float> none;
  EXPECT_TRUE(f.scorer->PredictSubset({}, refs, y, {}, absl::MakeSpan(none)).ok());
}

TEST(SimilarityTest, CreateFromProjectionsMatchesCreate) {
  Fixture f = MakeFixture(64, 6, 4, 2, 81);
  FloatMatrix q;
  f.adapter->ProjectQuery(f.embeddings, &q);
  auto with = SimilarityScorer::CreateFromProjections(f.adapter, f.embeddings, q);
  auto without = SimilarityScorer::CreateFromProjections(f.adapter, FloatMatrix(), q);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_EQ((*with)->BytesPerQuestion(), 4 * (6 + 4));
  EXPECT_EQ((*without)->BytesPerQuestion(), 4 * 4);
  EXPECT_EQ(f.scorer->BytesPerQuestion(), 4 * (6 + 4));
  const std::vector<int64_t> refs = {1, 5, 9};
  const std::vector<float> y = {0.2f, 0.4f, 0.9f};
  std::vector<float> a(64), b(64), c(64);
  ASSERT_TRUE(f.scorer->Predict(refs, y, {}, absl::MakeSpan(a)).ok());
  ASSERT_TRUE((*with)->Predict(refs, y, {}, absl::MakeSpan(b)).ok());
  EXPECT_EQ(a, b);
  const absl::Status no_embeddings = (*without)->Predict(refs, y, {}, absl::MakeSpan(c));
  EXPECT_EQ(no_embeddings.code(), absl::StatusCode::kFailedPrecondition);
  FloatMatrix ref_proj;
  f.adapter->ProjectRef(Rows(f.embeddings, refs), &ref_proj);
  ASSERT_TRUE((*without)->PredictProjected(refs, ref_proj, y, {}, absl::MakeSpan(c)).ok());
  EXPECT_EQ(a, c);
}

TEST(SimilarityTest, IdentityScorerReusesQueryProjectionsForReferences) {
  const FloatMatrix e = RandomMatrix(80, 7, 85);
  auto scorer = SimilarityScorer::Create(Adapter::Identity(7), e);
  ASSERT_TRUE(scorer.ok());
  EXPECT_EQ((*scorer)->BytesPerQuestion(), 4 * 7);  // no embeddings kept
  const std::vector<int64_t> refs = {3, 14, 15, 92 % 80};
  const std::vector<float> y = {0.5f, 0.0f, 1.0f, 0.75f};
  FloatMatrix ref_proj;
  Adapter::Identity(7)->ProjectRef(Rows(e, refs), &ref_proj);
  std::vector<float> base(80);
  ASSERT_TRUE((*scorer)->Predict(refs, y, {.tau = 0.1f}, absl::MakeSpan(base)).ok());
  for (int64_t i = 0; i < 80; ++i) {
    EXPECT_NEAR(base[i], NaiveBase((*scorer)->query_projections().row(i), ref_proj, y, 1.0, 0.1, 0),
                1e-6);
  }
}

void ExpectInvalid(const absl::Status& s, const std::string& fragment) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(fragment));
}

TEST(SimilarityTest, RejectsInvalidRounds) {
  Fixture f = MakeFixture(10, 4, 3, 1, 91);
  std::vector<float> base(10);
  auto out = absl::MakeSpan(base);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  ExpectInvalid(f.scorer->Predict({}, {}, {}, out), "K == 0");
  ExpectInvalid(f.scorer->Predict({1, 2}, {0.5f}, {}, out), "ref_labels: 1 values for K = 2");
  ExpectInvalid(f.scorer->Predict({1, 10}, {0.5f, 0.5f}, {}, out),
                "ref_indices[1] = 10 is outside the pool [0, 10)");
  ExpectInvalid(f.scorer->Predict({-1}, {0.5f}, {}, out), "ref_indices[0] = -1");
  ExpectInvalid(f.scorer->Predict({3, 4, 3}, {0.5f, 0.5f, 0.5f}, {}, out),
                "ref_indices[2] = 3 repeats ref_indices[0]");
  ExpectInvalid(f.scorer->Predict({1, 2}, {0.5f, nan}, {}, out), "ref_labels[1]");
  ExpectInvalid(f.scorer->Predict({1, 2}, {inf, 0.5f}, {}, out), "ref_labels[0]");
  ExpectInvalid(f.scorer->Predict({1}, {0.5f}, {.tau = 0}, out), "tau");
  ExpectInvalid(f.scorer->Predict({1}, {0.5f}, {.tau = nan}, out), "tau");
  ExpectInvalid(f.scorer->Predict({1}, {0.5f}, {.top_k = -1}, out), "top_k");
  std::vector<float> short_out(9);
  ExpectInvalid(f.scorer->Predict({1}, {0.5f}, {}, absl::MakeSpan(short_out)), "base_out: 9");
  ExpectInvalid(f.scorer->PredictSubset({0, 11}, {1}, {0.5f}, {}, absl::MakeSpan(base).first(2)),
                "queries[1] = 11");
  ExpectInvalid(f.scorer->PredictSubset({0}, {1}, {0.5f}, {}, out), "one per query");
  ExpectInvalid(f.scorer->PredictProjected({1}, FloatMatrix(1, 4), {0.5f}, {}, out),
                "ref_projections: 1 x 4, expected 1 x 3");
}

TEST(SimilarityTest, CreateRejectsBadPools) {
  auto adapter = RandomAdapter(4, 3, 1, 95);
  ExpectInvalid(SimilarityScorer::Create(nullptr, FloatMatrix(2, 4)).status(), "null adapter");
  ExpectInvalid(SimilarityScorer::Create(adapter, FloatMatrix()).status(), "N == 0");
  ExpectInvalid(SimilarityScorer::Create(adapter, FloatMatrix(2, 5)).status(), "expected N x 4");
  FloatMatrix e(3, 4);
  e.row(2)[1] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(SimilarityScorer::Create(adapter, e).status(), "row 2, column 1");
  ExpectInvalid(
      SimilarityScorer::CreateFromProjections(adapter, FloatMatrix(), FloatMatrix(2, 4)).status(),
      "expected N x 3");
  ExpectInvalid(
      SimilarityScorer::CreateFromProjections(adapter, FloatMatrix(3, 4), FloatMatrix(2, 3))
          .status(),
      "expected empty or 2 x 4");
}

}  // namespace
}  // namespace dots
