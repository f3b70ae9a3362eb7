#include "core/estimation/adapter.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/formats/safetensors.h"
#include "core/util/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kQuery[] = "regressor.sim_head.query_proj.";
constexpr char kRef[] = "regressor.sim_head.ref_proj.";

// softplus^-1(1) = log(e - 1): the head's temperature is then exactly 1.
const double kSoftplusInverseOfOne = std::log(std::exp(1.0) - 1.0);

double Logit(double p) { return std::log(p / (1 - p)); }
double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// Straightforward double-precision forward pass read directly from the tensors, written from
// the PyTorch definitions (LayerNorm with biased variance and eps 1e-5, exact GELU).
std::vector<double> NaiveProject(const SafeTensorsFile& f, const std::string& prefix, int layers,
                                 const std::vector<float>& x) {
  auto layer_norm = [&](std::vector<double> v, int module) {
    const SafeTensor& g = *f.Find(absl::StrCat(prefix, module, ".weight"));
    const SafeTensor& b = *f.Find(absl::StrCat(prefix, module, ".bias"));
    double mean = 0, var = 0;
    for (double e : v) mean += e;
    mean /= v.size();
    for (double e : v) var += (e - mean) * (e - mean);
    var /= v.size();
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = (v[i] - mean) / std::sqrt(var + 1e-5) * g.values[i] + b.values[i];
    }
    return v;
  };
  std::vector<double> a(x.begin(), x.end());
  a = layer_norm(a, 0);
  for (int l = 0; l < layers; ++l) {
    const SafeTensor& w = *f.Find(absl::StrCat(prefix, 1 + 3 * l, ".weight"));
    const SafeTensor& b = *f.Find(absl::StrCat(prefix, 1 + 3 * l, ".bias"));
    const int64_t out = w.shape[0], in = w.shape[1];
    std::vector<double> next(out);
    for (int64_t o = 0; o < out; ++o) {
      double sum = b.values[o];
      for (int64_t i = 0; i < in; ++i) sum += w.values[o * in + i] * a[i];
      if (l + 1 < layers) sum = 0.5 * sum * (1 + std::erf(sum / std::sqrt(2.0)));
      next[o] = sum;
    }
    a = next;
  }
  return layer_norm(a, 3 * layers - 1);
}

FloatMatrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  FloatMatrix m(rows, cols);
  for (float& v : m.data) v = static_cast<float>(scale * (2 * rng.UniformOpen() - 1));
  return m;
}

absl::StatusOr<std::shared_ptr<const Adapter>> FromTensors(const SafeTensorsFile& f) {
  return Adapter::FromTensors(f, "test.safetensors");
}

// A group_logit_temp head whose MLP output is (m0, m1) whatever the input: the second layer's
// weights are zero, so only its bias reaches the output; the first layer stays non-trivial.
SafeTensorsFile GroupHeadWithOutput(double m0, double m1) {
  SafeTensorsFile f = MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kGroupLogitTemp, 7);
  f.tensors["regressor.mlp.2.weight"].values.assign(20, 0.0f);
  f.tensors["regressor.mlp.2.bias"].values = {static_cast<float>(m0), static_cast<float>(m1)};
  return f;
}

TEST(AdapterTest, LoadsEachLayerCountAndMatchesNaiveForwardPass) {
  for (int layers : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat(layers, " layers"));
    const int d = 9, h = 6;
    const SafeTensorsFile f =
        MakeRandomAdapterTensors(d, h, layers, CalibrationHead::kPlain, 100 + layers);
    // Round trip through a real file, as a deployment would.
    const std::string path = absl::StrCat(::testing::TempDir(), "/adapter_", layers, ".st");
    ASSERT_TRUE(WriteSafeTensors(path, f).ok());
    auto adapter = Adapter::Load(path);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    const Adapter& a = **adapter;
    EXPECT_EQ(a.input_dim(), d);
    EXPECT_EQ(a.output_dim(), h);
    EXPECT_EQ(a.num_layers(), layers);
    EXPECT_FLOAT_EQ(a.score_scale(), 1.0f / std::sqrt(6.0f));
    EXPECT_EQ(a.head(), CalibrationHead::kPlain);

    // Embedding-like inputs: an offset shared by all rows plus noise, and one large outlier.
    FloatMatrix x = RandomMatrix(37, d, 5, 0.5);
    for (int64_t r = 0; r < x.rows; ++r) {
      x.row(r)[0] += 3.0f;
      x.row(r)[d - 1] *= 20.0f;
    }
    // Rows with a spread of ~1e-3 (variance ~3e-7 << eps): LayerNorm's eps 1e-5 dominates there,
    // so a different eps would change these outputs several-fold.
    for (int64_t r = 0; r < 3; ++r) {
      for (int c = 0; c < d; ++c) x.row(r)[c] = 2.0f + 1e-3f * std::sin(7.0f * c + r);
    }
    FloatMatrix q, r;
    a.ProjectQuery(x, &q);
    a.ProjectRef(x, &r);
    ASSERT_EQ(q.rows, 37);
    ASSERT_EQ(q.cols, h);
    ASSERT_EQ(r.rows, 37);
    double max_query_ref_gap = 0;
    for (int64_t row = 0; row < x.rows; ++row) {
      const std::vector<float> in(x.row(row), x.row(row) + d);
      const std::vector<double> want_q = NaiveProject(f, kQuery, layers, in);
      const std::vector<double> want_r = NaiveProject(f, kRef, layers, in);
      for (int c = 0; c < h; ++c) {
        EXPECT_NEAR(q.row(row)[c], want_q[c], 2e-5 * (1 + std::abs(want_q[c])));
        EXPECT_NEAR(r.row(row)[c], want_r[c], 2e-5 * (1 + std::abs(want_r[c])));
        max_query_ref_gap = std::max(max_query_ref_gap, std::abs(want_q[c] - want_r[c]));
      }
    }
    EXPECT_GT(max_query_ref_gap, 0.1) << "query and reference projections must be separate";
  }
}

TEST(AdapterTest, ProjectionOfManyRowsMatchesRowByRow) {
  // Enough rows for several parallel blocks: each row's output must not depend on its block.
  auto adapter = FromTensors(MakeRandomAdapterTensors(12, 8, 3, CalibrationHead::kPlain, 3));
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  const FloatMatrix x = RandomMatrix(3001, 12, 9);
  FloatMatrix all;
  (*adapter)->ProjectQuery(x, &all);
  for (int64_t row : {0, 1, 511, 512, 1500, 3000}) {
    FloatMatrix one(1, 12);
    std::copy_n(x.row(row), 12, one.row(0));
    FloatMatrix single;
    (*adapter)->ProjectQuery(one, &single);
    for (int c = 0; c < 8; ++c) EXPECT_NEAR(all.row(row)[c], single.row(0)[c], 1e-5);
  }
}

TEST(AdapterTest, RejectsNonFiniteWeightsNamingTheTensor) {
  SafeTensorsFile f = MakeRandomAdapterTensors(4, 3, 3, CalibrationHead::kGroupLogitTemp, 3);
  f.tensors[absl::StrCat(kRef, "4.weight")].values[5] = std::nanf("");
  EXPECT_THAT(FromTensors(f).status().message(),
              HasSubstr("tensor \"regressor.sim_head.ref_proj.4.weight\": value 5 is nan"));
  f = MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kPlatt, 3);
  f.tensors["regressor.res_scale"].values[0] = INFINITY;
  EXPECT_THAT(FromTensors(f).status().message(),
              HasSubstr("tensor \"regressor.res_scale\": value 0 is inf (not finite)"));
}

TEST(AdapterTest, EmptyInputGivesEmptyOutputAndWrongWidthGivesNaN) {
  auto adapter = FromTensors(MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kPlain, 3));
  ASSERT_TRUE(adapter.ok());
  FloatMatrix out;
  (*adapter)->ProjectQuery(FloatMatrix(0, 4), &out);
  EXPECT_EQ(out.rows, 0);
  (*adapter)->ProjectQuery(FloatMatrix(2, 5), &out);
  ASSERT_EQ(out.rows, 2);
  ASSERT_EQ(out.cols, 3);
  EXPECT_TRUE(std::isnan(out.data[0]));
}

TEST(AdapterTest, IdentityNormalisesRowsAndKeepsZeroRows) {
  auto a = Adapter::Identity(3);
  EXPECT_EQ(a->input_dim(), 3);
  EXPECT_EQ(a->output_dim(), 3);
  EXPECT_EQ(a->score_scale(), 1.0f);
  EXPECT_EQ(a->head(), CalibrationHead::kPlain);
  EXPECT_EQ(a->num_layers(), 0);
  EXPECT_TRUE(a->is_identity());
  FloatMatrix x(2, 3);
  x.data = {3, 0, 4, 0, 0, 0};
  FloatMatrix q, r;
  a->ProjectQuery(x, &q);
  a->ProjectRef(x, &r);
  const std::vector<float> want = {0.6f, 0.f, 0.8f, 0, 0, 0};
  EXPECT_THAT(q.data, ::testing::Pointwise(::testing::FloatEq(), want));
  EXPECT_EQ(q.data, r.data);
  EXPECT_DOUBLE_EQ(a->Calibrate(0.37, 0.5, 0.1), 0.37);
}

TEST(AdapterTest, GroupHeadWithUnitTemperatureAndZeroBiasIsIdentity) {
  auto adapter = FromTensors(GroupHeadWithOutput(kSoftplusInverseOfOne, 0.0));
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ((*adapter)->head(), CalibrationHead::kGroupLogitTemp);
  for (double base : {1e-6, 1e-4, 0.01, 0.3, 0.5, 0.77, 0.9999, 1.0}) {
    for (auto [mean, std] : {std::pair{0.5, 0.2}, std::pair{0.1, 0.0}, std::pair{0.9, 0.4}}) {
      const double want = std::clamp(base, 1e-4, 1 - 1e-4);
      // The head weights are float32, so softplus^-1(1) is off by up to ~1e-8 relative.
      EXPECT_NEAR((*adapter)->Calibrate(base, mean, std), want, 1e-7 * (1 + want))
          << "base " << base;
    }
  }
}

TEST(AdapterTest, GroupHeadClampsLogitAndTemperature) {
  // Temperature at the 0.01 floor (softplus(-50) ~ 2e-22): the logit is multiplied by 100.
  auto cold = FromTensors(GroupHeadWithOutput(-50.0, 0.0));
  ASSERT_TRUE(cold.ok());
  // base = 0 is clamped to 1e-4, logit -9.2102; /0.01 -> -921: saturated at 0, not NaN.
  EXPECT_NEAR(Logit(1e-4), -9.2102, 1e-4);
  const double at_zero = (*cold)->Calibrate(0.0, 0.3, 0.1);
  EXPECT_FALSE(std::isnan(at_zero));
  EXPECT_LT(at_zero, 1e-300);
  EXPECT_NEAR((*cold)->Calibrate(1.0, 0.3, 0.1), 1.0, 1e-15);
  EXPECT_NEAR((*cold)->Calibrate(0.501, 0.3, 0.1), Sigmoid(Logit(0.501) / 0.01), 1e-12);
  // Temperature at the ceiling 10 (softplus(1000) = 1000 without overflow), bias tanh(0.5).
  auto hot = FromTensors(GroupHeadWithOutput(1000.0, 0.5));
  ASSERT_TRUE(hot.ok());
  EXPECT_NEAR((*hot)->Calibrate(0.2, 0.3, 0.1), Sigmoid(Logit(0.2) / 10 + std::tanh(0.5)), 1e-7);
  EXPECT_NEAR((*hot)->Calibrate(0.0, 0.3, 0.1), Sigmoid(Logit(1e-4) / 10 + std::tanh(0.5)), 1e-7);
}

TEST(AdapterTest, GroupHeadMlpMatchesHandComputation) {
  SafeTensorsFile f = MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kGroupLogitTemp, 11);
  auto adapter = FromTensors(f);
  ASSERT_TRUE(adapter.ok());
  const auto& w0 = f.tensors["regressor.mlp.0.weight"].values;
  const auto& b0 = f.tensors["regressor.mlp.0.bias"].values;
  const auto& w2 = f.tensors["regressor.mlp.2.weight"].values;
  const auto& b2 = f.tensors["regressor.mlp.2.bias"].values;
  for (auto [mean, std] : {std::pair{0.4, 0.3}, std::pair{0.0, 0.0}, std::pair{1.0, 0.0}}) {
    double m[2] = {b2[0], b2[1]};
    for (int j = 0; j < 10; ++j) {
      const double hidden = std::max(0.0, w0[2 * j] * mean + w0[2 * j + 1] * std + b0[j]);
      m[0] += w2[j] * hidden;
      m[1] += w2[10 + j] * hidden;
    }
    const double temp = std::clamp(std::log1p(std::exp(m[0])), 0.01, 10.0);
    for (double base : {0.05, 0.5, 0.93}) {
      const double got = (*adapter)->Calibrate(base, mean, std);
      EXPECT_FALSE(std::isnan(got));  // constant references (std 0) included
      EXPECT_NEAR(got, Sigmoid(Logit(base) / temp + std::tanh(m[1])), 1e-12);
    }
  }
}

TEST(AdapterTest, PlattAndTemperatureHeads) {
  SafeTensorsFile platt = MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kPlatt, 1);
  platt.tensors["regressor.scale"].values = {2.0f};
  platt.tensors["regressor.res_scale"].values = {0.5f};
  auto p = FromTensors(platt);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->head(), CalibrationHead::kPlatt);
  EXPECT_NEAR((*p)->Calibrate(0.3, 0, 0), Sigmoid(2 * Logit(0.3) + 0.5), 1e-12);
  EXPECT_NEAR((*p)->Calibrate(0.0, 0, 0), Sigmoid(2 * Logit(1e-4) + 0.5), 1e-12);

  SafeTensorsFile temperature = MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kTemperature, 1);
  temperature.tensors["regressor.scale"] = SafeTensor{{}, {4.0f}};  // a scalar is accepted too
  auto t = FromTensors(temperature);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->head(), CalibrationHead::kTemperature);
  EXPECT_NEAR((*t)->Calibrate(0.8, 0, 0), Sigmoid(Logit(0.8) / 4), 1e-12);
  EXPECT_NEAR((*t)->Calibrate(1.0, 0, 0), Sigmoid(Logit(1 - 1e-4) / 4), 1e-12);
}

TEST(AdapterTest, PlainHeadPassesBaseThrough) {
  auto a = FromTensors(MakeRandomAdapterTensors(4, 3, 1, CalibrationHead::kPlain, 1));
  ASSERT_TRUE(a.ok());
  EXPECT_DOUBLE_EQ((*a)->Calibrate(0.0, 0.5, 0.5), 0.0);
  EXPECT_DOUBLE_EQ((*a)->Calibrate(0.123, 0.5, 0.5), 0.123);
}

TEST(AdapterTest, LabelStatsUseUnbiasedStd) {
  const std::vector<float> constant = {0.25f, 0.25f, 0.25f, 0.25f};
  EXPECT_DOUBLE_EQ(ComputeLabelStats(constant).mean, 0.25);
  EXPECT_DOUBLE_EQ(ComputeLabelStats(constant).std, 0.0);
  const std::vector<float> two = {0.0f, 1.0f};
  EXPECT_DOUBLE_EQ(ComputeLabelStats(two).std, std::sqrt(0.5));  // K-1 denominator
  const std::vector<float> one = {0.7f};
  EXPECT_DOUBLE_EQ(ComputeLabelStats(one).std, 0.0);
  EXPECT_NEAR(ComputeLabelStats(one).mean, 0.7, 1e-7);
}

TEST(AdapterTest, MetadataDefaultsAndOverrides) {
  SafeTensorsFile f = MakeRandomAdapterTensors(4, 3, 2, CalibrationHead::kPlatt, 1);
  f.metadata.erase("tau");
  f.metadata.erase("scaling");  // inferred from regressor.scale + regressor.res_scale
  auto a = FromTensors(f);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->head(), CalibrationHead::kPlatt);
  EXPECT_EQ((*a)->tau(), 1.0f);
  EXPECT_EQ((*a)->top_k(), 0);
  EXPECT_FALSE((*a)->labels_are_failure_rate());
  EXPECT_EQ((*a)->num_layers(), 2);

  for (const char* off : {"None", "null", "0"}) {
    f.metadata["top_k"] = off;
    auto b = FromTensors(f);
    ASSERT_TRUE(b.ok()) << off;
    EXPECT_EQ((*b)->top_k(), 0);
  }
  f.metadata["top_k"] = "16";
  f.metadata["tau"] = "0.25";
  f.metadata["label"] = "failure_rate";
  f.metadata["embedding_model"] = "Qwen/Qwen2.5-Math-1.5B-Instruct";  // ignored
  auto c = FromTensors(f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->top_k(), 16);
  EXPECT_EQ((*c)->tau(), 0.25f);
  EXPECT_TRUE((*c)->labels_are_failure_rate());
}

void ExpectInvalid(const SafeTensorsFile& f, const std::string& fragment1,
                   const std::string& fragment2 = "") {
  auto a = FromTensors(f);
  ASSERT_FALSE(a.ok()) << "expected an error mentioning " << fragment1;
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()),
              AllOf(HasSubstr("test.safetensors"), HasSubstr(fragment1), HasSubstr(fragment2)));
}

TEST(AdapterTest, RejectsMissingAndMisshapedTensors) {
  const SafeTensorsFile good =
      MakeRandomAdapterTensors(5, 4, 3, CalibrationHead::kGroupLogitTemp, 1);
  ASSERT_TRUE(FromTensors(good).ok());

  SafeTensorsFile f = good;
  f.tensors.erase("regressor.sim_head.ref_proj.4.bias");
  ExpectInvalid(f, "\"regressor.sim_head.ref_proj.4.bias\"", "expected shape [4]");

  f = good;
  f.tensors["regressor.sim_head.ref_proj.4.weight"] = SafeTensor{{4, 5}, std::vector<float>(20)};
  ExpectInvalid(f, "\"regressor.sim_head.ref_proj.4.weight\": shape [4, 5]", "expected [4, 4]");

  f = good;
  f.tensors["regressor.sim_head.query_proj.0.bias"] = SafeTensor{{6}, std::vector<float>(6)};
  ExpectInvalid(f, "query_proj.0.bias", "expected [5]");

  f = good;
  f.tensors.erase("regressor.mlp.2.bias");
  ExpectInvalid(f, "regressor.mlp.2.bias", "[2]");

  f = good;
  f.tensors["regressor.mlp.2.weight"] = SafeTensor{{10, 2}, std::vector<float>(20)};
  ExpectInvalid(f, "regressor.mlp.2.weight", "expected [2, 10]");

  f = good;  // a GELU has no weights: a tensor at index 2 of a 3-layer projection is foreign
  f.tensors["regressor.sim_head.query_proj.2.weight"] = SafeTensor{{4}, std::vector<float>(4)};
  ExpectInvalid(f, "unexpected tensor \"regressor.sim_head.query_proj.2.weight\"");

  f = good;  // ref_proj with one layer more than query_proj
  f.tensors["regressor.sim_head.ref_proj.11.weight"] = SafeTensor{{4}, std::vector<float>(4)};
  ExpectInvalid(f, "unexpected tensor", "ref_proj.11.weight");

  f = good;  // highest index must be 3n - 1
  f.tensors["regressor.sim_head.query_proj.9.weight"] = SafeTensor{{4}, std::vector<float>(4)};
  ExpectInvalid(f, "query_proj.9.weight", "3*num_layers - 1");

  ExpectInvalid(SafeTensorsFile{}, "missing tensor", "query_proj.0.weight");
}

TEST(AdapterTest, RejectsBadMetadata) {
  const SafeTensorsFile good =
      MakeRandomAdapterTensors(5, 4, 3, CalibrationHead::kGroupLogitTemp, 1);
  SafeTensorsFile f = good;
  f.metadata["scaling"] = "isotonic";
  ExpectInvalid(f, "metadata \"scaling\": \"isotonic\"", "group_logit_temp");
  f = good;
  f.metadata["scaling"] = "plain";  // the mlp tensors are then unexplained
  ExpectInvalid(f, "unexpected tensor \"regressor.mlp.");
  f = good;
  f.metadata["scaling"] = "platt";
  ExpectInvalid(f, "missing tensor \"regressor.scale\"");
  for (const char* tau : {"0", "-1", "abc", "inf", "nan"}) {
    f = good;
    f.metadata["tau"] = tau;
    ExpectInvalid(f, absl::StrCat("metadata \"tau\": \"", tau, "\""), "> 0");
  }
  for (const char* top_k : {"-3", "five", "2.5"}) {
    f = good;
    f.metadata["top_k"] = top_k;
    ExpectInvalid(f, "metadata \"top_k\"", "non-negative integer");
  }
  f = good;
  f.metadata["label"] = "difficulty";
  ExpectInvalid(f, "metadata \"label\": \"difficulty\"", "failure_rate");
  f = good;
  f.metadata["num_layers"] = "2";
  ExpectInvalid(f, "metadata \"num_layers\": \"2\"", "expected 3");
  f = good;
  f.metadata["hidden_size"] = "896";
  ExpectInvalid(f, "metadata \"hidden_size\": \"896\"", "expected 4");

  SafeTensorsFile t = MakeRandomAdapterTensors(5, 4, 1, CalibrationHead::kTemperature, 1);
  t.tensors["regressor.scale"].values = {0.0f};
  ExpectInvalid(t, "regressor.scale");
}

TEST(AdapterTest, LoadReportsMissingFileWithPath) {
  auto a = Adapter::Load("/nonexistent/dir/adapter.safetensors");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("/nonexistent/dir/adapter.safetensors"));
}

}  // namespace
}  // namespace dots
