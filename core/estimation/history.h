// A question's own outcome history, as the estimator keeps it (core/estimation/estimator.h) and
// the online model learns from it (core/estimation/online_model.h).
#ifndef DOTS_CORE_ESTIMATION_HISTORY_H_
#define DOTS_CORE_ESTIMATION_HISTORY_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace dots {

// What the estimator remembers of one question: its decayed outcome counts (in rollouts,
// decayed to last_version) and its latest observation. Exported for persistence and restored
// after the pool grows.
struct QuestionHistory {
  double successes = 0;
  double failures = 0;
  int64_t last_version = -1;  // -1 = never observed
  double last_rate = 0;
  int64_t observations = 0;
};

// The questions of `histories` that were observed, at most `max_labels` of them: the most
// recently observed (latest version first, ties by index), returned in index order. The label set
// of the run's learned models. O(N log N).
inline std::vector<int64_t> RecentlyObserved(const std::vector<QuestionHistory>& histories,
                                             int64_t max_labels) {
  std::vector<int64_t> observed;
  for (int64_t q = 0; q < static_cast<int64_t>(histories.size()); ++q) {
    if (histories[q].observations > 0) observed.push_back(q);
  }
  if (static_cast<int64_t>(observed.size()) > max_labels) {
    std::nth_element(observed.begin(), observed.begin() + max_labels, observed.end(),
                     [&](int64_t a, int64_t b) {
                       return histories[a].last_version != histories[b].last_version
                                  ? histories[a].last_version > histories[b].last_version
                                  : a < b;
                     });
    observed.resize(static_cast<size_t>(max_labels));
    std::sort(observed.begin(), observed.end());
  }
  return observed;
}

// A question's label: its decayed success rate (its latest rate when the counts decayed away).
inline float DecayedRate(const QuestionHistory& h) {
  const double total = h.successes + h.failures;
  return static_cast<float>(total > 0 ? h.successes / total : h.last_rate);
}

// The weight of that label in a training at policy version `policy_version`:
// decay^(policy_version - last_version), 1 for a label of the current version.
inline float LabelWeight(const QuestionHistory& h, int64_t policy_version, double decay) {
  const int64_t age = std::max<int64_t>(0, policy_version - std::max<int64_t>(h.last_version, 0));
  return static_cast<float>(std::pow(decay, static_cast<double>(age)));
}

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_HISTORY_H_
