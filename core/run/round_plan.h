// Budget arithmetic of a training round (docs/design.md §2.4, docs/paper.md §3.2 and §7.2 item 7).
// Pure functions, O(1), no errors beyond the documented preconditions.
#ifndef DOTS_CORE_RUN_ROUND_PLAN_H_
#define DOTS_CORE_RUN_ROUND_PLAN_H_

#include <cmath>
#include <cstdint>

namespace dots {

// Fresh questions of one step: delta * B once the replay store can fill the rest, B before
// (round 0 in the paper has no replay). Rounded to the nearest integer; B >= 1, delta in (0, 1].
inline int64_t FreshPerStep(int64_t batch_size, double fresh_fraction, bool replay_ready) {
  return replay_ready ? static_cast<int64_t>(std::llround(fresh_fraction * batch_size))
                      : batch_size;
}

// Fresh questions the selector draws, without replacement, at the start of round `round`
// (0-based) of `steps_per_round` steps: round 0 = mu * B, later rounds = mu * delta * B.
inline int64_t FreshPerRound(int64_t round, int64_t batch_size, int64_t steps_per_round,
                             double fresh_fraction) {
  return steps_per_round * FreshPerStep(batch_size, fresh_fraction, round > 0);
}

// Extra generations of a reference batch rolled out before the round (paper reference mode).
inline int64_t ReferenceRolloutsPerRound(int64_t reference_size, int64_t group_size) {
  return reference_size * group_size;
}

// Rounds needed for `steps` training steps.
inline int64_t RoundsForSteps(int64_t steps, int64_t steps_per_round) {
  return (steps + steps_per_round - 1) / steps_per_round;
}

}  // namespace dots

#endif  // DOTS_CORE_RUN_ROUND_PLAN_H_
