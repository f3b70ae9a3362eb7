// The paper adapter in trainable form: the released FewShotRegressor (Sun et al. 2025,
// `adaptive_difficulty_prediction/model.py`) with the group_logit_temp head, its forward pass
// over a training batch, the BCE loss with soft targets and the gradient of that loss with
// respect to every parameter. Adapter (adapter.h) is the inference form; both read and write
// the same safetensors names (adapter.h's file comment).
//
// Forward, for query i of a batch with references R (K rows) and reference labels y (K):
//   q = query_proj(x_i), r_j = ref_proj(x_j)        (LN(D), [Linear, GELU, Dropout] x (n-1),
//                                                    Linear, LN(h); dropout only in training)
//   s_j = <q, r_j> / sqrt(h); s_j = -inf for the query's own row (exclude_self) and, with
//   0 < top_k < K, for all but the top_k largest; w = softmax(s / tau); base = sum_j w_j y_j
//   (m0, m1) = Linear(W,2)(ReLU(Linear(2,W)([mean(y), std_unbiased(y)])))
//   p = sigmoid(logit(clamp(base, 1e-4, 1-1e-4)) / clamp(softplus(m0), 0.01, 10) + tanh(m1))
//   loss = sum_i weight_i * BCE(p_i, target_i) / sum_i weight_i       (nn.BCELoss when all 1)
// The gradient follows PyTorch's autograd conventions where they matter: clamp passes gradient
// on the closed interval, softplus is linear above 20, BCE's log is clamped at -100 and its
// backward divides by max(p (1 - p), 1e-12).
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_MODEL_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_MODEL_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/estimation/nn_layers.h"
#include "core/formats/safetensors.h"
#include "core/types.h"

namespace dots {

// One training batch, built by the trainer (adapter_training.h) or a test.
struct AdapterBatch {
  // A reference context: the references (rows of a ref set) with one source's labels.
  struct Context {
    int32_t ref_set = 0;        // index into ref_sets
    std::vector<float> labels;  // one per row of the ref set, in [0, 1]
  };
  std::vector<int64_t> query_rows;             // B rows of the embedding matrix
  std::vector<float> targets;                  // B soft labels in [0, 1]
  std::vector<float> weights;                  // B weights >= 0 with a positive sum
  std::vector<int32_t> query_context;          // B indices into contexts
  std::vector<std::vector<int64_t>> ref_sets;  // rows of each reference set (K >= 1 each)
  std::vector<Context> contexts;
};

struct AdapterForwardOptions {
  float tau = 1.0f;  // attention temperature, > 0
  int top_k = 0;     // 0 = all references
  // A query whose row is among its references does not attend to it (training on a pool that
  // serves as its own reference pool would otherwise reward matching a question to itself).
  bool exclude_self = true;
  float dropout = 0.0f;  // in [0, 1); 0 = inference behaviour
  uint64_t dropout_seed = 0;
};

// Dropout masks a forward pass used, for tests that replay them: masks[p][l] is projection p's
// (0 query, 1 ref) mask after GELU l (n - 1 per projection), rows in the order the pass
// projected them (queries in batch order; ref sets concatenated in order).
using AdapterDropoutMasks = std::vector<std::vector<nn::DropoutMask>>;

class TrainableAdapter {
 public:
  // Architecture and attention metadata carried into the file.
  struct Config {
    int input_dim = 0;
    int hidden = 896;
    int num_layers = 3;
    int head_width = 10;
    float tau = 1.0f;
    int top_k = 0;
    bool labels_are_failure_rate = false;
  };

  // PyTorch's default initialisation (Linear: U(+-1/sqrt(fan_in)) for weight and bias;
  // LayerNorm: weight 1, bias 0) from Rng(seed). Requires input_dim, hidden, num_layers,
  // head_width >= 1. O(number of weights).
  static TrainableAdapter Fresh(const Config& config, uint64_t seed);

  // From an adapter file's tensors: validated by Adapter::FromTensors (errors name the tensor,
  // the metadata field and the expected shape, prefixed by `source`); INVALID_ARGUMENT unless
  // the head is group_logit_temp, the only one trained here.
  static absl::StatusOr<TrainableAdapter> FromTensors(const SafeTensorsFile& file,
                                                      std::string_view source);

  // The file: every parameter under its state_dict name, metadata num_layers, hidden_size,
  // scaling, tau, top_k (when > 0), label, plus `extra_metadata`. O(number of weights).
  SafeTensorsFile ToTensors(const std::map<std::string, std::string>& extra_metadata = {}) const;

  const Config& config() const { return config_; }
  // Attention temperature (> 0) and top-k (>= 0) of the forward pass and the file's metadata.
  void set_attention(float tau, int top_k) {
    config_.tau = tau;
    config_.top_k = top_k;
  }
  int64_t num_parameters() const;  // scalar count

  // Parameters in a fixed order with their state_dict names; gradients use the same order.
  struct Parameter {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  const std::vector<Parameter>& parameters() const { return params_; }
  std::vector<Parameter>& mutable_parameters() { return params_; }

  // Forward and backward over `batch`: returns the loss and overwrites *gradients with one
  // vector per parameter (same order and sizes). `embeddings` is N x input_dim; every row the
  // batch names must be in range (checked: INVALID_ARGUMENT naming the row), as must context
  // and ref-set indices and label counts. ABORTED when the attention scores are not finite
  // (weights so large that the projections overflow float). Masks are written when `masks` is
  // not null.
  // Cost: 6 * (B + R) * (D*h + (n-1)*h*h) + 6 * B * K * h flops for B queries and R reference
  // rows (K per query), about 9.5 GFLOP for B = K = R = 256, D = 1536, h = 896, n = 3; memory
  // O((B + R) * (D + n*h)). Blocks the caller; uses the calling thread's OpenMP threads; const.
  absl::StatusOr<double> LossAndGradients(const FloatMatrix& embeddings, const AdapterBatch& batch,
                                          const AdapterForwardOptions& options,
                                          std::vector<std::vector<float>>* gradients,
                                          AdapterDropoutMasks* masks = nullptr) const;

  // Flops of LossAndGradients for `queries` queries, `ref_rows` projected reference rows and
  // `refs_per_query` references per query (the formula above).
  static double StepFlops(const Config& config, int64_t queries, int64_t ref_rows,
                          int64_t refs_per_query);

 private:
  explicit TrainableAdapter(Config config) : config_(config) {}
  void AddParameter(std::string name, std::vector<int64_t> shape);
  // Index of projection p's (0 query, 1 ref) first parameter.
  int ProjectionBase(int p) const { return p * (4 + 2 * config_.num_layers); }
  int HeadBase() const { return 2 * (4 + 2 * config_.num_layers); }

  Config config_;
  std::vector<Parameter> params_;
};

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_MODEL_H_
