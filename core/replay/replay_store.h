// The rollout replay store (RR) of one run: a FIFO of recent *informative* rollout groups that
// later steps reuse instead of generating fresh rollouts (docs/design.md §2.5, docs/paper.md §4).
//
// What the released DOTS code does each step (docs/paper.md §4.2, §7.1 item 12): dedup the buffer
// by question keeping the newest group, drop groups whose mean reward is 0 or 1, replay up to (1 -
// delta) B groups uniformly without replacement, keep the newest C - delta B groups, append the
// fresh batch. This store gives the same behaviour through three calls:
//   * Insert()  — after a step's fresh groups are scored. Uninformative groups are dropped, a newer
//                 group of the same key replaces the older one, then the oldest groups are evicted
//                 until the store is within capacity_groups (C) and capacity_bytes.
//   * Sample()  — when a step's batch is built. Never returns a group inserted at that same step.
//                 Call it before inserting the step's fresh groups, as the paper does: with C = 256
//                 the insert evicts exactly the groups the step should replay.
//   * EvictStale() — when the policy version advances or after Sample, to free groups that can no
//                 longer be returned (too old, or replayed max_replays times).
// With C = 256 and 256 informative fresh groups per step, each Insert evicts the whole previous
// buffer and only the previous step's groups are eligible (every group is replayed at age 1). With
// C = 512 the store holds the latest fresh batch plus up to 256 older groups. One difference from
// the code: when fewer than delta B fresh groups are informative, the code still trims the old part
// to C - delta B while this store keeps up to C groups in total (the paper's "drop the oldest
// entries until |R| <= C").
//
// A pool with fewer eligible groups than requested gives fewer groups (the code's behaviour, not
// the paper's "skip replay unless |R| >= (1 - delta) B"); the caller decides whether to fill the
// batch with fresh questions or shrink it.
//
// Thread-compatibility: no internal lock. Const methods may run concurrently with each other; every
// other call needs exclusive access. The Run (core/run/run.h) holds its run mutex around every
// call.
#ifndef DOTS_CORE_REPLAY_REPLAY_STORE_H_
#define DOTS_CORE_REPLAY_REPLAY_STORE_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/types.h"

namespace dots {

enum class ReplayStrategy {
  // Uniform without replacement over the eligible groups (the paper, App. A.1, and its code).
  kUniform,
  // The eligible groups whose current p_hat[question] is closest to alpha; exact ties broken
  // uniformly at random. Groups with no usable p_hat (question outside p_hat, or p_hat not finite)
  // come after all others, in random order.
  kTargeted,
};

// "uniform" | "targeted" (exact, lower case). INVALID_ARGUMENT otherwise. O(1).
absl::StatusOr<ReplayStrategy> ParseReplayStrategy(std::string_view name);
// The inverse of ParseReplayStrategy; "unknown" for a value outside the enum. O(1).
std::string_view ReplayStrategyName(ReplayStrategy strategy);

struct ReplayOptions {
  // C: most groups held (paper: 256 or 512). >= 1.
  int64_t capacity_groups = 512;
  // Most bytes held, summed over ReplayGroup::bytes(). >= kReplayGroupOverheadBytes.
  int64_t capacity_bytes = 1LL << 30;
  ReplayStrategy strategy = ReplayStrategy::kUniform;
  // 0 = no limit. Otherwise a group with policy_version < current_version - max_age_versions is
  // never returned, and EvictStale removes it. >= 0.
  int64_t max_age_versions = 0;
  // 0 = unlimited. Otherwise a group is returned by Sample at most this many times, and
  // EvictStale removes it once it has been. >= 0.
  int64_t max_replays = 0;
  // kTargeted: the target success rate. Finite (validated for every strategy).
  double alpha = 0.5;

  // OK, or INVALID_ARGUMENT naming the first bad field ("replay.capacity_groups: ..."). O(1).
  absl::Status Validate() const;
};

struct ReplaySampleRequest {
  // The step being served: groups with step >= this are never returned.
  int64_t step = 0;
  // The current policy version, for max_age_versions.
  int64_t policy_version = 0;
  // Groups wanted. Fewer are returned when fewer are eligible; <= 0 returns none.
  int64_t count = 0;
  // kTargeted: the current success-rate estimate per pool index (N floats, indexed by
  // ReplayGroup::question). May be empty for kUniform (and for kTargeted, which then degrades to
  // uniform). Not copied; must outlive the call.
  absl::Span<const float> p_hat;
  // The draw is a pure function of (store contents, request, options), seed included.
  uint64_t seed = 0;
};

class ReplayStore {
 public:
  // `options` should have passed Validate(). If they have not, the store stays empty: Insert and
  // Restore return the Validate() error and Sample returns nothing. O(1).
  explicit ReplayStore(ReplayOptions options);

  // Inserts one group (moved in; its replays and sequence are overwritten). Returns true if the
  // store kept it, false if it was dropped, which is not an error:
  //   * an existing group with the same key has a newer step: this one is dropped;
  //   * the rewards have zero variance (all equal, e.g. all 0 or all 1): this one is dropped, and
  //     an existing group of the same key with an older or equal step is removed too, as the
  //     paper's code does (dedup keeps the newest occurrence, then the filter drops it);
  //   * otherwise an existing group of the same key (older or equal step) is replaced, and the new
  //     group goes to the FIFO tail.
  // A kept group is never evicted by its own insertion; older groups are evicted oldest-first until
  // size() <= capacity_groups and bytes() <= capacity_bytes.
  // Errors (INVALID_ARGUMENT, naming the key and field; the store is unchanged): empty key, empty
  // rewards, a reward outside [0, 1] or NaN, a negative step or policy_version, a group whose
  // bytes() exceed capacity_bytes; or the constructor's options failed Validate().
  // Cost: O(G + key length) plus O(log n) per group added or removed. Never blocks.
  absl::StatusOr<bool> Insert(ReplayGroup group);

  // Draws up to request.count eligible groups without replacement. Eligible: step < request.step,
  // policy_version >= request.policy_version - max_age_versions (when limited) and
  // replays < max_replays (when limited). kUniform: a uniformly random subset (partial
  // Fisher-Yates on a dots::Rng stream). kTargeted: see ReplayStrategy. Increments `replays` of
  // each returned group and returns copies (payload included) in FIFO order (oldest first).
  // Deterministic for a given store, request and options. Does not remove anything: call
  // EvictStale to drop groups that reached max_replays.
  // Cost: O(n) over the store plus the copied bytes; kTargeted adds an O(n) selection. Never
  // blocks.
  std::vector<ReplayGroup> Sample(const ReplaySampleRequest& request);

  // Removes groups with policy_version < current_version - max_age_versions (if limited) and groups
  // with replays >= max_replays (if limited). Returns how many were removed (also added to
  // evicted()). O(n + r log n) for r removed. Never blocks.
  int64_t EvictStale(int64_t current_version);

  // Evicts the oldest groups until at most `keep` remain (also added to evicted()); returns how
  // many were removed. The paper's buffer maintenance runs this after sampling a step's replay
  // and before the step's fresh groups arrive, with keep = C - delta * B, so that capacity C
  // bounds old plus fresh groups even when few fresh groups are informative. O(r log n).
  int64_t TrimOldest(int64_t keep);

  // Groups held. O(1).
  int64_t size() const { return static_cast<int64_t>(groups_.size()); }
  // Sum of ReplayGroup::bytes() over the groups held. O(1).
  int64_t bytes() const { return bytes_; }
  // Total groups removed by capacity (Insert, Restore), age or replays (EvictStale) since
  // construction. Counter for metrics; not persisted. O(1).
  int64_t evicted() const { return evicted_; }
  // Total Insert calls dropped for zero reward variance. Counter; not persisted. O(1).
  int64_t dropped_uninformative() const { return dropped_uninformative_; }
  // Total groups discarded because another group of the same key was newer (the stored one
  // replaced or removed, or the incoming one dropped). Counter; not persisted. O(1).
  int64_t superseded() const { return superseded_; }
  // Mean of request.step - group.step over the groups returned by the last Sample call, in steps;
  // 0 if it returned none (or before any call). For metrics. O(1).
  double last_sample_mean_age() const { return last_sample_mean_age_; }
  // O(1).
  const ReplayOptions& options() const { return options_; }

  // All groups in FIFO order (oldest first), for persistence and inspection. The pointers stay
  // valid until the next non-const call. O(n).
  std::vector<const ReplayGroup*> Groups() const;

  // Replaces the contents with `groups` (e.g. read back after a restart), keeping their replays and
  // sequence numbers; later Inserts get sequence numbers above the largest restored one. Then
  // evicts oldest-first to fit capacity (in case the options shrank; counted in evicted()).
  // Counters are left alone. Errors (INVALID_ARGUMENT naming the index and field; the store is
  // unchanged): any Insert error, a zero-variance group, a duplicate key, sequence numbers that are
  // negative or not strictly increasing, negative replays. O(n log n + total rewards).
  absl::Status Restore(std::vector<ReplayGroup> groups);

  // The lifetime counters and the next sequence number, so that a restored store continues
  // exactly where the saved one was. O(1).
  struct Counters {
    int64_t evicted = 0;
    int64_t dropped_uninformative = 0;
    int64_t superseded = 0;
    int64_t next_sequence = 0;
    double last_sample_mean_age = 0.0;
  };
  Counters counters() const {
    return {evicted_, dropped_uninformative_, superseded_, next_sequence_, last_sample_mean_age_};
  }
  // Sets the counters; the next sequence never goes below what the groups held need.
  void RestoreCounters(const Counters& counters);

 private:
  // Removes the group with this sequence from both indexes and the byte count. O(log n).
  void Erase(std::map<int64_t, ReplayGroup>::iterator it);
  // Evicts oldest-first until within capacity_groups and capacity_bytes. O(r log n).
  void EvictToCapacity();
  bool Eligible(const ReplayGroup& group, const ReplaySampleRequest& request) const;

  ReplayOptions options_;
  absl::Status options_status_;
  // FIFO: sequence -> group. begin() is the oldest.
  std::map<int64_t, ReplayGroup> groups_;
  // key -> sequence of the group holding it.
  absl::flat_hash_map<std::string, int64_t> sequence_by_key_;
  int64_t bytes_ = 0;
  int64_t next_sequence_ = 0;
  int64_t evicted_ = 0;
  int64_t dropped_uninformative_ = 0;
  int64_t superseded_ = 0;
  double last_sample_mean_age_ = 0.0;
};

}  // namespace dots

#endif  // DOTS_CORE_REPLAY_REPLAY_STORE_H_
