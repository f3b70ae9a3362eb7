// The paper's difficulty adapter (Sun et al. 2025, §4.1; the released `FewShotRegressor`): two
// separate projection MLPs, one for queries and one for references (so similarity is
// asymmetric), and a calibration head mapping an attention average to a calibrated rate.
//
// Projection with n layers (PyTorch `nn.Sequential` indices, dropout inactive at inference):
//   0 LayerNorm(D), then n Linear layers at indices 1, 4, 7, ... with GELU (exact erf form) and
//   Dropout between consecutive Linears, then LayerNorm(h) at index 3n - 1.
//   n = 1: 0 LN(D), 1 Lin(D,h), 2 LN(h).   n = 3: 0 LN, 1 Lin(D,h), 2 GELU, 3 Drop, 4 Lin(h,h),
//   5 GELU, 6 Drop, 7 Lin(h,h), 8 LN(h).   LayerNorm: biased variance, eps 1e-5 (PyTorch).
//
// Adapter file (safetensors, docs/design.md §2.3), tensor names and shapes:
//   regressor.sim_head.{query_proj,ref_proj}.{0,3n-1}.{weight,bias}   [D] / [h] (LayerNorms)
//   regressor.sim_head.{query_proj,ref_proj}.{1+3i}.weight             [h, D] (i = 0) / [h, h]
//   regressor.sim_head.{query_proj,ref_proj}.{1+3i}.bias               [h]
//   group_logit_temp: regressor.mlp.0.weight [W, 2], .0.bias [W], regressor.mlp.2.weight [2, W],
//                     regressor.mlp.2.bias [2]   (W = 10 in the paper)
//   platt: regressor.scale [1], regressor.res_scale [1];   temperature: regressor.scale [1]
// Metadata (all optional strings): num_layers, hidden_size, scaling (group_logit_temp | platt |
// temperature | plain; inferred from the head tensors when absent), tau (> 0, default 1),
// top_k (non-negative integer; absent, "None", "null" or "0" = off), label (success_rate |
// failure_rate, default success_rate). Other keys (e.g. the embedding model's name) are ignored.
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/formats/safetensors.h"
#include "core/types.h"

namespace dots {

enum class CalibrationHead { kGroupLogitTemp, kPlatt, kTemperature, kPlain };

// "group_logit_temp", "platt", "temperature", "plain".
const char* CalibrationHeadName(CalibrationHead head);

class Adapter {
 public:
  // Reads and validates an adapter file (see the file comment). Errors (InvalidArgument, or
  // NotFound / Internal for I/O) start with `path` and name the tensor or metadata field and the
  // expected shape or value, e.g. `a.safetensors: tensor "regressor.sim_head.ref_proj.4.weight":
  // shape [896, 512], expected [896, 896]`; a NaN or infinite weight is refused the same way.
  // Cost: O(file size); blocks on file I/O.
  static absl::StatusOr<std::shared_ptr<const Adapter>> Load(const std::string& path);

  // Same as Load from tensors already in memory (tests, benchmarks, converters); `source` prefixes
  // error messages. Copies the weights. O(number of weights).
  static absl::StatusOr<std::shared_ptr<const Adapter>> FromTensors(const SafeTensorsFile& file,
                                                                    std::string_view source);

  // Training-free default: both projections are the L2 normalisation of each row (zero rows stay
  // zero), output_dim() == input_dim() == dim, head kPlain, score_scale() 1 (so scores are cosine
  // similarities), tau() 1 and top_k() 0 (callers pass their own tau). dim >= 1.
  static std::shared_ptr<const Adapter> Identity(int dim);

  int input_dim() const { return input_dim_; }    // D, the embedding width
  int output_dim() const { return output_dim_; }  // h, the projection width
  // Factor applied to <query_proj, ref_proj>: 1/sqrt(h) for a loaded adapter, 1 for Identity.
  float score_scale() const { return score_scale_; }
  float tau() const { return tau_; }    // attention temperature from metadata (default 1)
  int top_k() const { return top_k_; }  // from metadata, 0 = all references
  CalibrationHead head() const { return head_; }
  // True when the file was trained on failure rates (d = 1 - p): callers then convert labels to
  // 1 - p before scoring and the calibrated output back with 1 - c.
  bool labels_are_failure_rate() const { return labels_are_failure_rate_; }
  int num_layers() const;  // n above; 0 for Identity
  bool is_identity() const { return identity_; }

  // The adapter as a file (see the file comment): every tensor under its state_dict name, and
  // metadata num_layers, hidden_size, scaling, tau, top_k (when set) and label, such that
  // FromTensors(ToTensors()) predicts exactly as this adapter. FAILED_PRECONDITION for Identity,
  // which has no weights. O(number of weights).
  absl::StatusOr<SafeTensorsFile> ToTensors() const;

  // Projects rows: x is n x D (row-major float32), *out becomes n x h. Precondition: x.cols ==
  // input_dim() (otherwise *out is filled with NaN). Cost O(n * (D*h + (n_layers-1)*h*h)) flops
  // as blocked GEMMs (Eigen), parallel over row blocks with OpenMP; blocks the caller; no locks,
  // const and safe to call concurrently. Row i of *out depends only on row i of x.
  void ProjectQuery(const FloatMatrix& x, FloatMatrix* out) const;
  void ProjectRef(const FloatMatrix& x, FloatMatrix* out) const;

  // The calibration head applied to an attention average `base` (in [0, 1]), given the mean and
  // the UNBIASED (K-1) standard deviation of the reference labels (0 when K < 2), all in the
  // adapter's label convention. Computed in double:
  //   b = logit(clamp(base, 1e-4, 1 - 1e-4))
  //   group_logit_temp: (m0, m1) = Lin(W,2)(ReLU(Lin(2,W)([mean, std])));
  //                     sigmoid(b / clamp(softplus(m0), 0.01, 10) + tanh(m1))
  //   platt:            sigmoid(scale * b + res_scale)
  //   temperature:      sigmoid(b / scale)
  //   plain:            base (unclamped)
  // O(W). Never NaN for finite inputs.
  double Calibrate(double base, double ref_mean, double ref_std) const;

  // Internal weight layout, public only so the implementation's free helpers can read it.
  struct LayerNormWeights {
    std::vector<float> gamma, beta;  // [width] each
  };
  struct LinearWeights {
    FloatMatrix weight;       // out x in, PyTorch layout
    std::vector<float> bias;  // [out]
  };
  struct Projection {
    LayerNormWeights input_norm;         // LayerNorm(D)
    std::vector<LinearWeights> linears;  // n layers, GELU between consecutive ones
    LayerNormWeights output_norm;        // LayerNorm(h)
  };

 private:
  Adapter() = default;
  void Project(const Projection& projection, const FloatMatrix& x, FloatMatrix* out) const;

  bool identity_ = false;
  int input_dim_ = 0;
  int output_dim_ = 0;
  float score_scale_ = 1.0f;
  float tau_ = 1.0f;
  int top_k_ = 0;
  bool labels_are_failure_rate_ = false;
  CalibrationHead head_ = CalibrationHead::kPlain;
  Projection query_proj_;
  Projection ref_proj_;
  // group_logit_temp head, row-major: w0 [W x 2], b0 [W], w2 [2 x W], b2 [2].
  std::vector<double> mlp_w0_, mlp_b0_, mlp_w2_, mlp_b2_;
  double scale_ = 1.0;      // platt / temperature
  double res_scale_ = 0.0;  // platt
};

// Mean and UNBIASED (K-1) standard deviation of reference labels, as torch.mean / torch.std
// feed the group_logit_temp head; std is 0 when K < 2, mean is 0 when K == 0. O(K), in double.
struct LabelStats {
  double mean = 0;
  double std = 0;
};
LabelStats ComputeLabelStats(absl::Span<const float> labels);

// Random adapter weights with PyTorch's default initialisation scales (Linear: U(+-1/sqrt(in));
// LayerNorm: gamma 1 + N(0, 0.1^2)-ish, beta small), for tests and benchmarks. Metadata carries
// num_layers, hidden_size, scaling and tau "1.0". num_layers >= 1. O(D*h + n*h*h).
SafeTensorsFile MakeRandomAdapterTensors(int input_dim, int hidden, int num_layers,
                                         CalibrationHead head, uint64_t seed);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_H_
