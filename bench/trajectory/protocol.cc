// The trajectory replay through core::Run (see RunTrajectoryProtocol in trajectory.h).
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"
#include "bench/trajectory/trajectory.h"
#include "core/run/run.h"
#include "core/util/status_macros.h"

namespace dots::bench {
namespace {

// A group of `g` rollouts with round(g * rate) successes; which rollouts succeeded is
// irrelevant to dots.
std::vector<float> GroupRewards(int g, float rate) {
  const int successes = static_cast<int>(std::lround(g * rate));
  std::vector<float> rewards(static_cast<size_t>(g), 0.0f);
  for (int i = 0; i < successes; ++i) rewards[i] = 1.0f;
  return rewards;
}

}  // namespace

absl::StatusOr<TrajectoryResult> RunTrajectoryProtocol(const TrajectoryData& data,
                                                       const TrajectoryConfig& config,
                                                       RunConfig run_config) {
  const Pool& pool = data.pool;
  const int64_t n = pool.size();
  const int64_t epochs = config.epochs > 0 ? config.epochs : data.shortest_history;
  const int g = config.group_size;
  run_config.batch_size = config.budget;
  run_config.group_size = g;
  run_config.steps_per_round = 1;
  run_config.reference_size = config.ref_size;
  run_config.reference_mode = config.reference_mode;
  run_config.reference_sampling = config.reference_sampling;
  run_config.alpha = config.selector.alpha;
  run_config.tau = config.selector.tau;
  run_config.selector_strategy = config.selector.strategy;
  run_config.seed = config.seed;
  run_config.estimator.options = config.estimator;
  Run::Options options;
  options.background_planning = false;  // deterministic, and nothing to overlap with here
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run,
                        Run::Create("trajectory", std::move(run_config), options));
  std::vector<Question> questions = pool.questions();
  if (!config.estimator.use_priors) {
    for (Question& q : questions) q.prior.reset();
  }
  DOTS_RETURN_IF_ERROR(run->UpsertQuestions(std::move(questions), pool.embeddings()).status());

  TrajectoryResult result;
  result.epochs = epochs;
  std::vector<float> truth, p_hat(static_cast<size_t>(n));
  double age_sum = 0;
  int64_t replayed = 0, trained = 0;
  for (int64_t t = 0; t < epochs; ++t) {
    TruthAtEpoch(data, t, &truth);
    absl::StatusOr<BatchSlice> batch = run->NextBatch(t, 0, 1, t, absl::InfiniteFuture());
    if (batch.ok() && batch->reference_batch) {
      // Paper reference mode: roll out and report the reference batch, then ask again.
      std::vector<RolloutReport> refs;
      for (const BatchItem& item : batch->items) {
        refs.push_back({item.key, GroupRewards(g, truth[*pool.IndexOf(item.key)]), t, ""});
      }
      result.fresh_rollouts += static_cast<int64_t>(refs.size()) * g;
      DOTS_RETURN_IF_ERROR(run->ReportRollouts(t, std::move(refs)).status());
      batch = run->NextBatch(t, 0, 1, t, absl::InfiniteFuture());
    }
    if (!batch.ok()) return batch.status();
    DOTS_ASSIGN_OR_RETURN(std::vector<QuestionEstimate> estimates, run->GetEstimates({}));
    for (int64_t q = 0; q < n; ++q) p_hat[q] = static_cast<float>(estimates[q].p_hat);
    ScoreEpoch(p_hat, truth, &result);

    std::vector<RolloutReport> reports;
    int64_t effective = 0;
    for (const BatchItem& item : batch->items) {
      const int64_t q = *pool.IndexOf(item.key);
      if (IsEffective(truth[q], g)) ++effective;
      reports.push_back(
          {item.key, GroupRewards(g, truth[q]), t, absl::StrFormat("%s@%d", item.key, t)});
    }
    for (const ReplayGroup& group : batch->replay) age_sum += static_cast<double>(t - group.step);
    replayed += static_cast<int64_t>(batch->replay.size());
    trained += static_cast<int64_t>(batch->items.size() + batch->replay.size());
    result.fresh_rollouts += static_cast<int64_t>(batch->items.size()) * g;
    result.rollouts += static_cast<int64_t>(batch->items.size() + batch->replay.size()) * g;
    result.effective_by_epoch.push_back(
        batch->items.empty() ? 0.0 : static_cast<double>(effective) / batch->items.size());
    DOTS_ASSIGN_OR_RETURN(ReportResult reported, run->ReportRollouts(t, std::move(reports)));
    if (!reported.rejected.empty()) {
      return absl::InternalError(absl::StrFormat("epoch %d: report of %s rejected: %s", t,
                                                 reported.rejected[0].first,
                                                 reported.rejected[0].second));
    }
  }
  FinishResult(&result);
  result.replay_fraction = trained > 0 ? static_cast<double>(replayed) / trained : 0;
  result.replay_age = replayed > 0 ? age_sum / replayed : 0;
  return result;
}

}  // namespace dots::bench
