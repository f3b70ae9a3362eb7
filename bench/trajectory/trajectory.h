// The real-data trajectory benchmark: replays a recorded GRPO run's per-question success rates
// (question JSONL with a `history` array) through the estimator and selector, feeding back the
// real outcome of whatever is selected.
//
// Protocol, per epoch t (= policy version t):
//   1. the true success rate of question q is history_q[t] (its last value when shorter);
//   2. estimates are scored against the truth over the whole pool, before the epoch's reports;
//   3. inline reference mode: K reference questions are drawn (counted in the budget) and the
//      selector draws budget - K fresh questions from the rest; paper mode: K extra reference
//      questions are rolled out and reported first and the selector draws the whole budget;
//      none: the selector draws the whole budget;
//   4. every handed-out question is reported as round(G * rate) successes out of G, and counts as
//      effective when that is neither 0 nor G (IsEffective).
#ifndef DOTS_BENCH_TRAJECTORY_TRAJECTORY_H_
#define DOTS_BENCH_TRAJECTORY_TRAJECTORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/estimation/adapter.h"
#include "core/estimation/estimator.h"
#include "core/formats/pool.h"
#include "core/run/run_config.h"
#include "core/selection/reference_set.h"
#include "core/selection/selector.h"

namespace dots::bench {

struct TrajectoryData {
  Pool pool;                                  // embedded (text embedder when the file has none)
  std::vector<std::vector<float>> histories;  // per question, success rate per visit
  int64_t shortest_history = 0;
};

// Loads the pool and the `history` arrays of `path`, with the N x D embeddings of
// `embeddings_path` (.npy, one row per line) when it is not empty; every line must carry a
// non-empty `history` of numbers in [0, 1] (error names the line). Embeds prompts when the pool
// has no embeddings.
absl::StatusOr<TrajectoryData> LoadTrajectoryData(const std::string& path,
                                                  const std::string& embeddings_path = "");

struct TrajectoryConfig {
  int64_t budget = 256;   // questions handed out per epoch (inline references included)
  int64_t ref_size = 32;  // K
  int64_t epochs = 0;     // 0 = the shortest history
  int group_size = 8;     // G
  ReferenceMode reference_mode = ReferenceMode::kInline;
  ReferenceSampling reference_sampling = ReferenceSampling::kInformative;
  double reference_coverage = 0.25;
  double reference_sharpness = 5.0;
  EstimatorOptions estimator;
  SelectorOptions selector;
  uint64_t seed = 1;
};

struct TrajectoryResult {
  double effective_ratio = 0;  // mean over epochs of the fraction of handed-out questions
                               // with true rate strictly inside (0, 1)
  double pearson = 0;          // mean over epochs where p_hat is not constant
  int64_t pearson_epochs = 0;  // epochs that entered the pearson mean
  double mae = 0;              // mean over epochs of mean |p_hat - truth| over the pool
  int64_t rollouts = 0;        // every rollout generated, reference rollouts included
  int64_t epochs = 0;
  std::vector<double> effective_by_epoch;
  std::vector<double> pearson_by_epoch;  // NaN where undefined
  // Protocol runs (RunTrajectoryProtocol) only; zero otherwise.
  double replay_fraction = 0;  // replayed groups / (fresh + replayed groups) over the run
  double replay_age = 0;       // mean age in steps of replayed groups
  int64_t fresh_rollouts = 0;  // rollouts generated (fresh and reference questions)
};

// Runs one configuration on `data` with `adapter` (null = identity). Deterministic for a seed.
absl::StatusOr<TrajectoryResult> RunTrajectory(const TrajectoryData& data,
                                               std::shared_ptr<const Adapter> adapter,
                                               const TrajectoryConfig& config);

// The same replay through core::Run, the service's training protocol: one epoch is one step and
// one round (mu = 1), batch_size = budget, inline references, and rollout replay with
// `run_config.fresh_fraction` and `run_config.replay` (unless disabled). Every question a batch
// hands out is reported with its true outcome; replayed groups cost no rollouts. Scores
// estimates after the epoch's plan (which uses only earlier reports). `rollouts` counts the
// rollouts trained on (fresh + replayed), `fresh_rollouts` those generated.
absl::StatusOr<TrajectoryResult> RunTrajectoryProtocol(const TrajectoryData& data,
                                                       const TrajectoryConfig& config,
                                                       RunConfig run_config);

// Whether a question of true success rate `rate` is effective when handed out: its reported
// outcome round(G * rate) successes out of G is neither 0 nor G, so the group carries GRPO
// gradient. For recorded k/G rates this is 0 < rate < 1; for exact rates (a dumped run of
// examples/tiny_grpo) it is what the replay reports. O(1).
bool IsEffective(float rate, int group_size);

// Pearson correlation of two equally long vectors; NaN when either is constant.
double Pearson(const std::vector<float>& x, const std::vector<float>& y);

// Shared steps of both replays.
// Writes every question's true success rate at epoch t (its last value when shorter). O(N).
void TruthAtEpoch(const TrajectoryData& data, int64_t t, std::vector<float>* truth);
// Scores one epoch's estimates against the truth: appends to pearson_by_epoch and adds to the
// running sums in `pearson` (defined epochs only), `pearson_epochs` and `mae`. O(N).
void ScoreEpoch(const std::vector<float>& p_hat, const std::vector<float>& truth,
                TrajectoryResult* result);
// Turns the running sums into means over epochs (effective_ratio from effective_by_epoch).
void FinishResult(TrajectoryResult* result);

}  // namespace dots::bench

#endif  // DOTS_BENCH_TRAJECTORY_TRAJECTORY_H_
