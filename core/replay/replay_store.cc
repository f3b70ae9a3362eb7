#include "core/replay/replay_store.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/util/file_util.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

// Purpose tags mixed into the request seed, so the two strategies never share a random stream
// with each other or with other users of the same seed.
constexpr uint64_t kUniformStreamTag = 0x5252554e49464f52ULL;   // "RRUNIFOR"
constexpr uint64_t kTargetedStreamTag = 0x5252544152474554ULL;  // "RRTARGET"

// Keys are opaque strings; escape them so error messages stay printable.
std::string DescribeKey(const std::string& key) {
  std::string escaped = absl::CHexEscape(key.size() > 80 ? key.substr(0, 80) + "..." : key);
  return absl::StrCat("\"", escaped, "\"");
}

// True when the group yields a non-zero GRPO gradient: its rewards are not all equal.
bool Informative(const std::vector<float>& rewards) {
  return std::any_of(rewards.begin(), rewards.end(), [&](float r) { return r != rewards.front(); });
}

// Everything Insert and Restore require of a single group. `where` prefixes the message.
absl::Status ValidateGroup(const ReplayGroup& group, const ReplayOptions& options,
                           const std::string& where) {
  if (group.key.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ".key: empty"));
  if (group.rewards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".rewards: empty (want G >= 1 values)"));
  }
  for (size_t i = 0; i < group.rewards.size(); ++i) {
    const float r = group.rewards[i];
    if (!(r >= 0.0f && r <= 1.0f)) {  // Also rejects NaN.
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".rewards[", i, "]: ", r, " is outside [0, 1]"));
    }
  }
  if (group.step < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".step: ", group.step, " is negative"));
  }
  if (group.policy_version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".policy_version: ", group.policy_version, " is negative"));
  }
  if (group.bytes() > options.capacity_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", group.bytes(),
                     " bytes exceed replay.capacity_bytes = ", options.capacity_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReplayStrategy> ParseReplayStrategy(std::string_view name) {
  if (name == "uniform") return ReplayStrategy::kUniform;
  if (name == "targeted") return ReplayStrategy::kTargeted;
  return absl::InvalidArgumentError(absl::StrCat("replay.strategy: unknown strategy \"",
                                                 ToAbsl(name), "\"; expected uniform or targeted"));
}

std::string_view ReplayStrategyName(ReplayStrategy strategy) {
  switch (strategy) {
    case ReplayStrategy::kUniform:
      return "uniform";
    case ReplayStrategy::kTargeted:
      return "targeted";
  }
  return "unknown";
}

absl::Status ReplayOptions::Validate() const {
  if (capacity_groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("replay.capacity_groups: must be >= 1, got ", capacity_groups));
  }
  if (capacity_bytes < kReplayGroupOverheadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("replay.capacity_bytes: must be >= ", kReplayGroupOverheadBytes,
                     " (one empty group), got ", capacity_bytes));
  }
  if (strategy != ReplayStrategy::kUniform && strategy != ReplayStrategy::kTargeted) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replay.strategy: value ", static_cast<int>(strategy), " is not a ReplayStrategy"));
  }
  if (max_age_versions < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replay.max_age_versions: must be >= 0 (0 = no limit), got ", max_age_versions));
  }
  if (max_replays < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("replay.max_replays: must be >= 0 (0 = unlimited), got ", max_replays));
  }
  if (!std::isfinite(alpha)) {
    return absl::InvalidArgumentError(absl::StrCat("replay.alpha: must be finite, got ", alpha));
  }
  return absl::OkStatus();
}

ReplayStore::ReplayStore(ReplayOptions options)
    : options_(std::move(options)), options_status_(options_.Validate()) {}

void ReplayStore::Erase(std::map<int64_t, ReplayGroup>::iterator it) {
  bytes_ -= it->second.bytes();
  sequence_by_key_.erase(it->second.key);
  groups_.erase(it);
}

void ReplayStore::EvictToCapacity() {
  while (!groups_.empty() &&
         (size() > options_.capacity_groups || bytes_ > options_.capacity_bytes)) {
    Erase(groups_.begin());
    ++evicted_;
  }
}

absl::StatusOr<bool> ReplayStore::Insert(ReplayGroup group) {
  DOTS_RETURN_IF_ERROR(options_status_);
  DOTS_RETURN_IF_ERROR(
      ValidateGroup(group, options_, absl::StrCat("replay group ", DescribeKey(group.key))));

  // Dedup by key, keeping the newest step (ties: the later insert). Validation is complete, so
  // from here on every path leaves the store consistent.
  auto indexed = sequence_by_key_.find(group.key);
  if (indexed != sequence_by_key_.end()) {
    auto existing = groups_.find(indexed->second);
    if (existing->second.step > group.step) {
      ++superseded_;
      return false;
    }
    Erase(existing);
    ++superseded_;
  }
  if (!Informative(group.rewards)) {
    ++dropped_uninformative_;
    return false;
  }

  group.replays = 0;
  group.sequence = next_sequence_++;
  bytes_ += group.bytes();
  sequence_by_key_.emplace(group.key, group.sequence);
  const int64_t sequence = group.sequence;
  groups_.emplace_hint(groups_.end(), sequence, std::move(group));
  // The new group has the largest sequence and fits capacity_bytes on its own, so it survives.
  EvictToCapacity();
  return true;
}

bool ReplayStore::Eligible(const ReplayGroup& group, const ReplaySampleRequest& request) const {
  if (group.step >= request.step) return false;
  if (options_.max_age_versions > 0 &&
      group.policy_version < request.policy_version - options_.max_age_versions) {
    return false;
  }
  if (options_.max_replays > 0 && group.replays >= options_.max_replays) return false;
  return true;
}

std::vector<ReplayGroup> ReplayStore::Sample(const ReplaySampleRequest& request) {
  last_sample_mean_age_ = 0.0;
  if (!options_status_.ok() || request.count <= 0) return {};

  std::vector<ReplayGroup*> eligible;
  for (auto& [sequence, group] : groups_) {
    if (Eligible(group, request)) eligible.push_back(&group);
  }
  const size_t n = eligible.size();
  const size_t k = std::min(n, static_cast<size_t>(request.count));
  if (k == 0) return {};

  if (options_.strategy == ReplayStrategy::kUniform) {
    // Partial Fisher-Yates: the first k slots become a uniform random k-subset.
    Rng rng(MixSeed(request.seed, kUniformStreamTag));
    for (size_t i = 0; i < k; ++i) {
      std::swap(eligible[i], eligible[i + rng.Below(n - i)]);
    }
  } else {
    // Rank by (no usable p_hat, |p_hat - alpha|, random tie, sequence); the sequence makes the
    // order total, so the chosen set does not depend on nth_element's internals.
    Rng rng(MixSeed(request.seed, kTargetedStreamTag));
    using Rank = std::tuple<bool, double, uint64_t, int64_t>;
    std::vector<std::pair<Rank, ReplayGroup*>> ranked;
    ranked.reserve(n);
    for (ReplayGroup* group : eligible) {
      const int64_t q = group->question;
      const bool usable = q >= 0 && q < static_cast<int64_t>(request.p_hat.size()) &&
                          std::isfinite(request.p_hat[q]);
      const double distance =
          usable ? std::abs(static_cast<double>(request.p_hat[q]) - options_.alpha) : 0.0;
      ranked.push_back({Rank{!usable, distance, rng(), group->sequence}, group});
    }
    auto by_rank = [](const auto& a, const auto& b) { return a.first < b.first; };
    std::nth_element(ranked.begin(), ranked.begin() + (k - 1), ranked.end(), by_rank);
    for (size_t i = 0; i < k; ++i) eligible[i] = ranked[i].second;
  }

  eligible.resize(k);
  std::sort(eligible.begin(), eligible.end(),
            [](const ReplayGroup* a, const ReplayGroup* b) { return a->sequence < b->sequence; });
  std::vector<ReplayGroup> result;
  result.reserve(k);
  double age_sum = 0.0;
  for (ReplayGroup* group : eligible) {
    ++group->replays;
    age_sum += static_cast<double>(request.step - group->step);
    result.push_back(*group);
  }
  last_sample_mean_age_ = age_sum / static_cast<double>(k);
  return result;
}

int64_t ReplayStore::EvictStale(int64_t current_version) {
  int64_t removed = 0;
  for (auto it = groups_.begin(); it != groups_.end();) {
    const ReplayGroup& group = it->second;
    const bool too_old = options_.max_age_versions > 0 &&
                         group.policy_version < current_version - options_.max_age_versions;
    const bool used_up = options_.max_replays > 0 && group.replays >= options_.max_replays;
    auto next = std::next(it);
    if (too_old || used_up) {
      Erase(it);
      ++removed;
    }
    it = next;
  }
  evicted_ += removed;
  return removed;
}

int64_t ReplayStore::TrimOldest(int64_t keep) {
  int64_t removed = 0;
  while (static_cast<int64_t>(groups_.size()) > std::max<int64_t>(keep, 0)) {
    Erase(groups_.begin());
    ++removed;
  }
  evicted_ += removed;
  return removed;
}

std::vector<const ReplayGroup*> ReplayStore::Groups() const {
  std::vector<const ReplayGroup*> result;
  result.reserve(groups_.size());
  for (const auto& [sequence, group] : groups_) result.push_back(&group);
  return result;
}

absl::Status ReplayStore::Restore(std::vector<ReplayGroup> groups) {
  DOTS_RETURN_IF_ERROR(options_status_);
  std::map<int64_t, ReplayGroup> restored;
  absl::flat_hash_map<std::string, int64_t> sequence_by_key;
  sequence_by_key.reserve(groups.size());
  int64_t bytes = 0;
  int64_t previous_sequence = -1;
  for (size_t i = 0; i < groups.size(); ++i) {
    ReplayGroup& group = groups[i];
    const std::string where =
        absl::StrCat("replay Restore groups[", i, "] (key ", DescribeKey(group.key), ")");
    DOTS_RETURN_IF_ERROR(ValidateGroup(group, options_, where));
    if (!Informative(group.rewards)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".rewards: all equal (zero variance); the store never holds these"));
    }
    if (group.replays < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".replays: ", group.replays, " is negative"));
    }
    if (group.sequence <= previous_sequence) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".sequence: ", group.sequence, " is ",
                       group.sequence < 0 ? "negative" : "not above the previous group's ",
                       group.sequence < 0 ? "" : absl::StrCat(previous_sequence),
                       " (groups must be in FIFO order)"));
    }
    if (!sequence_by_key.emplace(group.key, group.sequence).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".key: duplicate"));
    }
    previous_sequence = group.sequence;
    bytes += group.bytes();
    restored.emplace_hint(restored.end(), group.sequence, std::move(group));
  }

  groups_ = std::move(restored);
  sequence_by_key_ = std::move(sequence_by_key);
  bytes_ = bytes;
  next_sequence_ = std::max(next_sequence_, previous_sequence + 1);
  EvictToCapacity();
  return absl::OkStatus();
}

void ReplayStore::RestoreCounters(const Counters& counters) {
  evicted_ = counters.evicted;
  dropped_uninformative_ = counters.dropped_uninformative;
  superseded_ = counters.superseded;
  next_sequence_ = std::max(next_sequence_, counters.next_sequence);
  last_sample_mean_age_ = counters.last_sample_mean_age;
}

}  // namespace dots
