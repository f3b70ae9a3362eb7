// A question's own outcome history, as the estimator keeps it (core/estimation/estimator.h) and
// the online model learns from it (core/estimation/online_model.h).
#ifndef DOTS_CORE_ESTIMATION_HISTORY_H_
#define DOTS_CORE_ESTIMATION_HISTORY_H_

#include <cstdint>

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

}  // namespace dots

#endif  // DOTS_CORE_ESTIMATION_HISTORY_H_
