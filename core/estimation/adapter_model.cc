#include "core/estimation/adapter_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/adapter.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

using nn::Matrix;

constexpr char kQueryPrefix[] = "regressor.sim_head.query_proj.";
constexpr char kRefPrefix[] = "regressor.sim_head.ref_proj.";
constexpr double kLogitClamp = 1e-4;
constexpr double kTempMin = 0.01, kTempMax = 10.0;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// torch.nn.functional.softplus (beta 1, threshold 20) and its derivative.
double TorchSoftplus(double x) {
  return x > 20.0 ? x : std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x)));
}
double TorchSoftplusGrad(double x) { return x > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-x)); }

double Sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// What the forward pass of one projection keeps for its backward pass.
struct ProjectionPass {
  Matrix in_hat;                       // LayerNorm(D) normalised input
  std::vector<double> in_inv;          // its 1 / std per row
  std::vector<Matrix> inputs;          // input of Linear l (l = 0: the LayerNorm output)
  std::vector<Matrix> pre;             // pre-activation of Linear l < n - 1
  std::vector<nn::DropoutMask> masks;  // after GELU l < n - 1 (training only)
  Matrix out_hat;                      // LayerNorm(h) normalised
  std::vector<double> out_inv;
  Matrix output;  // m x h
};

// The group_logit_temp head's parameters for one context.
struct HeadForward {
  double stats[2] = {0, 0};  // mean, unbiased std of the context's labels
  std::vector<double> hidden_pre, hidden;
  double m0 = 0, m1 = 0, temp_raw = 0, temp = 0, bias = 0;
};

}  // namespace

void TrainableAdapter::AddParameter(std::string name, std::vector<int64_t> shape) {
  int64_t size = 1;
  for (int64_t d : shape) size *= d;
  params_.push_back({std::move(name), std::move(shape), std::vector<float>(size, 0.0f)});
}

TrainableAdapter TrainableAdapter::Fresh(const Config& config, uint64_t seed) {
  TrainableAdapter a(config);
  const int64_t d = config.input_dim, h = config.hidden, n = config.num_layers;
  for (const char* prefix : {kQueryPrefix, kRefPrefix}) {
    a.AddParameter(absl::StrCat(prefix, "0.weight"), {d});
    a.AddParameter(absl::StrCat(prefix, "0.bias"), {d});
    for (int64_t i = 0; i < n; ++i) {
      a.AddParameter(absl::StrCat(prefix, 1 + 3 * i, ".weight"), {h, i == 0 ? d : h});
      a.AddParameter(absl::StrCat(prefix, 1 + 3 * i, ".bias"), {h});
    }
    a.AddParameter(absl::StrCat(prefix, 3 * n - 1, ".weight"), {h});
    a.AddParameter(absl::StrCat(prefix, 3 * n - 1, ".bias"), {h});
  }
  const int64_t w = config.head_width;
  a.AddParameter("regressor.mlp.0.weight", {w, 2});
  a.AddParameter("regressor.mlp.0.bias", {w});
  a.AddParameter("regressor.mlp.2.weight", {2, w});
  a.AddParameter("regressor.mlp.2.bias", {2});

  // Parameters in creation order, drawn from one stream in that order.
  Rng rng(seed);
  auto uniform = [&](Parameter& p, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (float& v : p.values) v = static_cast<float>((2.0 * rng.UniformOpen() - 1.0) * bound);
  };
  for (int proj = 0; proj < 2; ++proj) {
    const int base = a.ProjectionBase(proj);
    std::fill(a.params_[base].values.begin(), a.params_[base].values.end(), 1.0f);  // LN(D)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t fan_in = i == 0 ? d : h;
      uniform(a.params_[base + 2 + 2 * i], fan_in);
      uniform(a.params_[base + 3 + 2 * i], fan_in);
    }
    auto& out = a.params_[base + 2 + 2 * n].values;  // LN(h)
    std::fill(out.begin(), out.end(), 1.0f);
  }
  uniform(a.params_[a.HeadBase()], 2);
  uniform(a.params_[a.HeadBase() + 1], 2);
  uniform(a.params_[a.HeadBase() + 2], w);
  uniform(a.params_[a.HeadBase() + 3], w);
  return a;
}

absl::StatusOr<TrainableAdapter> TrainableAdapter::FromTensors(const SafeTensorsFile& file,
                                                               std::string_view source) {
  DOTS_ASSIGN_OR_RETURN(std::shared_ptr<const Adapter> adapter, Adapter::FromTensors(file, source));
  if (adapter->head() != CalibrationHead::kGroupLogitTemp) {
    return absl::InvalidArgumentError(absl::StrCat(
        ToAbsl(source), ": metadata \"scaling\": ", CalibrationHeadName(adapter->head()),
        ", but only group_logit_temp adapters can be trained"));
  }
  Config config;
  config.input_dim = adapter->input_dim();
  config.hidden = adapter->output_dim();
  config.num_layers = adapter->num_layers();
  config.head_width = static_cast<int>(file.Find("regressor.mlp.0.bias")->shape[0]);
  config.tau = adapter->tau();
  config.top_k = adapter->top_k();
  config.labels_are_failure_rate = adapter->labels_are_failure_rate();
  TrainableAdapter a = Fresh(config, 0);
  for (Parameter& p : a.params_) p.values = file.Find(p.name)->values;  // shapes validated above
  return a;
}

SafeTensorsFile TrainableAdapter::ToTensors(
    const std::map<std::string, std::string>& extra_metadata) const {
  SafeTensorsFile f;
  for (const Parameter& p : params_) f.tensors[p.name] = SafeTensor{p.shape, p.values};
  f.metadata = extra_metadata;
  f.metadata["num_layers"] = absl::StrCat(config_.num_layers);
  f.metadata["hidden_size"] = absl::StrCat(config_.hidden);
  f.metadata["scaling"] = "group_logit_temp";
  f.metadata["tau"] = JsonFloat(config_.tau);
  if (config_.top_k > 0) f.metadata["top_k"] = absl::StrCat(config_.top_k);
  f.metadata["label"] = config_.labels_are_failure_rate ? "failure_rate" : "success_rate";
  return f;
}

int64_t TrainableAdapter::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += static_cast<int64_t>(p.values.size());
  return n;
}

double TrainableAdapter::StepFlops(const Config& c, int64_t queries, int64_t ref_rows,
                                   int64_t refs_per_query) {
  const double per_row =
      double{1} * c.input_dim * c.hidden + double{1} * (c.num_layers - 1) * c.hidden * c.hidden;
  return 6.0 * static_cast<double>(queries + ref_rows) * per_row +
         6.0 * static_cast<double>(queries) * static_cast<double>(refs_per_query) * c.hidden;
}

namespace {

// Forward of projection `base` (parameter index of its input LayerNorm weight) over rows x.
void ProjectForward(const std::vector<TrainableAdapter::Parameter>& params, int base, int layers,
                    int hidden, Matrix x, float dropout, uint64_t seed, uint64_t stream_base,
                    ProjectionPass* pass) {
  nn::LayerNormForward(params[base].values.data(), params[base + 1].values.data(), x, &pass->in_hat,
                       &pass->in_inv);
  pass->inputs.resize(layers);
  pass->pre.resize(layers - 1);
  pass->masks.resize(layers - 1);
  pass->inputs[0] = std::move(x);
  Matrix a;
  for (int l = 0; l < layers; ++l) {
    const auto& w = params[base + 2 + 2 * l];
    const auto& b = params[base + 3 + 2 * l];
    nn::LinearForward(w.values.data(), b.values.data(), hidden, static_cast<int>(w.shape[1]),
                      pass->inputs[l], &a);
    if (l + 1 == layers) break;
    pass->pre[l] = std::move(a);
    nn::GeluForward(pass->pre[l], &pass->inputs[l + 1]);
    if (dropout > 0) {
      pass->masks[l] = nn::MakeDropoutMask(pass->pre[l].rows(), hidden, dropout, seed,
                                           stream_base + static_cast<uint64_t>(l));
      nn::ApplyDropout(pass->masks[l], dropout, pass->inputs[l + 1]);
    }
  }
  const int out = base + 2 + 2 * layers;
  nn::LayerNormForward(params[out].values.data(), params[out + 1].values.data(), a, &pass->out_hat,
                       &pass->out_inv);
  pass->output = std::move(a);
}

void ProjectBackward(const std::vector<TrainableAdapter::Parameter>& params, int base, int layers,
                     int hidden, float dropout, const ProjectionPass& pass, const Matrix& d_out,
                     std::vector<std::vector<float>>& grads) {
  const int out = base + 2 + 2 * layers;
  Matrix d, dx;
  nn::LayerNormBackward(params[out].values.data(), pass.out_hat, pass.out_inv, d_out,
                        grads[out].data(), grads[out + 1].data(), &d);
  for (int l = layers - 1; l >= 0; --l) {
    const auto& w = params[base + 2 + 2 * l];
    nn::LinearBackward(w.values.data(), hidden, static_cast<int>(w.shape[1]), pass.inputs[l], d,
                       grads[base + 2 + 2 * l].data(), grads[base + 3 + 2 * l].data(), &dx);
    if (l == 0) break;
    if (dropout > 0) nn::ApplyDropout(pass.masks[l - 1], dropout, dx);
    nn::GeluBackward(pass.pre[l - 1], dx);
    std::swap(d, dx);
  }
  nn::LayerNormBackward(params[base].values.data(), pass.in_hat, pass.in_inv, dx,
                        grads[base].data(), grads[base + 1].data(), nullptr);
}

absl::Status ValidateBatch(const FloatMatrix& embeddings, int input_dim, const AdapterBatch& b) {
  const size_t n = b.query_rows.size();
  if (n == 0) return absl::InvalidArgumentError("batch: no queries");
  if (b.targets.size() != n || b.weights.size() != n || b.query_context.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("batch: ", n, " queries but ", b.targets.size(),
                                                   " targets, ", b.weights.size(), " weights, ",
                                                   b.query_context.size(), " contexts"));
  }
  if (embeddings.cols != input_dim) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings: dimension ", embeddings.cols,
                                                   ", the adapter's input is ", input_dim));
  }
  auto check_row = [&](int64_t row, const char* what) -> absl::Status {
    if (row < 0 || row >= embeddings.rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch: ", what, " row ", row, " outside the embeddings [0, ", embeddings.rows, ")"));
    }
    return absl::OkStatus();
  };
  double weight = 0;
  for (size_t i = 0; i < n; ++i) {
    DOTS_RETURN_IF_ERROR(check_row(b.query_rows[i], "query"));
    if (!(b.targets[i] >= 0 && b.targets[i] <= 1) || !(b.weights[i] >= 0) ||
        !std::isfinite(b.weights[i])) {
      return absl::InvalidArgumentError(absl::StrCat("batch: query ", i, ": target ", b.targets[i],
                                                     " or weight ", b.weights[i], " invalid"));
    }
    if (b.query_context[i] < 0 || static_cast<size_t>(b.query_context[i]) >= b.contexts.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch: query ", i, ": context ", b.query_context[i], " out of range"));
    }
    weight += b.weights[i];
  }
  if (!(weight > 0)) return absl::InvalidArgumentError("batch: the weights sum to 0");
  for (const auto& set : b.ref_sets) {
    if (set.size() < 2) {
      return absl::InvalidArgumentError("batch: a reference set has fewer than 2 rows");
    }
    for (int64_t row : set) DOTS_RETURN_IF_ERROR(check_row(row, "reference"));
  }
  for (size_t c = 0; c < b.contexts.size(); ++c) {
    const auto& ctx = b.contexts[c];
    if (ctx.ref_set < 0 || static_cast<size_t>(ctx.ref_set) >= b.ref_sets.size() ||
        ctx.labels.size() != b.ref_sets[ctx.ref_set].size()) {
      return absl::InvalidArgumentError(absl::StrCat("batch: context ", c, ": reference set ",
                                                     ctx.ref_set, " or label count invalid"));
    }
    for (float y : ctx.labels) {
      if (!(y >= 0 && y <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch: context ", c, ": label ", y, " outside [0, 1]"));
      }
    }
  }
  return absl::OkStatus();
}

Matrix GatherRows(const FloatMatrix& embeddings, const std::vector<int64_t>& rows) {
  Matrix x(static_cast<int64_t>(rows.size()), embeddings.cols);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(embeddings.row(rows[i]), embeddings.cols, x.row(static_cast<int64_t>(i)).data());
  }
  return x;
}

}  // namespace

absl::StatusOr<double> TrainableAdapter::LossAndGradients(
    const FloatMatrix& embeddings, const AdapterBatch& batch, const AdapterForwardOptions& options,
    std::vector<std::vector<float>>* gradients, AdapterDropoutMasks* masks) const {
  DOTS_RETURN_IF_ERROR(ValidateBatch(embeddings, config_.input_dim, batch));
  const int layers = config_.num_layers, h = config_.hidden, width = config_.head_width;
  const int64_t nq = static_cast<int64_t>(batch.query_rows.size());

  // Reference rows of every set, concatenated, and each set's offset.
  std::vector<int64_t> ref_rows, ref_offset;
  for (const auto& set : batch.ref_sets) {
    ref_offset.push_back(static_cast<int64_t>(ref_rows.size()));
    ref_rows.insert(ref_rows.end(), set.begin(), set.end());
  }
  ProjectionPass qpass, rpass;
  ProjectForward(params_, ProjectionBase(0), layers, h, GatherRows(embeddings, batch.query_rows),
                 options.dropout, options.dropout_seed, 0, &qpass);
  ProjectForward(params_, ProjectionBase(1), layers, h, GatherRows(embeddings, ref_rows),
                 options.dropout, options.dropout_seed, 64, &rpass);
  if (masks != nullptr) {
    *masks = {qpass.masks, rpass.masks};
    if (options.dropout <= 0) masks->assign(2, {});
  }

  // Head inputs per context.
  const auto& w0 = params_[HeadBase()].values;
  const auto& b0 = params_[HeadBase() + 1].values;
  const auto& w2 = params_[HeadBase() + 2].values;
  const auto& b2 = params_[HeadBase() + 3].values;
  std::vector<HeadForward> heads(batch.contexts.size());
  for (size_t c = 0; c < batch.contexts.size(); ++c) {
    HeadForward& hf = heads[c];
    const auto& y = batch.contexts[c].labels;
    double mean = 0;
    for (float v : y) mean += v;
    mean /= static_cast<double>(y.size());
    double sq = 0;
    for (float v : y) sq += (v - mean) * (v - mean);
    hf.stats[0] = mean;
    hf.stats[1] = std::sqrt(sq / static_cast<double>(y.size() - 1));
    hf.hidden_pre.resize(width);
    hf.hidden.resize(width);
    hf.m0 = b2[0];
    hf.m1 = b2[1];
    for (int j = 0; j < width; ++j) {
      hf.hidden_pre[j] =
          double{w0[2 * j]} * hf.stats[0] + double{w0[2 * j + 1]} * hf.stats[1] + double{b0[j]};
      hf.hidden[j] = std::max(0.0, hf.hidden_pre[j]);
      hf.m0 += double{w2[j]} * hf.hidden[j];
      hf.m1 += double{w2[width + j]} * hf.hidden[j];
    }
    hf.temp_raw = TorchSoftplus(hf.m0);
    hf.temp = std::clamp(hf.temp_raw, kTempMin, kTempMax);
    hf.bias = std::tanh(hf.m1);
  }

  double total_weight = 0;
  for (float w : batch.weights) total_weight += w;
  const double scale = 1.0 / std::sqrt(static_cast<double>(h));
  const double tau = options.tau;
  std::vector<double> loss(nq, 0.0), d_m0(nq, 0.0), d_m1(nq, 0.0);
  Matrix d_q = Matrix::Zero(nq, h);
  Matrix d_r = Matrix::Zero(static_cast<int64_t>(ref_rows.size()), h);
  std::vector<uint8_t> no_reference(nq, 0);

  for (size_t s = 0; s < batch.ref_sets.size(); ++s) {
    std::vector<int64_t> members;  // batch positions of the queries attending over set s
    for (int64_t i = 0; i < nq; ++i) {
      if (batch.contexts[batch.query_context[i]].ref_set == static_cast<int32_t>(s)) {
        members.push_back(i);
      }
    }
    if (members.empty()) continue;
    const std::vector<int64_t>& set = batch.ref_sets[s];
    const int k = static_cast<int>(set.size());
    const int64_t nm = static_cast<int64_t>(members.size());
    Matrix q(nm, h);
    for (int64_t t = 0; t < nm; ++t) q.row(t) = qpass.output.row(members[t]);
    const float* r = rpass.output.row(ref_offset[s]).data();
    Matrix scores(nm, k), d_scores(nm, k);
    nn::Gemm(false, true, static_cast<int>(nm), k, h, q.data(), h, r, h, scores.data(), k);
    // Finite weights can still overflow float (a file may hold 1e38 everywhere): without finite
    // scores there is no attention to train, and the softmax below would read -inf as "no
    // reference".
    for (int64_t e = 0; e < nm * k; ++e) {
      if (!std::isfinite(scores.data()[e])) {
        return absl::AbortedError(
            "non-finite attention scores: the adapter's projections overflow float (its weights "
            "are too large to train)");
      }
    }

#pragma omp parallel for schedule(static) if (nm * k > (1 << 14))
    for (int64_t t = 0; t < nm; ++t) {
      const int64_t i = members[t];
      const HeadForward& hf = heads[batch.query_context[i]];
      const std::vector<float>& y = batch.contexts[batch.query_context[i]].labels;
      std::vector<double> z(k);
      for (int j = 0; j < k; ++j) z[j] = scores(t, j) * scale / tau;
      if (options.exclude_self) {
        for (int j = 0; j < k; ++j) {
          if (set[j] == batch.query_rows[i]) z[j] = kNegInf;
        }
      }
      if (options.top_k > 0 && options.top_k < k) {
        std::vector<int> order(k);
        std::iota(order.begin(), order.end(), 0);
        std::nth_element(order.begin(), order.begin() + options.top_k, order.end(),
                         [&](int a, int b) { return z[a] != z[b] ? z[a] > z[b] : a < b; });
        for (int j = options.top_k; j < k; ++j) z[order[j]] = kNegInf;
      }
      const double zmax = *std::max_element(z.begin(), z.end());
      if (zmax == kNegInf) {
        no_reference[i] = 1;
        continue;
      }
      double sum = 0;
      for (int j = 0; j < k; ++j) sum += (z[j] = std::exp(z[j] - zmax));
      double base = 0;
      for (int j = 0; j < k; ++j) base += (z[j] /= sum) * y[j];  // z now holds the weights

      const double c = std::clamp(base, kLogitClamp, 1.0 - kLogitClamp);
      const double logit = std::log(c / (1.0 - c));
      const double p = Sigmoid(logit / hf.temp + hf.bias);
      const double target = batch.targets[i];
      loss[i] = -(target * std::max(std::log(p), -100.0) +
                  (1.0 - target) * std::max(std::log1p(-p), -100.0));
      const double g = batch.weights[i] / total_weight;
      const double dp = g * (p - target) / std::max(p * (1.0 - p), 1e-12);
      const double dz = dp * p * (1.0 - p);
      const double d_logit = dz / hf.temp;
      const double d_temp = -dz * logit / (hf.temp * hf.temp);
      const double d_temp_raw = (hf.temp_raw >= kTempMin && hf.temp_raw <= kTempMax) ? d_temp : 0;
      d_m0[i] = d_temp_raw * TorchSoftplusGrad(hf.m0);
      d_m1[i] = dz * (1.0 - hf.bias * hf.bias);
      const double d_c = d_logit / (c * (1.0 - c));
      const double d_base = (base >= kLogitClamp && base <= 1.0 - kLogitClamp) ? d_c : 0.0;
      for (int j = 0; j < k; ++j) {
        d_scores(t, j) = static_cast<float>(d_base * z[j] * (y[j] - base) * scale / tau);
      }
    }
    if (std::find(no_reference.begin(), no_reference.end(), 1) != no_reference.end()) break;
    // d_q = dS R, d_r = dS^T Q (the scale is already in dS).
    Matrix dq_members(nm, h);
    nn::Gemm(false, false, static_cast<int>(nm), h, k, d_scores.data(), k, r, h, dq_members.data(),
             h);
    for (int64_t t = 0; t < nm; ++t) d_q.row(members[t]) = dq_members.row(t);
    nn::Gemm(true, false, k, h, static_cast<int>(nm), d_scores.data(), k, q.data(), h,
             d_r.row(ref_offset[s]).data(), h);
  }
  if (std::find(no_reference.begin(), no_reference.end(), 1) != no_reference.end()) {
    return absl::InvalidArgumentError(
        "batch: a query has no reference besides itself (its reference set is its own row)");
  }

  // Loss and the head's gradients, summed in batch order.
  gradients->resize(params_.size());
  for (size_t p = 0; p < params_.size(); ++p) {
    (*gradients)[p].assign(params_[p].values.size(), 0.0f);
  }
  double total_loss = 0;
  std::vector<double> dm(2 * heads.size(), 0.0);
  for (int64_t i = 0; i < nq; ++i) {
    total_loss += batch.weights[i] * loss[i];
    dm[2 * batch.query_context[i]] += d_m0[i];
    dm[2 * batch.query_context[i] + 1] += d_m1[i];
  }
  std::vector<double> gw0(2 * width, 0), gb0(width, 0), gw2(2 * width, 0), gb2(2, 0);
  for (size_t c = 0; c < heads.size(); ++c) {
    const HeadForward& hf = heads[c];
    const double dm0 = dm[2 * c], dm1 = dm[2 * c + 1];
    gb2[0] += dm0;
    gb2[1] += dm1;
    for (int j = 0; j < width; ++j) {
      gw2[j] += dm0 * hf.hidden[j];
      gw2[width + j] += dm1 * hf.hidden[j];
      const double d_hidden = hf.hidden_pre[j] > 0 ? dm0 * w2[j] + dm1 * w2[width + j] : 0.0;
      gw0[2 * j] += d_hidden * hf.stats[0];
      gw0[2 * j + 1] += d_hidden * hf.stats[1];
      gb0[j] += d_hidden;
    }
  }
  auto store = [&](int index, const std::vector<double>& g) {
    std::transform(g.begin(), g.end(), (*gradients)[index].begin(),
                   [](double v) { return static_cast<float>(v); });
  };
  store(HeadBase(), gw0);
  store(HeadBase() + 1, gb0);
  store(HeadBase() + 2, gw2);
  store(HeadBase() + 3, gb2);

  ProjectBackward(params_, ProjectionBase(0), layers, h, options.dropout, qpass, d_q, *gradients);
  ProjectBackward(params_, ProjectionBase(1), layers, h, options.dropout, rpass, d_r, *gradients);
  return total_loss / total_weight;
}

}  // namespace dots
