// dotsctl's placement (client/dotsctl/placement.h). Its agreement with a real HAProxy is checked
// by tests/python/test_cluster.py; here, the properties a rebalance relies on.
#include "client/dotsctl/placement.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dots::dotsctl {
namespace {

std::vector<std::string> RunIds(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("run-" + std::to_string(i));
  return ids;
}

TEST(PlacementTest, HashesFollowHaproxyDefinitions) {
  // sdbm: hash = c + (hash << 6) + (hash << 16) - hash, from 0.
  EXPECT_EQ(HaproxySdbm(""), 0u);
  EXPECT_EQ(HaproxySdbm("a"), 97u);
  EXPECT_EQ(HaproxySdbm("ab"), 98u + (97u << 6) + (97u << 16) - 97u);
  // full_hash ends with a multiplication by an odd constant: distinct inputs stay distinct.
  EXPECT_NE(HaproxyFullHash(1), HaproxyFullHash(2));
}

TEST(PlacementTest, EveryRunHasOneOwnerAndEveryReplicaGetsRuns) {
  for (int replicas = 1; replicas <= 8; ++replicas) {
    Placement placement(replicas);
    std::vector<int> counts(replicas, 0);
    for (const std::string& id : RunIds(4000)) {
      const int owner = placement.Owner(id);
      ASSERT_GE(owner, 0);
      ASSERT_LT(owner, replicas);
      EXPECT_EQ(placement.Owner(id), owner) << "deterministic";
      ++counts[owner];
    }
    for (int r = 0; r < replicas; ++r) {
      // 16 points per replica: shares vary, but none is starved (expected share 4000 / N).
      EXPECT_GT(counts[r], 4000 / replicas / 4) << replicas << " replicas, replica " << r;
    }
  }
  EXPECT_EQ(Placement(0).Owner("x"), -1);
}

TEST(PlacementTest, AddingAReplicaMovesRunsOnlyToIt) {
  // Consistent hashing: a run changes owner only when the new replica takes it, so a rebalance
  // after scaling up moves about 1/N of the runs and never between old replicas.
  for (int replicas = 1; replicas <= 7; ++replicas) {
    Placement before(replicas), after(replicas + 1);
    int moved = 0;
    const std::vector<std::string> ids = RunIds(4000);
    for (const std::string& id : ids) {
      const int a = before.Owner(id), b = after.Owner(id);
      if (a != b) {
        EXPECT_EQ(b, replicas) << id << " moved between old replicas";
        ++moved;
      }
    }
    EXPECT_GT(moved, 0);
    EXPECT_LT(moved, static_cast<int>(ids.size()) * 3 / (replicas + 1)) << replicas;
  }
}

}  // namespace
}  // namespace dots::dotsctl
