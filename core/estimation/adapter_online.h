// Online fine-tuning of the paper adapter inside a run (`estimator.adapter_training`, paper mode
// only; docs/design.md §2.6). Off by default, so that paper mode stays bit-exact to the released
// code, which never trains during RL.
//
// Before each round plan the run fine-tunes the adapter it was created with (the loaded file, or
// fresh weights without one) on its own outcomes, with the released recipe of
// core/estimation/adapter_training.h, and estimates the round with the result. Each pass starts
// from that same adapter, not from the previous pass: the trained adapter is then a pure function
// of the run's estimator state, the round and the seed, so a restarted or imported run (whose
// state is restored) plans with exactly the adapter the uninterrupted run had, with nothing more
// to store. The cost is bounded by max_labels.
//
// Labels: every observed question's latest success rate, one source (the run's policy), weight
// label_decay^(v - u) for a question last observed at policy version u when training at v; the
// max_labels most recently observed questions (ties by index).
//
// Thread-safety: pure functions; no locks, no global state.
#ifndef DOTS_CORE_ESTIMATION_ADAPTER_ONLINE_H_
#define DOTS_CORE_ESTIMATION_ADAPTER_ONLINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_training.h"
#include "core/estimation/history.h"
#include "core/types.h"

namespace dots {

struct AdapterOnlineOptions {
  bool enabled = false;  // "adapter_training": "online" (true) or "off"
  int epochs = 2;
  double learning_rate = 1e-3;  // the released recipe's; Adam with warm-up and linear decay
  int batch_size = 256;
  int ref_size = 256;
  int64_t max_labels = 4096;
  int64_t min_labels = 16;  // fewer labels: no pass, the run estimates with its start adapter
  double label_decay = 0.9;
  // Architecture of fresh weights when the run has no adapter file (default 896 x 3).
  std::optional<int> hidden_size;
  std::optional<int> num_layers;

  // INVALID_ARGUMENT naming the field (estimator.adapter_training.*).
  absl::Status Validate() const;
};

// The labels of one pass at policy version `policy_version` (see above), sorted by row.
// O(N log N) for N = histories.size().
std::vector<AdapterLabel> OnlineAdapterLabels(const std::vector<QuestionHistory>& histories,
                                              int64_t policy_version,
                                              const AdapterOnlineOptions& options);

// One online pass: TrainAdapter on OnlineAdapterLabels from `start` (null or the identity: fresh
// weights). Returns FAILED_PRECONDITION with fewer than min_labels labels; TrainAdapter's errors
// otherwise (a non-finite loss is ABORTED); on any error the caller keeps its adapter. Cost:
// epochs * ceil(labels / batch_size) training steps (AdapterTrainer::StepFlops each; about
// 9.5 GFLOP at D = 1536, h = 896, n = 3). Deterministic given its arguments; blocks the caller.
absl::StatusOr<AdapterTrainingResult> TrainAdapterOnline(
    const FloatMatrix& embeddings, const std::vector<QuestionHistory>& histories,
    int64_t policy_version, std::shared_ptr<const Adapter> start,
    const AdapterOnlineOptions& options, uint64_t seed);

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_ADAPTER_ONLINE_H_
