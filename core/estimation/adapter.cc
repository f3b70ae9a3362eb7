#include "core/estimation/adapter.h"

#include <cblas.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <unsupported/Eigen/SpecialFunctions>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "core/util/json.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowMap = Eigen::Map<const RowMatrix>;
using RowMap = Eigen::Map<RowMatrix>;

constexpr float kLayerNormEps = 1e-5f;
constexpr double kLogitClamp = 1e-4;
constexpr char kQueryPrefix[] = "regressor.sim_head.query_proj.";
constexpr char kRefPrefix[] = "regressor.sim_head.ref_proj.";

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Looks up `name`, checks its shape, and marks it used (so leftovers can be reported).
class TensorReader {
 public:
  TensorReader(const SafeTensorsFile& file, const std::string& source)
      : file_(file), source_(source) {}

  absl::StatusOr<const SafeTensor*> Get(const std::string& name,
                                        const std::vector<int64_t>& expected) {
    const SafeTensor* t = file_.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": missing tensor \"", name,
                                                     "\", expected shape ", ShapeString(expected)));
    }
    if (t->shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": tensor \"", name, "\": shape ",
                                                     ShapeString(t->shape), ", expected ",
                                                     ShapeString(expected)));
    }
    DOTS_RETURN_IF_ERROR(CheckFinite(name, *t));
    used_.insert(name);
    return t;
  }

  // A one-element parameter: nn.Parameter(torch.ones(1)) has shape [1]; a scalar [] is accepted.
  absl::StatusOr<double> GetScalar(const std::string& name) {
    const SafeTensor* t = file_.Find(name);
    if (t != nullptr && t->shape.empty() && t->values.size() == 1) {
      DOTS_RETURN_IF_ERROR(CheckFinite(name, *t));
      used_.insert(name);
      return t->values[0];
    }
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* one, Get(name, {1}));
    return one->values[0];
  }

  // A NaN or infinite weight would make every prediction NaN: refused at load time.
  absl::Status CheckFinite(const std::string& name, const SafeTensor& t) const {
    for (size_t i = 0; i < t.values.size(); ++i) {
      if (!std::isfinite(t.values[i])) {
        return absl::InvalidArgumentError(absl::StrCat(source_, ": tensor \"", name, "\": value ",
                                                       i, " is ", t.values[i], " (not finite)"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckAllUsed() const {
    for (const auto& [name, tensor] : file_.tensors) {
      if (!used_.contains(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            source_, ": unexpected tensor \"", name, "\" (shape ", ShapeString(tensor.shape),
            ") for this adapter's layer count and scaling head"));
      }
    }
    return absl::OkStatus();
  }

 private:
  const SafeTensorsFile& file_;
  const std::string& source_;
  std::set<std::string> used_;
};

// Largest module index i with a tensor "<prefix>i.weight", or -1.
int MaxModuleIndex(const SafeTensorsFile& file, absl::string_view prefix) {
  int best = -1;
  for (const auto& [name, tensor] : file.tensors) {
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, prefix)) continue;
    const size_t dot = rest.find('.');
    int index = 0;
    if (dot == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, dot), &index)) continue;
    best = std::max(best, index);
  }
  return best;
}

absl::Status ReadLayerNorm(TensorReader& reader, const std::string& module, int64_t width,
                           Adapter::LayerNormWeights* out) {
  DOTS_ASSIGN_OR_RETURN(const SafeTensor* w, reader.Get(module + ".weight", {width}));
  DOTS_ASSIGN_OR_RETURN(const SafeTensor* b, reader.Get(module + ".bias", {width}));
  out->gamma = w->values;
  out->beta = b->values;
  return absl::OkStatus();
}

absl::Status ReadProjection(TensorReader& reader, const std::string& prefix, int num_layers,
                            int64_t in, int64_t hidden, Adapter::Projection* out) {
  DOTS_RETURN_IF_ERROR(ReadLayerNorm(reader, prefix + "0", in, &out->input_norm));
  out->linears.resize(num_layers);
  for (int i = 0; i < num_layers; ++i) {
    const std::string module = absl::StrCat(prefix, 1 + 3 * i);
    const int64_t fan_in = i == 0 ? in : hidden;
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* w, reader.Get(module + ".weight", {hidden, fan_in}));
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* b, reader.Get(module + ".bias", {hidden}));
    Adapter::LinearWeights& lin = out->linears[i];
    lin.weight = FloatMatrix(hidden, fan_in);
    lin.weight.data = w->values;
    lin.bias = b->values;
  }
  return ReadLayerNorm(reader, absl::StrCat(prefix, 3 * num_layers - 1), hidden, &out->output_norm);
}

absl::string_view MetadataOr(const SafeTensorsFile& file, const std::string& key,
                             absl::string_view fallback) {
  auto it = file.metadata.find(key);
  return it == file.metadata.end() ? fallback : absl::string_view(it->second);
}

absl::Status BadMetadata(absl::string_view source, absl::string_view key, absl::string_view value,
                         absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": metadata \"", key, "\": \"", value, "\", expected ", expected));
}

// Numerically stable log(1 + exp(x)).
double Softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// Numerically stable 1 / (1 + exp(-x)).
double Sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// In-place LayerNorm of every row of `a` (biased variance, as PyTorch). The statistics and the
// centring are done in double: rows whose spread is tiny next to their mean (where eps matters)
// would otherwise lose most of their significant digits in float. O(rows * cols), negligible
// next to the GEMMs.
void LayerNormRows(const Adapter::LayerNormWeights& ln, RowMatrix& a) {
  const auto gamma = Eigen::Map<const Eigen::ArrayXf>(ln.gamma.data(), a.cols()).transpose();
  const auto beta = Eigen::Map<const Eigen::ArrayXf>(ln.beta.data(), a.cols()).transpose();
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    auto row = a.row(r).array();
    const double mean = row.cast<double>().mean();
    const double var = (row.cast<double>() - mean).square().mean();
    const double inv_std = 1.0 / std::sqrt(var + static_cast<double>(kLayerNormEps));
    row = ((row.cast<double>() - mean) * inv_std).cast<float>() * gamma + beta;
  }
}

// out = a * W^T + bias (rows of a are inputs).
void Linear(const Adapter::LinearWeights& lin, const RowMatrix& a, RowMatrix& out) {
  const ConstRowMap w(lin.weight.data.data(), lin.weight.rows, lin.weight.cols);
  out.resize(a.rows(), lin.weight.rows);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(a.rows()),
              static_cast<int>(lin.weight.rows), static_cast<int>(a.cols()), 1.0f, a.data(),
              static_cast<int>(a.cols()), w.data(), static_cast<int>(w.cols()), 0.0f, out.data(),
              static_cast<int>(out.cols()));
  out.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(lin.bias.data(), lin.weight.rows);
}

// Exact GELU: x/2 * (1 + erf(x / sqrt 2)); Eigen's float erf is a vectorised rational
// approximation accurate to a few ulp.
void GeluInPlace(RowMatrix& a) {
  auto x = a.array();
  x = 0.5f * x * (1.0f + (x * static_cast<float>(M_SQRT1_2)).erf());
}

void L2NormalizeRows(const FloatMatrix& x, FloatMatrix* out) {
  const int64_t n = x.rows, d = x.cols;
#pragma omp parallel for schedule(static) if (n * d > (1 << 16))
  for (int64_t r = 0; r < n; ++r) {
    Eigen::Map<const Eigen::VectorXf> in(x.row(r), d);
    Eigen::Map<Eigen::VectorXf> o(out->row(r), d);
    const float norm = in.norm();
    if (norm > 0) {
      o = in / norm;
    } else {
      o.setZero();
    }
  }
}

}  // namespace

const char* CalibrationHeadName(CalibrationHead head) {
  switch (head) {
    case CalibrationHead::kGroupLogitTemp:
      return "group_logit_temp";
    case CalibrationHead::kPlatt:
      return "platt";
    case CalibrationHead::kTemperature:
      return "temperature";
    case CalibrationHead::kPlain:
      return "plain";
  }
  return "unknown";
}

absl::StatusOr<std::shared_ptr<const Adapter>> Adapter::Load(const std::string& path) {
  DOTS_ASSIGN_OR_RETURN(SafeTensorsFile file, ReadSafeTensors(path));
  return FromTensors(file, path);
}

absl::StatusOr<std::shared_ptr<const Adapter>> Adapter::FromTensors(const SafeTensorsFile& file,
                                                                    std::string_view source_name) {
  const std::string source(source_name);
  std::shared_ptr<Adapter> a(new Adapter());
  TensorReader reader(file, source);

  // Layer count: the last module of an n-layer projection is the LayerNorm at index 3n - 1.
  const int last_index = MaxModuleIndex(file, kQueryPrefix);
  if (last_index < 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": missing tensor \"", kQueryPrefix,
                                                   "0.weight\" (no query projection found)"));
  }
  if ((last_index + 1) % 3 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": tensor \"", kQueryPrefix, last_index,
        ".weight\": highest module index must be 3*num_layers - 1 (2, 5, 8, ...), got ",
        last_index));
  }
  const int num_layers = (last_index + 1) / 3;
  absl::string_view layers_text = MetadataOr(file, "num_layers", "");
  if (!layers_text.empty()) {
    int declared = 0;
    if (!absl::SimpleAtoi(layers_text, &declared) || declared != num_layers) {
      return BadMetadata(source, "num_layers", layers_text,
                         absl::StrCat(num_layers, " (the layer count the tensors describe)"));
    }
  }

  const SafeTensor* first_ln = file.Find(absl::StrCat(kQueryPrefix, "0.weight"));
  const SafeTensor* first_lin = file.Find(absl::StrCat(kQueryPrefix, "1.weight"));
  if (first_ln == nullptr || first_ln->shape.size() != 1 || first_ln->shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": tensor \"", kQueryPrefix,
        "0.weight\": ", first_ln == nullptr ? "missing" : "shape " + ShapeString(first_ln->shape),
        ", expected [D] (the input LayerNorm)"));
  }
  const int64_t in = first_ln->shape[0];
  if (first_lin == nullptr || first_lin->shape.size() != 2 || first_lin->shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": tensor \"", kQueryPrefix,
        "1.weight\": ", first_lin == nullptr ? "missing" : "shape " + ShapeString(first_lin->shape),
        ", expected [h, ", in, "]"));
  }
  const int64_t hidden = first_lin->shape[0];
  absl::string_view hidden_text = MetadataOr(file, "hidden_size", "");
  if (!hidden_text.empty()) {
    int64_t declared = 0;
    if (!absl::SimpleAtoi(hidden_text, &declared) || declared != hidden) {
      return BadMetadata(source, "hidden_size", hidden_text,
                         absl::StrCat(hidden, " (the width of ", kQueryPrefix, "1.weight)"));
    }
  }
  DOTS_RETURN_IF_ERROR(
      ReadProjection(reader, kQueryPrefix, num_layers, in, hidden, &a->query_proj_));
  DOTS_RETURN_IF_ERROR(ReadProjection(reader, kRefPrefix, num_layers, in, hidden, &a->ref_proj_));

  // Calibration head: from metadata, or inferred from which head tensors exist.
  absl::string_view scaling = MetadataOr(file, "scaling", "");
  if (scaling.empty()) {
    if (file.Find("regressor.mlp.0.weight") != nullptr) {
      scaling = "group_logit_temp";
    } else if (file.Find("regressor.res_scale") != nullptr) {
      scaling = "platt";
    } else if (file.Find("regressor.scale") != nullptr) {
      scaling = "temperature";
    } else {
      scaling = "plain";
    }
  }
  if (scaling == "group_logit_temp") {
    a->head_ = CalibrationHead::kGroupLogitTemp;
    const SafeTensor* w0 = file.Find("regressor.mlp.0.weight");
    const int64_t width = (w0 != nullptr && w0->shape.size() == 2) ? w0->shape[0] : 10;
    DOTS_ASSIGN_OR_RETURN(w0, reader.Get("regressor.mlp.0.weight", {width, 2}));
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* b0, reader.Get("regressor.mlp.0.bias", {width}));
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* w2, reader.Get("regressor.mlp.2.weight", {2, width}));
    DOTS_ASSIGN_OR_RETURN(const SafeTensor* b2, reader.Get("regressor.mlp.2.bias", {2}));
    a->mlp_w0_.assign(w0->values.begin(), w0->values.end());
    a->mlp_b0_.assign(b0->values.begin(), b0->values.end());
    a->mlp_w2_.assign(w2->values.begin(), w2->values.end());
    a->mlp_b2_.assign(b2->values.begin(), b2->values.end());
  } else if (scaling == "platt") {
    a->head_ = CalibrationHead::kPlatt;
    DOTS_ASSIGN_OR_RETURN(a->scale_, reader.GetScalar("regressor.scale"));
    DOTS_ASSIGN_OR_RETURN(a->res_scale_, reader.GetScalar("regressor.res_scale"));
  } else if (scaling == "temperature") {
    a->head_ = CalibrationHead::kTemperature;
    DOTS_ASSIGN_OR_RETURN(a->scale_, reader.GetScalar("regressor.scale"));
    if (a->scale_ == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tensor \"regressor.scale\": 0 (temperature divides by it)"));
    }
  } else if (scaling == "plain") {
    a->head_ = CalibrationHead::kPlain;
  } else {
    return BadMetadata(source, "scaling", scaling,
                       "one of group_logit_temp, platt, temperature, plain");
  }
  DOTS_RETURN_IF_ERROR(reader.CheckAllUsed());

  absl::string_view tau_text = MetadataOr(file, "tau", "");
  if (!tau_text.empty()) {
    double tau = 0;
    if (!absl::SimpleAtod(tau_text, &tau) || !std::isfinite(tau) || tau <= 0 ||
        static_cast<float>(tau) <= 0) {
      return BadMetadata(source, "tau", tau_text, "a finite number > 0");
    }
    a->tau_ = static_cast<float>(tau);
  }
  absl::string_view top_k_text = MetadataOr(file, "top_k", "");
  const std::string top_k_lower = absl::AsciiStrToLower(top_k_text);
  if (!top_k_text.empty() && top_k_lower != "none" && top_k_lower != "null") {
    int top_k = 0;
    if (!absl::SimpleAtoi(top_k_text, &top_k) || top_k < 0) {
      return BadMetadata(source, "top_k", top_k_text, "a non-negative integer, None or null");
    }
    a->top_k_ = top_k;
  }
  absl::string_view label = MetadataOr(file, "label", "success_rate");
  if (label == "failure_rate") {
    a->labels_are_failure_rate_ = true;
  } else if (label != "success_rate") {
    return BadMetadata(source, "label", label, "success_rate or failure_rate");
  }

  a->input_dim_ = static_cast<int>(in);
  a->output_dim_ = static_cast<int>(hidden);
  a->score_scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hidden)));
  return std::shared_ptr<const Adapter>(std::move(a));
}

std::shared_ptr<const Adapter> Adapter::Identity(int dim) {
  std::shared_ptr<Adapter> a(new Adapter());
  a->identity_ = true;
  a->input_dim_ = dim;
  a->output_dim_ = dim;
  return a;
}

int Adapter::num_layers() const { return static_cast<int>(query_proj_.linears.size()); }

absl::StatusOr<SafeTensorsFile> Adapter::ToTensors() const {
  if (identity_) {
    return absl::FailedPreconditionError("the identity adapter has no weights to write");
  }
  SafeTensorsFile f;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
    f.tensors[name] = SafeTensor{std::move(shape), std::move(values)};
  };
  auto add_doubles = [&](const std::string& name, std::vector<int64_t> shape,
                         const std::vector<double>& values) {
    add(name, std::move(shape), std::vector<float>(values.begin(), values.end()));
  };
  const int n = num_layers();
  for (const auto& [prefix, projection] :
       {std::pair<const char*, const Projection*>{kQueryPrefix, &query_proj_},
        std::pair<const char*, const Projection*>{kRefPrefix, &ref_proj_}}) {
    add(absl::StrCat(prefix, "0.weight"), {input_dim_}, projection->input_norm.gamma);
    add(absl::StrCat(prefix, "0.bias"), {input_dim_}, projection->input_norm.beta);
    for (int i = 0; i < n; ++i) {
      const LinearWeights& lin = projection->linears[i];
      add(absl::StrCat(prefix, 1 + 3 * i, ".weight"), {lin.weight.rows, lin.weight.cols},
          lin.weight.data);
      add(absl::StrCat(prefix, 1 + 3 * i, ".bias"), {lin.weight.rows}, lin.bias);
    }
    add(absl::StrCat(prefix, 3 * n - 1, ".weight"), {output_dim_}, projection->output_norm.gamma);
    add(absl::StrCat(prefix, 3 * n - 1, ".bias"), {output_dim_}, projection->output_norm.beta);
  }
  switch (head_) {
    case CalibrationHead::kGroupLogitTemp: {
      const int64_t width = static_cast<int64_t>(mlp_b0_.size());
      add_doubles("regressor.mlp.0.weight", {width, 2}, mlp_w0_);
      add_doubles("regressor.mlp.0.bias", {width}, mlp_b0_);
      add_doubles("regressor.mlp.2.weight", {2, width}, mlp_w2_);
      add_doubles("regressor.mlp.2.bias", {2}, mlp_b2_);
      break;
    }
    case CalibrationHead::kPlatt:
      add_doubles("regressor.scale", {1}, {scale_});
      add_doubles("regressor.res_scale", {1}, {res_scale_});
      break;
    case CalibrationHead::kTemperature:
      add_doubles("regressor.scale", {1}, {scale_});
      break;
    case CalibrationHead::kPlain:
      break;
  }
  f.metadata["num_layers"] = absl::StrCat(n);
  f.metadata["hidden_size"] = absl::StrCat(output_dim_);
  f.metadata["scaling"] = CalibrationHeadName(head_);
  f.metadata["tau"] = JsonFloat(tau_);
  if (top_k_ > 0) f.metadata["top_k"] = absl::StrCat(top_k_);
  f.metadata["label"] = labels_are_failure_rate_ ? "failure_rate" : "success_rate";
  return f;
}

void Adapter::ProjectQuery(const FloatMatrix& x, FloatMatrix* out) const {
  Project(query_proj_, x, out);
}

void Adapter::ProjectRef(const FloatMatrix& x, FloatMatrix* out) const {
  Project(ref_proj_, x, out);
}

void Adapter::Project(const Projection& projection, const FloatMatrix& x, FloatMatrix* out) const {
  const int64_t n = x.rows;
  *out = FloatMatrix(n, output_dim_);
  if (n == 0) return;
  if (x.cols != input_dim_ || static_cast<int64_t>(x.data.size()) != n * x.cols) {
    std::fill(out->data.begin(), out->data.end(), std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (identity_) {
    L2NormalizeRows(x, out);
    return;
  }
  // Row blocks big enough for efficient GEMMs, small enough that a block's activations stay in
  // cache and that both cores get work for small n (each thread runs its GEMMs single-threaded).
  const int threads = std::max(1, omp_get_max_threads());
  const int64_t block = std::clamp<int64_t>((n + threads - 1) / threads, int64_t{16}, int64_t{512});
  const int64_t num_blocks = (n + block - 1) / block;

  auto run_block = [&](int64_t b, RowMatrix& cur, RowMatrix& next) {
    const int64_t r0 = b * block;
    const int64_t rows = std::min(block, n - r0);
    cur = ConstRowMap(x.row(r0), rows, x.cols);
    LayerNormRows(projection.input_norm, cur);
    for (size_t l = 0; l < projection.linears.size(); ++l) {
      Linear(projection.linears[l], cur, next);
      if (l + 1 < projection.linears.size()) GeluInPlace(next);
      std::swap(cur, next);
    }
    LayerNormRows(projection.output_norm, cur);
    RowMap(out->row(r0), rows, output_dim_) = cur;
  };

  if (num_blocks == 1) {
    // One block: let Eigen parallelise the GEMMs themselves.
    RowMatrix cur, next;
    run_block(0, cur, next);
    return;
  }
#pragma omp parallel
  {
    RowMatrix cur, next;  // per-thread scratch, reused across blocks
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < num_blocks; ++b) run_block(b, cur, next);
  }
}

double Adapter::Calibrate(double base, double ref_mean, double ref_std) const {
  if (head_ == CalibrationHead::kPlain) return base;
  const double clamped = std::clamp(base, kLogitClamp, 1.0 - kLogitClamp);
  const double logit = std::log(clamped / (1.0 - clamped));
  switch (head_) {
    case CalibrationHead::kPlatt:
      return Sigmoid(scale_ * logit + res_scale_);
    case CalibrationHead::kTemperature:
      return Sigmoid(logit / scale_);
    case CalibrationHead::kGroupLogitTemp: {
      const size_t width = mlp_b0_.size();
      double m0 = mlp_b2_[0], m1 = mlp_b2_[1];
      for (size_t j = 0; j < width; ++j) {
        const double hidden =
            std::max(0.0, mlp_w0_[2 * j] * ref_mean + mlp_w0_[2 * j + 1] * ref_std + mlp_b0_[j]);
        m0 += mlp_w2_[j] * hidden;
        m1 += mlp_w2_[width + j] * hidden;
      }
      const double temp = std::clamp(Softplus(m0), 0.01, 10.0);
      return Sigmoid(logit / temp + std::tanh(m1));
    }
    case CalibrationHead::kPlain:
      break;
  }
  return base;
}

LabelStats ComputeLabelStats(absl::Span<const float> labels) {
  LabelStats stats;
  const size_t k = labels.size();
  if (k == 0) return stats;
  double sum = 0;
  for (float y : labels) sum += y;
  stats.mean = sum / static_cast<double>(k);
  if (k < 2) return stats;
  double squares = 0;
  for (float y : labels) squares += (y - stats.mean) * (y - stats.mean);
  stats.std = std::sqrt(squares / static_cast<double>(k - 1));
  return stats;
}

SafeTensorsFile MakeRandomAdapterTensors(int input_dim, int hidden, int num_layers,
                                         CalibrationHead head, uint64_t seed) {
  Rng rng(seed);
  auto uniform = [&](int64_t count, double bound) {
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = static_cast<float>((2.0 * rng.UniformOpen() - 1.0) * bound);
    return v;
  };
  auto constant_plus_noise = [&](int64_t count, double center, double noise) {
    std::vector<float> v = uniform(count, noise);
    for (float& x : v) x += static_cast<float>(center);
    return v;
  };
  SafeTensorsFile f;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
    f.tensors[name] = SafeTensor{std::move(shape), std::move(values)};
  };
  for (const char* prefix : {kQueryPrefix, kRefPrefix}) {
    add(absl::StrCat(prefix, "0.weight"), {input_dim}, constant_plus_noise(input_dim, 1.0, 0.2));
    add(absl::StrCat(prefix, "0.bias"), {input_dim}, uniform(input_dim, 0.1));
    for (int i = 0; i < num_layers; ++i) {
      const int fan_in = i == 0 ? input_dim : hidden;
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      add(absl::StrCat(prefix, 1 + 3 * i, ".weight"), {hidden, fan_in},
          uniform(int64_t{hidden} * fan_in, bound));
      add(absl::StrCat(prefix, 1 + 3 * i, ".bias"), {hidden}, uniform(hidden, bound));
    }
    add(absl::StrCat(prefix, 3 * num_layers - 1, ".weight"), {hidden},
        constant_plus_noise(hidden, 1.0, 0.2));
    add(absl::StrCat(prefix, 3 * num_layers - 1, ".bias"), {hidden}, uniform(hidden, 0.1));
  }
  switch (head) {
    case CalibrationHead::kGroupLogitTemp:
      add("regressor.mlp.0.weight", {10, 2}, uniform(20, 1.0 / std::sqrt(2.0)));
      add("regressor.mlp.0.bias", {10}, uniform(10, 1.0 / std::sqrt(2.0)));
      add("regressor.mlp.2.weight", {2, 10}, uniform(20, 1.0 / std::sqrt(10.0)));
      add("regressor.mlp.2.bias", {2}, uniform(2, 1.0 / std::sqrt(10.0)));
      break;
    case CalibrationHead::kPlatt:
      add("regressor.scale", {1}, constant_plus_noise(1, 1.0, 0.3));
      add("regressor.res_scale", {1}, uniform(1, 1.0));
      break;
    case CalibrationHead::kTemperature:
      add("regressor.scale", {1}, constant_plus_noise(1, 1.0, 0.3));
      break;
    case CalibrationHead::kPlain:
      break;
  }
  f.metadata["num_layers"] = absl::StrCat(num_layers);
  f.metadata["hidden_size"] = absl::StrCat(hidden);
  f.metadata["scaling"] = std::string(CalibrationHeadName(head));
  f.metadata["tau"] = "1.0";
  return f;
}

}  // namespace dots
