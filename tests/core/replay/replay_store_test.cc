#include "core/replay/replay_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/util/random.h"

namespace dots {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// A G = 8 group that solves 3 of 8 (success rate 0.375): informative.
const std::vector<float> kMixed = {1, 0, 1, 1, 0, 0, 0, 0};

ReplayGroup MakeGroup(int64_t question, int64_t step, std::vector<float> rewards = kMixed,
                      int64_t policy_version = -1, std::string payload = "") {
  ReplayGroup group;
  group.key = absl::StrCat("q", question);
  group.question = question;
  group.step = step;
  group.policy_version = policy_version >= 0 ? policy_version : step;
  group.rewards = std::move(rewards);
  group.payload = payload.empty() ? absl::StrCat("payload of q", question, " at step ", step)
                                  : std::move(payload);
  return group;
}

ReplayOptions Options(int64_t capacity_groups, ReplayStrategy strategy = ReplayStrategy::kUniform) {
  ReplayOptions options;
  options.capacity_groups = capacity_groups;
  options.strategy = strategy;
  return options;
}

ReplaySampleRequest Request(int64_t step, int64_t count, uint64_t seed = 1,
                            absl::Span<const float> p_hat = {}) {
  ReplaySampleRequest request;
  request.step = step;
  request.policy_version = step;
  request.count = count;
  request.p_hat = p_hat;
  request.seed = seed;
  return request;
}

bool InsertOk(ReplayStore& store, ReplayGroup group) {
  absl::StatusOr<bool> kept = store.Insert(std::move(group));
  EXPECT_TRUE(kept.ok()) << kept.status();
  return kept.ok() && *kept;
}

std::vector<int64_t> Questions(const std::vector<ReplayGroup>& groups) {
  std::vector<int64_t> out;
  for (const ReplayGroup& g : groups) out.push_back(g.question);
  return out;
}

std::vector<int64_t> StoredQuestions(const ReplayStore& store) {
  std::vector<int64_t> out;
  for (const ReplayGroup* g : store.Groups()) out.push_back(g->question);
  return out;
}

// A field-by-field copy of the contents, for before/after comparisons.
struct Snapshot {
  std::vector<std::tuple<std::string, int64_t, int64_t, int64_t, std::vector<float>, std::string,
                         int64_t, int64_t>>
      groups;
  int64_t size, bytes, evicted, dropped, superseded;
  bool operator==(const Snapshot&) const = default;
};

Snapshot Snap(const ReplayStore& store) {
  Snapshot s;
  for (const ReplayGroup* g : store.Groups()) {
    s.groups.emplace_back(g->key, g->question, g->step, g->policy_version, g->rewards, g->payload,
                          g->replays, g->sequence);
  }
  s.size = store.size();
  s.bytes = store.bytes();
  s.evicted = store.evicted();
  s.dropped = store.dropped_uninformative();
  s.superseded = store.superseded();
  return s;
}

// --- The paper's buffer cases (docs/paper.md §7.2 item 8) ---------------------------------------

TEST(ReplayStoreTest, DedupKeepsNewestGroupOfEachQuestion) {
  ReplayStore store(Options(512));
  EXPECT_TRUE(InsertOk(store, MakeGroup(5, 1)));
  EXPECT_TRUE(InsertOk(store, MakeGroup(7, 1)));
  EXPECT_TRUE(InsertOk(store, MakeGroup(7, 2, {0, 0, 0, 0, 0, 0, 0, 1})));
  EXPECT_TRUE(InsertOk(store, MakeGroup(9, 2)));

  // FIFO order: the re-inserted 7 moved behind 5 and ahead of 9.
  EXPECT_THAT(StoredQuestions(store), ElementsAre(5, 7, 9));
  EXPECT_EQ(store.size(), 3);
  EXPECT_EQ(store.superseded(), 1);
  std::vector<ReplayGroup> all = store.Sample(Request(3, 10));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1].question, 7);
  EXPECT_EQ(all[1].step, 2);
  EXPECT_EQ(all[1].payload, "payload of q7 at step 2");
  EXPECT_THAT(all[1].rewards, ElementsAre(0, 0, 0, 0, 0, 0, 0, 1));

  // A late report of an older step does not displace the newer group.
  absl::StatusOr<bool> kept = store.Insert(MakeGroup(7, 1));
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(*kept);
  EXPECT_EQ(store.size(), 3);
  EXPECT_EQ(store.Groups()[1]->step, 2);
  EXPECT_EQ(store.superseded(), 2);
}

TEST(ReplayStoreTest, SameStepReinsertReplacesAndMovesToTail) {
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 4, kMixed, 4, "first")));
  ASSERT_TRUE(InsertOk(store, MakeGroup(2, 4)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 4, kMixed, 4, "second")));
  EXPECT_THAT(StoredQuestions(store), ElementsAre(2, 1));
  EXPECT_EQ(store.Groups()[1]->payload, "second");
  EXPECT_GT(store.Groups()[1]->sequence, store.Groups()[0]->sequence);
}

TEST(ReplayStoreTest, UninformativeGroupsAreNeverStoredOrReturned) {
  ReplayStore store(Options(512));
  const std::vector<std::vector<float>> flat = {
      {1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 0, 0, 0, 0, 0}, {0.5f, 0.5f, 0.5f, 0.5f}, {1}};
  for (size_t i = 0; i < flat.size(); ++i) {
    absl::StatusOr<bool> kept = store.Insert(MakeGroup(100 + i, 1, flat[i]));
    ASSERT_TRUE(kept.ok()) << kept.status();
    EXPECT_FALSE(*kept) << "rewards #" << i;
  }
  EXPECT_EQ(store.size(), 0);
  EXPECT_EQ(store.bytes(), 0);
  EXPECT_EQ(store.dropped_uninformative(), 4);

  // Among informative neighbours, the flat ones never come back, whatever the seed.
  for (int64_t q = 0; q < 8; ++q) ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
  EXPECT_TRUE(InsertOk(store, MakeGroup(50, 1, {0, 0, 0, 0, 0, 0, 0, 1})));  // One success counts.
  EXPECT_TRUE(InsertOk(store, MakeGroup(51, 1, {1, 1, 1, 1, 1, 1, 1, 0})));  // One failure too.
  EXPECT_FALSE(*store.Insert(MakeGroup(100, 1, flat[0])));
  EXPECT_FALSE(*store.Insert(MakeGroup(101, 1, flat[1])));
  for (uint64_t seed = 0; seed < 200; ++seed) {
    for (const ReplayGroup& g : store.Sample(Request(2, 5, seed))) {
      EXPECT_LT(g.question, 100);
      EXPECT_NE(g.rewards, flat[0]);
      EXPECT_NE(g.rewards, flat[1]);
    }
  }
  EXPECT_EQ(store.size(), 10);
}

TEST(ReplayStoreTest, NewerUninformativeGroupRemovesOlderGroupOfSameQuestion) {
  // The released code dedups (keep newest) before filtering, so a question that became solved
  // leaves the buffer.
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, MakeGroup(3, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(4, 1)));
  absl::StatusOr<bool> kept = store.Insert(MakeGroup(3, 2, {1, 1, 1, 1, 1, 1, 1, 1}));
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(*kept);
  EXPECT_THAT(StoredQuestions(store), ElementsAre(4));
  EXPECT_EQ(store.bytes(), MakeGroup(4, 1).bytes());
}

// C = 256, delta * B = 256 informative fresh groups per step: the replay pool of step t is exactly
// the fresh batch of step t - 1 (each group replayed once, at age 1).
TEST(ReplayStoreTest, Capacity256ReplaysOnlyThePreviousStep) {
  constexpr int64_t kFresh = 256;
  ReplayStore store(Options(256));
  for (int64_t step = 1; step <= 6; ++step) {
    std::vector<ReplayGroup> replay = store.Sample(Request(step, kFresh, 1000 + step));
    if (step == 1) {
      EXPECT_TRUE(replay.empty());
    } else {
      ASSERT_EQ(replay.size(), static_cast<size_t>(kFresh)) << "step " << step;
      std::set<int64_t> distinct;
      for (const ReplayGroup& g : replay) {
        EXPECT_EQ(g.step, step - 1);
        distinct.insert(g.question);
      }
      EXPECT_EQ(distinct.size(), static_cast<size_t>(kFresh));
      EXPECT_DOUBLE_EQ(store.last_sample_mean_age(), 1.0);
    }
    // Questions overlap across steps (half of them repeat), as with real DOTS selection.
    for (int64_t i = 0; i < kFresh; ++i) {
      const int64_t question = step * 128 + i;
      ASSERT_TRUE(InsertOk(store, MakeGroup(question, step)));
    }
    EXPECT_EQ(store.size(), kFresh);
    for (const ReplayGroup* g : store.Groups()) EXPECT_EQ(g->step, step);
  }
}

// C = 512: after inserting step t's 256 fresh groups the store holds them plus at most 256 older
// groups; the pool of step t + 1 spans steps t and t - 1.
TEST(ReplayStoreTest, Capacity512KeepsAtMost256OldGroupsPlusFresh) {
  constexpr int64_t kFresh = 256;
  ReplayStore store(Options(512));
  for (int64_t step = 1; step <= 6; ++step) {
    std::vector<ReplayGroup> replay = store.Sample(Request(step, kFresh, 2000 + step));
    if (step >= 3) {
      ASSERT_EQ(replay.size(), static_cast<size_t>(kFresh));
      std::map<int64_t, int> by_step;
      for (const ReplayGroup& g : replay) ++by_step[g.step];
      // Uniform over 256 + 256 candidates: each step gets 128 expected (sd ~5.7 for the
      // hypergeometric); both must be present and nothing older.
      EXPECT_EQ(by_step.size(), 2u);
      EXPECT_GT(by_step[step - 1], 100);
      EXPECT_GT(by_step[step - 2], 100);
    }
    for (int64_t i = 0; i < kFresh; ++i) {
      ASSERT_TRUE(InsertOk(store, MakeGroup(step * 1000 + i, step)));
    }
    int64_t fresh = 0, old = 0;
    for (const ReplayGroup* g : store.Groups()) (g->step == step ? fresh : old) += 1;
    EXPECT_EQ(fresh, kFresh);
    EXPECT_EQ(old, step == 1 ? 0 : 256);
    EXPECT_LE(store.size(), 512);
  }
  EXPECT_EQ(store.evicted(), 4 * 256);  // Steps 3..6 each pushed out one older batch.
}

TEST(ReplayStoreTest, FewerEligibleThanAskedReturnsFewer) {
  ReplayStore store(Options(512));
  for (int64_t q : {11, 12, 13}) ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(14, 2)));  // Fresh at the served step: not eligible.
  std::vector<ReplayGroup> got = store.Sample(Request(2, 256));
  EXPECT_THAT(Questions(got), ElementsAre(11, 12, 13));
  EXPECT_TRUE(store.Sample(Request(2, 0)).empty());
  EXPECT_TRUE(store.Sample(Request(2, -5)).empty());
  EXPECT_EQ(store.last_sample_mean_age(), 0.0);
}

TEST(ReplayStoreTest, FreshGroupsAreNeverReturnedInTheirOwnStep) {
  ReplayStore store(Options(512));
  for (int64_t q = 0; q < 20; ++q) ASSERT_TRUE(InsertOk(store, MakeGroup(q, q < 10 ? 4 : 5)));
  for (uint64_t seed = 0; seed < 100; ++seed) {
    std::vector<ReplayGroup> got = store.Sample(Request(5, 8, seed));
    ASSERT_EQ(got.size(), 8u);
    for (const ReplayGroup& g : got) EXPECT_EQ(g.step, 4);
  }
  EXPECT_TRUE(store.Sample(Request(4, 20)).empty());
  EXPECT_EQ(store.Sample(Request(6, 20)).size(), 20u);
}

// --- Limits -------------------------------------------------------------------------------------

TEST(ReplayStoreTest, BytesFollowTheDocumentedFormula) {
  ReplayGroup g = MakeGroup(42, 1, kMixed, 1, std::string(1000, 'x'));
  EXPECT_EQ(g.bytes(), 3 /* "q42" */ + 1000 + 4 * 8 + kReplayGroupOverheadBytes);
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, g));
  ASSERT_TRUE(InsertOk(store, MakeGroup(7, 1, {0, 1}, 1, "ab")));
  EXPECT_EQ(store.bytes(), g.bytes() + (2 + 2 + 8 + kReplayGroupOverheadBytes));
}

TEST(ReplayStoreTest, CapacityBytesEvictsOldestFirst) {
  const int64_t one = MakeGroup(1, 1, kMixed, 1, std::string(1000, 'x')).bytes();
  ReplayOptions options = Options(512);
  options.capacity_bytes = 3 * one + 10;
  ReplayStore store(options);
  for (int64_t q = 1; q <= 5; ++q) {
    ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1, kMixed, 1, std::string(1000, 'x'))));
    EXPECT_LE(store.bytes(), options.capacity_bytes);
  }
  EXPECT_THAT(StoredQuestions(store), ElementsAre(3, 4, 5));
  EXPECT_EQ(store.bytes(), 3 * one);
  EXPECT_EQ(store.evicted(), 2);

  // A group twice as large pushes out the two oldest, never itself.
  ASSERT_TRUE(InsertOk(store, MakeGroup(6, 1, kMixed, 1, std::string(2000 + one - 1000, 'y'))));
  EXPECT_THAT(StoredQuestions(store), ElementsAre(5, 6));
  EXPECT_EQ(store.evicted(), 4);

  // A group that could only fit alone is accepted and empties the store.
  const int64_t alone_payload = options.capacity_bytes - kReplayGroupOverheadBytes - 2 - 32;
  ASSERT_TRUE(InsertOk(store, MakeGroup(9, 1, kMixed, 1, std::string(alone_payload, 'z'))));
  EXPECT_THAT(StoredQuestions(store), ElementsAre(9));
  EXPECT_EQ(store.bytes(), options.capacity_bytes);
}

TEST(ReplayStoreTest, CapacityGroupsIsFifo) {
  ReplayStore store(Options(3));
  for (int64_t q : {1, 2, 3}) ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 2)));  // Re-insert moves 1 to the tail.
  ASSERT_TRUE(InsertOk(store, MakeGroup(4, 2)));  // Evicts 2, the oldest now.
  EXPECT_THAT(StoredQuestions(store), ElementsAre(3, 1, 4));
  EXPECT_EQ(store.evicted(), 1);
}

TEST(ReplayStoreTest, MaxAgeVersionsHidesAndEvictsOldGroups) {
  ReplayOptions options = Options(512);
  options.max_age_versions = 2;
  ReplayStore store(options);
  for (int64_t v = 0; v <= 5; ++v) ASSERT_TRUE(InsertOk(store, MakeGroup(v, 1, kMixed, v)));
  ReplaySampleRequest request = Request(2, 100);
  request.policy_version = 5;  // Versions >= 3 allowed.
  EXPECT_THAT(Questions(store.Sample(request)), ElementsAre(3, 4, 5));
  request.policy_version = 2;  // Everything allowed (0 >= 2 - 2).
  EXPECT_EQ(store.Sample(request).size(), 6u);

  EXPECT_EQ(store.EvictStale(5), 3);
  EXPECT_THAT(StoredQuestions(store), ElementsAre(3, 4, 5));
  EXPECT_EQ(store.evicted(), 3);
  EXPECT_EQ(store.bytes(), 3 * MakeGroup(3, 1).bytes());
  EXPECT_EQ(store.EvictStale(5), 0);

  // Unlimited age: nothing is ever too old.
  ReplayStore unlimited(Options(512));
  ASSERT_TRUE(InsertOk(unlimited, MakeGroup(1, 1, kMixed, 0)));
  request.policy_version = 1000000;
  EXPECT_EQ(unlimited.Sample(request).size(), 1u);
  EXPECT_EQ(unlimited.EvictStale(1000000), 0);
}

TEST(ReplayStoreTest, MaxReplaysCapsHowOftenAGroupIsReturned) {
  ReplayOptions options = Options(512);
  options.max_replays = 2;
  ReplayStore store(options);
  for (int64_t q = 0; q < 6; ++q) ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
  std::map<int64_t, int> returned;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    for (const ReplayGroup& g : store.Sample(Request(2, 4, seed))) {
      EXPECT_EQ(g.replays, ++returned[g.question]);  // The copy carries the updated count.
    }
  }
  EXPECT_EQ(returned.size(), 6u);
  for (const auto& [q, n] : returned) EXPECT_EQ(n, 2) << "question " << q;
  EXPECT_TRUE(store.Sample(Request(2, 4)).empty());
  EXPECT_EQ(store.size(), 6);  // Sample never removes.
  EXPECT_EQ(store.EvictStale(0), 6);
  EXPECT_EQ(store.size(), 0);
  EXPECT_EQ(store.bytes(), 0);
}

// --- Payload, statistics, determinism -----------------------------------------------------------

TEST(ReplayStoreTest, PayloadAndRewardsComeBackByteIdentical) {
  std::string payload("\0head\0\0", 7);
  Rng rng(7);
  for (int i = 0; i < 65536; ++i) payload.push_back(static_cast<char>(rng() & 0xff));
  payload += std::string("\0", 1);
  const std::vector<float> rewards = {0.25f, 1.0f, 0.0f, 0.1f, 0.999f, 0.0f, 1.0f, 0.5f};
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 1, rewards, 1, payload)));
  std::vector<ReplayGroup> got = store.Sample(Request(2, 1));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload.size(), payload.size());
  EXPECT_TRUE(got[0].payload == payload);
  EXPECT_EQ(got[0].rewards, rewards);
  EXPECT_TRUE(store.Groups()[0]->payload == payload);
  EXPECT_EQ(store.bytes(),
            static_cast<int64_t>(2 + payload.size() + 32) + kReplayGroupOverheadBytes);
}

TEST(ReplayStoreTest, UniformSamplingIsUnbiased) {
  constexpr int kGroups = 20, kCount = 5, kSeeds = 20000;
  ReplayStore store(Options(512));
  for (int q = 0; q < kGroups; ++q) {
    ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
    ASSERT_TRUE(InsertOk(store, MakeGroup(1000 + q, 3)));  // Interleaved, never eligible.
  }
  std::vector<int> hits(kGroups, 0);
  int pair_01 = 0, pair_first_last = 0;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    std::vector<ReplayGroup> got = store.Sample(Request(2, kCount, seed));
    ASSERT_EQ(got.size(), static_cast<size_t>(kCount));
    std::set<int64_t> drawn;
    for (const ReplayGroup& g : got) {
      ASSERT_LT(g.question, kGroups);
      drawn.insert(g.question);
      ++hits[g.question];
    }
    ASSERT_EQ(drawn.size(), static_cast<size_t>(kCount));  // Without replacement.
    pair_01 += drawn.count(0) && drawn.count(1);
    pair_first_last += drawn.count(0) && drawn.count(kGroups - 1);
  }
  // Each group: expected kSeeds * kCount / kGroups = 5000 hits. Chi-square with 19 degrees of
  // freedom (the multivariate-hypergeometric variance is smaller, so this is conservative); the
  // 0.999 quantile is 43.8.
  const double expected = static_cast<double>(kSeeds) * kCount / kGroups;
  double chi2 = 0;
  for (int h : hits) chi2 += (h - expected) * (h - expected) / expected;
  EXPECT_LT(chi2, 43.8);
  // Pair inclusion: k (k - 1) / (n (n - 1)) = 1/19 of draws, 1052.6 expected, sd ~31.
  const double pair_expected = kSeeds * (kCount * (kCount - 1.0)) / (kGroups * (kGroups - 1.0));
  EXPECT_NEAR(pair_01, pair_expected, 5 * 31.0);
  EXPECT_NEAR(pair_first_last, pair_expected, 5 * 31.0);
}

TEST(ReplayStoreTest, TargetedPicksTheGroupsClosestToAlpha) {
  // Values exact in binary so the distances tie exactly where intended.
  const std::vector<float> p_hat = {0.1f, 0.375f,  0.9f, 0.625f, 0.5f,
                                    0.2f, 0.5625f, 0.0f, 1.0f,   0.3f};
  ReplayStore store(Options(512, ReplayStrategy::kTargeted));
  for (int64_t q = 0; q < 10; ++q) ASSERT_TRUE(InsertOk(store, MakeGroup(q, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(4, 2)));  // p_hat = alpha, but fresh at step 2.
  int picked_1 = 0, picked_3 = 0;
  for (uint64_t seed = 0; seed < 1000; ++seed) {
    // q4 is fresh, so the closest eligible are q6 (0.0625), then the tie q1 / q3 (0.125).
    std::vector<ReplayGroup> got = store.Sample(Request(2, 2, seed, p_hat));
    ASSERT_EQ(got.size(), 2u);
    const std::vector<int64_t> questions = Questions(got);
    const std::set<int64_t> chosen(questions.begin(), questions.end());
    ASSERT_TRUE(chosen.count(6));
    ASSERT_TRUE(chosen.count(1) || chosen.count(3));
    picked_1 += chosen.count(1);
    picked_3 += chosen.count(3);
  }
  // Exact ties are broken uniformly: binomial(1000, 1/2), sd 15.8.
  EXPECT_EQ(picked_1 + picked_3, 1000);
  EXPECT_NEAR(picked_1, 500, 80);

  // With the step-2 group of q4 eligible (step 3), it comes first; then q6, q1/q3, q9 (0.2 away).
  EXPECT_THAT(Questions(store.Sample(Request(3, 5, 9, p_hat))),
              UnorderedElementsAre(1, 3, 6, 9, 4));

  ReplayOptions low = Options(512, ReplayStrategy::kTargeted);
  low.alpha = 0.2;
  ReplayStore low_store(low);
  for (int64_t q = 0; q < 10; ++q) ASSERT_TRUE(InsertOk(low_store, MakeGroup(q, 1)));
  EXPECT_THAT(Questions(low_store.Sample(Request(2, 3, 5, p_hat))),
              UnorderedElementsAre(5, 9, 0));  // 0.2, then 0.3 and 0.1; the next is 0.375.
}

TEST(ReplayStoreTest, TargetedRanksGroupsWithoutEstimateLast) {
  std::vector<float> p_hat = {0.9f, 0.5f, std::numeric_limits<float>::quiet_NaN()};
  ReplayStore store(Options(512, ReplayStrategy::kTargeted));
  ReplayGroup unknown = MakeGroup(-1, 1);  // question -1: no estimate.
  ASSERT_TRUE(InsertOk(store, unknown));
  ASSERT_TRUE(InsertOk(store, MakeGroup(2, 1)));   // NaN estimate.
  ASSERT_TRUE(InsertOk(store, MakeGroup(77, 1)));  // Outside p_hat.
  ASSERT_TRUE(InsertOk(store, MakeGroup(0, 1)));   // 0.4 away.
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 1)));   // Exactly alpha.
  for (uint64_t seed = 0; seed < 50; ++seed) {
    EXPECT_THAT(Questions(store.Sample(Request(2, 1, seed, p_hat))), ElementsAre(1));
    EXPECT_THAT(Questions(store.Sample(Request(2, 2, seed, p_hat))), ElementsAre(0, 1));
  }
  std::set<int64_t> third;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    for (int64_t q : Questions(store.Sample(Request(2, 3, seed, p_hat)))) {
      if (q != 0 && q != 1) third.insert(q);
    }
  }
  EXPECT_THAT(third, UnorderedElementsAre(-1, 2, 77));
  // An empty p_hat degrades to uniform: all five are reachable as the single pick.
  std::set<int64_t> single;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    for (int64_t q : Questions(store.Sample(Request(2, 1, seed)))) single.insert(q);
  }
  EXPECT_EQ(single.size(), 5u);
}

TEST(ReplayStoreTest, SamplingIsDeterministicPerSeedAndInFifoOrder) {
  for (ReplayStrategy strategy : {ReplayStrategy::kUniform, ReplayStrategy::kTargeted}) {
    std::vector<float> p_hat(64, 0.5f);  // All tied: targeted is decided by the random ties.
    ReplayStore a(Options(512, strategy)), b(Options(512, strategy));
    for (int64_t q = 0; q < 64; ++q) {
      ASSERT_TRUE(InsertOk(a, MakeGroup(q, 1)));
      ASSERT_TRUE(InsertOk(b, MakeGroup(q, 1)));
    }
    std::set<std::vector<int64_t>> distinct;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      std::vector<int64_t> from_a = Questions(a.Sample(Request(2, 10, seed, p_hat)));
      std::vector<int64_t> from_b = Questions(b.Sample(Request(2, 10, seed, p_hat)));
      EXPECT_EQ(from_a, from_b) << ReplayStrategyName(strategy) << " seed " << seed;
      EXPECT_TRUE(std::is_sorted(from_a.begin(), from_a.end()));  // q order == FIFO order here.
      distinct.insert(from_a);
    }
    EXPECT_EQ(distinct.size(), 10u) << ReplayStrategyName(strategy);
  }
}

TEST(ReplayStoreTest, LastSampleMeanAgeIsInSteps) {
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(2, 3)));
  EXPECT_EQ(store.Sample(Request(5, 2)).size(), 2u);
  EXPECT_DOUBLE_EQ(store.last_sample_mean_age(), 3.0);  // (4 + 2) / 2.
  EXPECT_TRUE(store.Sample(Request(1, 2)).empty());
  EXPECT_EQ(store.last_sample_mean_age(), 0.0);
}

// --- Restore ------------------------------------------------------------------------------------

TEST(ReplayStoreTest, RestoreRoundTripPreservesEverything) {
  ReplayOptions options = Options(8);
  options.max_replays = 3;
  ReplayStore original(options);
  for (int64_t q = 0; q < 12; ++q) {
    ASSERT_TRUE(InsertOk(original, MakeGroup(q % 10, q, kMixed, q / 2, std::string("\0bin", 4))));
  }
  for (uint64_t seed = 0; seed < 3; ++seed) original.Sample(Request(20, 5, seed));
  std::vector<ReplayGroup> saved;
  for (const ReplayGroup* g : original.Groups()) saved.push_back(*g);
  ASSERT_EQ(saved.size(), 8u);

  ReplayStore restored(options);
  ASSERT_TRUE(restored.Restore(saved).ok());
  Snapshot a = Snap(original), b = Snap(restored);
  EXPECT_EQ(a.groups, b.groups);
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.bytes, b.bytes);
  int64_t replayed = 0;
  for (const ReplayGroup* g : restored.Groups()) replayed += g->replays;
  EXPECT_EQ(replayed, 15);  // The replay counts survived (3 draws of 5).

  // Both stores now behave identically: same draws, same evictions, same new sequence numbers.
  for (uint64_t seed = 10; seed < 14; ++seed) {
    EXPECT_EQ(Questions(original.Sample(Request(21, 4, seed))),
              Questions(restored.Sample(Request(21, 4, seed))));
  }
  ASSERT_TRUE(InsertOk(original, MakeGroup(99, 21)));
  ASSERT_TRUE(InsertOk(restored, MakeGroup(99, 21)));
  EXPECT_EQ(Snap(original).groups, Snap(restored).groups);
  EXPECT_GT(restored.Groups().back()->sequence, saved.back().sequence);
  EXPECT_EQ(original.EvictStale(0), restored.EvictStale(0));
  EXPECT_EQ(Snap(original).groups, Snap(restored).groups);
}

TEST(ReplayStoreTest, RestoreEvictsToASmallerCapacity) {
  std::vector<ReplayGroup> groups;
  for (int64_t q = 0; q < 5; ++q) {
    groups.push_back(MakeGroup(q, 1));
    groups.back().sequence = 10 * q + 3;
  }
  ReplayStore store(Options(2));
  ASSERT_TRUE(store.Restore(groups).ok());
  EXPECT_THAT(StoredQuestions(store), ElementsAre(3, 4));
  EXPECT_EQ(store.evicted(), 3);
}

TEST(ReplayStoreTest, RestoreRejectsBadInputAndChangesNothing) {
  ReplayStore store(Options(512));
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(2, 1)));
  const Snapshot before = Snap(store);

  auto good = [] {
    std::vector<ReplayGroup> groups = {MakeGroup(5, 1), MakeGroup(6, 1), MakeGroup(7, 1)};
    for (int i = 0; i < 3; ++i) groups[i].sequence = i;
    return groups;
  };
  struct Case {
    const char* name;
    void (*mutate)(std::vector<ReplayGroup>&);
    const char* message;
  };
  const Case cases[] = {
      {"duplicate key", [](auto& g) { g[2].key = g[0].key; }, "groups[2] (key \"q5\").key: dup"},
      {"sequence order", [](auto& g) { g[2].sequence = 1; }, "groups[2] (key \"q7\").sequence"},
      {"negative sequence", [](auto& g) { g[0].sequence = -1; }, "sequence: -1 is negative"},
      {"flat rewards", [](auto& g) { g[1].rewards.assign(8, 1.0f); }, "groups[1]"},
      {"negative replays", [](auto& g) { g[1].replays = -2; }, ".replays: -2"},
      {"NaN reward", [](auto& g) { g[2].rewards[3] = std::numeric_limits<float>::quiet_NaN(); },
       "groups[2] (key \"q7\").rewards[3]"},
      {"empty key", [](auto& g) { g[0].key.clear(); }, "groups[0] (key \"\").key: empty"},
  };
  for (const Case& c : cases) {
    std::vector<ReplayGroup> groups = good();
    c.mutate(groups);
    absl::Status status = store.Restore(std::move(groups));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.name;
    EXPECT_TRUE(Snap(store) == before) << c.name;
  }
  ASSERT_TRUE(store.Restore(good()).ok());
  EXPECT_THAT(StoredQuestions(store), ElementsAre(5, 6, 7));
}

// --- Errors -------------------------------------------------------------------------------------

TEST(ReplayStoreTest, InsertErrorsChangeNothing) {
  ReplayOptions options = Options(512);
  options.capacity_bytes = 4096;
  ReplayStore store(options);
  ASSERT_TRUE(InsertOk(store, MakeGroup(1, 1)));
  ASSERT_TRUE(InsertOk(store, MakeGroup(2, 1)));
  const Snapshot before = Snap(store);

  struct Case {
    ReplayGroup group;
    const char* message;
  };
  std::vector<Case> cases;
  cases.push_back({MakeGroup(1, 5), ""});
  cases.back().group.key.clear();
  cases.back().message = "replay group \"\".key: empty";
  cases.push_back({MakeGroup(1, 5, {}), "replay group \"q1\".rewards: empty"});
  cases.push_back(
      {MakeGroup(1, 5, {0, 1, 1.5f}), "replay group \"q1\".rewards[2]: 1.5 is outside"});
  cases.push_back({MakeGroup(1, 5, {-0.25f, 1}), ".rewards[0]: -0.25 is outside [0, 1]"});
  cases.push_back({MakeGroup(1, 5, {0, std::numeric_limits<float>::quiet_NaN()}), ".rewards[1]"});
  cases.push_back({MakeGroup(1, 5, {0, std::numeric_limits<float>::infinity()}), ".rewards[1]"});
  cases.push_back({MakeGroup(1, 5, kMixed, 5, std::string(4096, 'x')), "replay.capacity_bytes"});
  cases.push_back({MakeGroup(1, 5), ".step: -3 is negative"});
  cases.back().group.step = -3;
  cases.push_back({MakeGroup(1, 5), ".policy_version: -1 is negative"});
  cases.back().group.policy_version = -1;
  for (Case& c : cases) {
    absl::StatusOr<bool> kept = store.Insert(std::move(c.group));
    EXPECT_EQ(kept.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(kept.status().message()), HasSubstr(c.message));
    // The existing q1 (same key, older step) must survive a rejected newer group.
    EXPECT_TRUE(Snap(store) == before) << c.message;
  }
}

TEST(ReplayStoreTest, InvalidOptionsAreRejected) {
  struct Case {
    void (*mutate)(ReplayOptions&);
    const char* field;
  };
  const Case cases[] = {
      {[](ReplayOptions& o) { o.capacity_groups = 0; }, "replay.capacity_groups: "},
      {[](ReplayOptions& o) { o.capacity_bytes = kReplayGroupOverheadBytes - 1; },
       "replay.capacity_bytes: "},
      {[](ReplayOptions& o) { o.strategy = static_cast<ReplayStrategy>(7); }, "replay.strategy: "},
      {[](ReplayOptions& o) { o.max_age_versions = -1; }, "replay.max_age_versions: "},
      {[](ReplayOptions& o) { o.max_replays = -1; }, "replay.max_replays: "},
      {[](ReplayOptions& o) { o.alpha = std::nan(""); }, "replay.alpha: "},
  };
  EXPECT_TRUE(ReplayOptions().Validate().ok());
  for (const Case& c : cases) {
    ReplayOptions options;
    c.mutate(options);
    absl::Status status = options.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
    // A store built from them refuses to hold anything.
    ReplayStore store(options);
    EXPECT_EQ(store.Insert(MakeGroup(1, 1)).status(), status);
    EXPECT_EQ(store.Restore({MakeGroup(1, 1)}), status);
    EXPECT_EQ(store.size(), 0);
    EXPECT_TRUE(store.Sample(Request(2, 1)).empty());
  }
}

TEST(ReplayStoreTest, StrategyNamesRoundTrip) {
  for (ReplayStrategy s : {ReplayStrategy::kUniform, ReplayStrategy::kTargeted}) {
    absl::StatusOr<ReplayStrategy> parsed = ParseReplayStrategy(ReplayStrategyName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(ReplayStrategyName(ReplayStrategy::kTargeted), "targeted");
  absl::StatusOr<ReplayStrategy> bad = ParseReplayStrategy("Uniform");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"Uniform\""));
}

}  // namespace
}  // namespace dots
