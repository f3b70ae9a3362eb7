#include "bench/trajectory/trajectory.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_format.h"
#include "core/util/json.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots::bench {

absl::StatusOr<TrajectoryData> LoadTrajectoryData(const std::string& path,
                                                  const std::string& embeddings_path) {
  TrajectoryData data;
  DOTS_ASSIGN_OR_RETURN(data.pool, LoadPool(path, embeddings_path));
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot open", path));
  std::string line;
  int64_t line_no = 0;
  data.shortest_history = std::numeric_limits<int64_t>::max();
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    DOTS_ASSIGN_OR_RETURN(JsonValue value, ParseJson(line));
    const JsonValue* history = value.Find("history");
    if (history == nullptr || !history->is_array() || history->items().empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s:%d: field \"history\": a non-empty array of success rates is required", path,
          line_no));
    }
    std::vector<float> rates;
    for (const JsonValue& v : history->items()) {
      if (!v.is_number() || !(v.as_number() >= 0 && v.as_number() <= 1)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s:%d: field \"history\": every value must be a number in [0, 1]", path, line_no));
      }
      rates.push_back(static_cast<float>(v.as_number()));
    }
    data.shortest_history = std::min<int64_t>(data.shortest_history, rates.size());
    data.histories.push_back(std::move(rates));
  }
  if (static_cast<int64_t>(data.histories.size()) != data.pool.size()) {
    return absl::InternalError(absl::StrFormat("%s: %d histories for %d questions", path,
                                               data.histories.size(), data.pool.size()));
  }
  DOTS_RETURN_IF_ERROR(EnsureEmbeddings(&data.pool));
  return data;
}

bool IsEffective(float rate, int group_size) {
  const double successes = std::round(group_size * double{rate});
  return successes > 0 && successes < group_size;
}

double Pearson(const std::vector<float>& x, const std::vector<float>& y) {
  const size_t n = x.size();
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 1e-18 || syy <= 1e-18) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

void TruthAtEpoch(const TrajectoryData& data, int64_t t, std::vector<float>* truth) {
  truth->resize(data.histories.size());
  for (size_t q = 0; q < data.histories.size(); ++q) {
    const std::vector<float>& h = data.histories[q];
    (*truth)[q] = h[std::min<int64_t>(t, static_cast<int64_t>(h.size()) - 1)];
  }
}

void ScoreEpoch(const std::vector<float>& p_hat, const std::vector<float>& truth,
                TrajectoryResult* result) {
  const double r = Pearson(p_hat, truth);
  result->pearson_by_epoch.push_back(r);
  if (!std::isnan(r)) {
    result->pearson += r;
    ++result->pearson_epochs;
  }
  double abs_err = 0;
  for (size_t q = 0; q < truth.size(); ++q) abs_err += std::abs(p_hat[q] - truth[q]);
  result->mae += abs_err / static_cast<double>(truth.size());
}

void FinishResult(TrajectoryResult* result) {
  const int64_t epochs = std::max<int64_t>(result->epochs, 1);
  for (double e : result->effective_by_epoch) result->effective_ratio += e;
  result->effective_ratio /= epochs;
  result->mae /= epochs;
  result->pearson = result->pearson_epochs > 0 ? result->pearson / result->pearson_epochs
                                               : std::numeric_limits<double>::quiet_NaN();
}

absl::StatusOr<TrajectoryResult> RunTrajectory(const TrajectoryData& data,
                                               std::shared_ptr<const Adapter> adapter,
                                               const TrajectoryConfig& config) {
  const Pool& pool = data.pool;
  const int64_t n = pool.size();
  const int64_t epochs = config.epochs > 0 ? config.epochs : data.shortest_history;
  const int64_t k = config.reference_mode == ReferenceMode::kNone ? 0 : config.ref_size;
  const int g = config.group_size;
  if (config.budget < 1 || config.budget > n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--budget: %d must be in [1, %d]", config.budget, n));
  }
  if (config.reference_mode == ReferenceMode::kInline && k >= config.budget) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--ref-size: %d inline references leave no room in a budget of %d", k, config.budget));
  }
  if (k < 0 || k > n) {
    return absl::InvalidArgumentError(absl::StrFormat("--ref-size: %d must be in [0, %d]", k, n));
  }
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Estimator> estimator,
                        Estimator::Create(pool, adapter, config.estimator));
  ReferenceSamplingOptions ref_options;
  ref_options.strategy = config.reference_sampling;
  ref_options.group_size = g;
  ref_options.coverage_fraction = config.reference_coverage;
  ref_options.sharpness = config.reference_sharpness;

  TrajectoryResult result;
  result.epochs = epochs;
  std::vector<float> truth;
  std::vector<int64_t> last_refs;
  for (int64_t t = 0; t < epochs; ++t) {
    TruthAtEpoch(data, t, &truth);
    auto report = [&](int64_t q) -> absl::Status {
      return estimator->Observe(q, std::round(g * truth[q]), g, t);
    };
    const uint64_t epoch_seed = MixSeed(config.seed, static_cast<uint64_t>(t));
    if (config.reference_mode == ReferenceMode::kPaper) {
      // The paper's protocol: a reference batch is rolled out and reported before the round.
      Estimates none;
      ReferenceSamplingOptions uniform = ref_options;
      uniform.strategy = ReferenceSampling::kUniform;
      DOTS_ASSIGN_OR_RETURN(last_refs,
                            SampleReferenceSet(*estimator, none, k, uniform, {}, epoch_seed));
      for (int64_t q : last_refs) DOTS_RETURN_IF_ERROR(report(q));
      result.rollouts += k * g;
    }
    DOTS_ASSIGN_OR_RETURN(Estimates est, estimator->Estimate(t, last_refs));
    ScoreEpoch(est.p_hat, truth, &result);
    // The online model, as a run trains it between rounds: on the labels known when this epoch
    // was estimated, in force from the next epoch's estimate on.
    if (config.estimator.mode == EstimatorMode::kDefault && config.estimator.model.enabled) {
      absl::StatusOr<OnlineModel> trained =
          TrainOnlineModel(pool.embeddings(), estimator->histories(), t, config.estimator.model,
                           estimator->online_model().get());
      if (trained.ok()) {
        auto model = std::make_shared<const OnlineModel>(*std::move(trained));
        auto predictions = std::make_shared<std::vector<float>>(static_cast<size_t>(n));
        DOTS_RETURN_IF_ERROR(
            model->probe.PredictAll(pool.embeddings(), absl::MakeSpan(*predictions)));
        DOTS_RETURN_IF_ERROR(estimator->SetOnlineModel(std::move(model), std::move(predictions)));
      } else if (!absl::IsFailedPrecondition(trained.status())) {
        return trained.status();
      }
    }

    std::vector<int64_t> handed;
    std::vector<uint8_t> excluded(static_cast<size_t>(n), 0);
    int64_t fresh = config.budget;
    if (config.reference_mode == ReferenceMode::kInline) {
      DOTS_ASSIGN_OR_RETURN(last_refs, SampleReferenceSet(*estimator, est, k, ref_options, {},
                                                          MixSeed(epoch_seed, 1)));
      for (int64_t q : last_refs) excluded[q] = 1;
      handed = last_refs;
      fresh -= static_cast<int64_t>(last_refs.size());
    }
    SelectorInput input;
    input.p_hat = est.p_hat;
    input.excluded = excluded;
    input.beta_a = est.beta_a;
    input.beta_b = est.beta_b;
    DOTS_ASSIGN_OR_RETURN(std::vector<int64_t> chosen,
                          SelectQuestions(input, fresh, config.selector, MixSeed(epoch_seed, 2)));
    handed.insert(handed.end(), chosen.begin(), chosen.end());
    int64_t effective = 0;
    for (int64_t q : handed) {
      if (IsEffective(truth[q], g)) ++effective;
      DOTS_RETURN_IF_ERROR(report(q));
    }
    result.rollouts += static_cast<int64_t>(handed.size()) * g;
    result.effective_by_epoch.push_back(
        handed.empty() ? 0.0 : static_cast<double>(effective) / static_cast<double>(handed.size()));
  }
  FinishResult(&result);
  return result;
}

}  // namespace dots::bench
