// Training the paper adapter (adapter_model.h) with the released recipe (docs/paper.md §2.3,
// `adaptive_difficulty_prediction/train.py` + `run_train.sh`):
//   - training instances are (question, source, rate) labels; each epoch visits them in a fresh
//     random order, in batches of batch_size (the last one may be smaller: drop_last=False);
//   - each batch samples its references once (ref_size questions, without replacement) and
//     shares them across the batch; every query takes its reference LABELS from its own source
//     (labelling model). Sources that labelled the same question set share one sample per batch
//     (the released setting: one reference pool with per-model labels); sources with different
//     question sets (e.g. one per policy version) get one sample each;
//   - BCE with soft targets (weighted by each label's weight), Adam (not AdamW) at lr 1e-3,
//     linear warm-up over min(100, total_steps / 10) steps from 0, then linear decay to 0
//     (transformers' get_linear_schedule_with_warmup, stepped after each update), dropout 0.1.
// Deviation from the released code: a query never attends to its own row when it is among the
// sampled references (exclude_self), because here the reference pool is the training pool.
//
// Determinism: everything random (initial weights, epoch order, reference samples, dropout
// masks) comes from core/util/random.h streams of `seed`, so the same inputs and seed give the
// same weights bit for bit, whatever the number of threads (nn::Gemm computes fixed tiles with
// single-threaded OpenBLAS calls; the tests compare 1 and 2 threads). What can change the bits:
// another OpenBLAS build or CPU kernel (e.g. AVX-512 vs AVX2), or another compiler.
//
// Thread-safety: no locks and no global state; a trainer object is used by one thread at a
// time; the free function may run concurrently with anything (it reads only its arguments).
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_TRAINING_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_TRAINING_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_model.h"
#include "core/types.h"

namespace dots {

// One labeled question: row of the embedding matrix, success rate in [0, 1], weight >= 0 in the
// loss (0 = a reference only, never a query), and the labelling source (any id >= 0; a policy
// version, a model).
struct AdapterLabel {
  int64_t row = 0;
  float rate = 0;
  float weight = 1;
  int32_t source = 0;
};

struct AdapterTrainingOptions {
  int epochs = 20;
  double learning_rate = 1e-3;
  int batch_size = 256;
  int ref_size = 256;
  float dropout = 0.1f;
  // Warm-up steps = min(max_warmup_steps, total_steps / 10); lr_schedule false keeps lr flat.
  int max_warmup_steps = 100;
  bool lr_schedule = true;
  nn::AdamConfig adam;
  // Architecture of a fresh adapter; a warm start keeps its own (setting these to other values
  // than the warm start's is an error).
  std::optional<int> hidden_size;  // default 896
  std::optional<int> num_layers;   // default 3
  // Attention temperature and top-k; unset = the warm start's metadata, else 1 and 0 (off).
  std::optional<float> tau;
  std::optional<int> top_k;
  bool exclude_self = true;
  // OpenMP threads of the calling thread during training (0 = leave as is). A per-thread
  // setting (omp_set_num_threads), restored on return.
  int threads = 0;

  // INVALID_ARGUMENT naming the field, e.g. "batch_size: 0 is not >= 1".
  absl::Status Validate() const;
};

struct AdapterTrainingProgress {
  int64_t step = 0;  // 1-based, counted over the whole training
  int64_t total_steps = 0;
  int epoch = 0;  // 1-based
  int epochs = 0;
  double batch_loss = 0;
  double epoch_mean_loss = 0;  // mean batch loss of this epoch so far
  double learning_rate = 0;    // the rate this step used
};
// The learning rate of 0-based step `step` out of `total_steps` (transformers'
// get_linear_schedule_with_warmup): lr * step / max(1, warmup) during the warm-up, then
// lr * max(0, (total - step) / max(1, total - warmup)). O(1).
double LinearWarmupDecay(double learning_rate, int64_t step, int64_t total_steps,
                         int64_t warmup_steps);

// Called after every step on the training thread; returning false cancels training.
using AdapterTrainingCallback = std::function<bool(const AdapterTrainingProgress&)>;

// Training state across epochs, for callers that evaluate between epochs (dotsctl adapter
// train). Most callers want TrainAdapter below.
class AdapterTrainer {
 public:
  // `embeddings` (N x D, finite in every labeled row) must outlive the trainer; `labels` are
  // copied. `start` is the adapter to fine-tune (its weights, head width, tau, top_k and label
  // convention: with failure_rate labels the targets become 1 - rate), or null for fresh
  // weights. Errors (INVALID_ARGUMENT, naming the field or label index): bad options; a label
  // with a row outside [0, N), a rate outside [0, 1] or NaN, a negative or non-finite weight, a
  // negative source; a row labeled twice by one source; a non-finite embedding value in a
  // labeled row; a start adapter that is the identity, has another head than group_logit_temp,
  // another input dimension than D or another architecture than the options ask for; no
  // trainable label (each source needs >= 2 labeled rows; a query needs weight > 0).
  // Labels of sources with fewer than 2 rows are skipped (skipped_labels()). O(N + labels).
  static absl::StatusOr<std::unique_ptr<AdapterTrainer>> Create(
      const FloatMatrix& embeddings, absl::Span<const AdapterLabel> labels,
      std::shared_ptr<const Adapter> start, const AdapterTrainingOptions& options, uint64_t seed);

  // Runs the next epoch. Returns its mean batch loss. A non-finite loss stops training with
  // ABORTED "non-finite loss (nan) at step S of T (epoch E, batch B)"; a callback returning
  // false with CANCELLED; after either, the trainer refuses further epochs
  // (FAILED_PRECONDITION). Cost: steps_per_epoch() * StepFlops; blocks the caller.
  absl::StatusOr<double> RunEpoch(const AdapterTrainingCallback& callback = nullptr);

  // The current weights as a file (metadata of the adapter plus `extra_metadata`), and as an
  // inference adapter. O(number of weights).
  SafeTensorsFile Tensors(const std::map<std::string, std::string>& extra_metadata = {}) const;
  absl::StatusOr<std::shared_ptr<const Adapter>> Snapshot() const;

  int epochs_done() const { return epochs_done_; }
  int64_t steps_done() const { return step_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t examples_per_epoch() const { return static_cast<int64_t>(queries_.size()); }
  int64_t skipped_labels() const { return skipped_labels_; }
  // Flops of one full batch (batch_size queries, one reference sample per source group).
  double StepFlops() const;
  const TrainableAdapter& model() const { return model_; }

 private:
  struct Source {
    int group = 0;              // index into groups_
    std::vector<float> labels;  // aligned with the group's rows
  };
  struct Group {
    std::vector<int64_t> rows;  // sorted, distinct
  };
  struct Query {
    int64_t row;
    int32_t source;  // index into sources_
    float target;
    float weight;
  };

  AdapterTrainer(const FloatMatrix& embeddings, TrainableAdapter model,
                 const AdapterTrainingOptions& options, uint64_t seed)
      : embeddings_(embeddings), model_(std::move(model)), options_(options), seed_(seed) {}

  AdapterBatch MakeBatch(const std::vector<int64_t>& order, int64_t begin, int64_t end) const;
  double LearningRate(int64_t step) const;  // step is 0-based

  const FloatMatrix& embeddings_;
  TrainableAdapter model_;
  AdapterTrainingOptions options_;
  uint64_t seed_;
  std::vector<Source> sources_;
  std::vector<Group> groups_;
  std::vector<Query> queries_;
  std::vector<std::vector<float>> adam_m_, adam_v_;
  int64_t skipped_labels_ = 0;
  int64_t steps_per_epoch_ = 0, total_steps_ = 0, warmup_steps_ = 0;
  int64_t step_ = 0;
  int epochs_done_ = 0;
  bool failed_ = false;
};

struct AdapterTrainingResult {
  std::shared_ptr<const Adapter> adapter;  // the trained adapter (inference form)
  SafeTensorsFile tensors;                 // the same as an adapter file
  double mean_loss = 0;                    // mean batch loss over every step
  std::vector<double> epoch_losses;        // mean batch loss of each epoch
  int64_t steps = 0;
  int64_t examples_per_epoch = 0;
  int64_t skipped_labels = 0;
  double flops = 0;  // StepFlops() * steps (an upper bound: the last batch may be smaller)
};

// Trains `options.epochs` epochs and returns the new adapter. This is also the ONLINE pass: a
// run's background trainer calls it between rounds with the run's embeddings, its recent labels
// (weights favouring the current policy version, source = policy version or any grouping),
// the adapter in force as `start`, options.epochs = 1 (or a few) and a seed derived from the
// run's seed and round; the result depends only on these arguments. Adam's moments and the
// warm-up start afresh at every call (nothing is carried between passes but the weights).
// Cost: about epochs * ceil(labels / batch_size) * StepFlops flops (9.5 GFLOP a step at
// B = K = 256, D = 1536, h = 896, n = 3; bench/perf BM_OnlineAdapterPass measures it);
// memory: the batch's activations, O((B + R) * (D + n*h)) floats for B queries and R reference
// rows, and 4 copies of the weights (weights, gradients, Adam's two moments; 6.6 M floats each
// at D = 1536, h = 896, n = 3), nothing per pool question. Blocks the caller; uses the
// calling thread's OpenMP threads (options.threads); no locks, no global state; `start` is never
// modified. Errors: as AdapterTrainer::Create and RunEpoch; on any error nothing is returned and
// the caller keeps its adapter. `extra_metadata` goes into the result's file.
absl::StatusOr<AdapterTrainingResult> TrainAdapter(
    const FloatMatrix& embeddings, absl::Span<const AdapterLabel> labels,
    std::shared_ptr<const Adapter> start, const AdapterTrainingOptions& options, uint64_t seed,
    const AdapterTrainingCallback& callback = nullptr,
    const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_TRAINING_H_
