#include "core/run/round_plan.h"

#include <gtest/gtest.h>

namespace dots {
namespace {

// docs/paper.md §7.2 item 7: N = 10,240, B = 512, mu = 2, delta = 0.5, K = 256, G = 8.
TEST(RoundPlanTest, PaperBudgets) {
  EXPECT_EQ(FreshPerRound(0, 512, 2, 0.5), 1024);  // round 0: 2 x 512 fresh
  EXPECT_EQ(FreshPerRound(1, 512, 2, 0.5), 512);   // later: 2 x 256 fresh
  EXPECT_EQ(FreshPerRound(29, 512, 2, 0.5), 512);
  EXPECT_EQ(FreshPerStep(512, 0.5, true), 256);
  EXPECT_EQ(FreshPerStep(512, 0.5, false), 512);
  EXPECT_EQ(ReferenceRolloutsPerRound(256, 8), 2048);
  EXPECT_EQ(RoundsForSteps(60, 2), 30);
  EXPECT_EQ(RoundsForSteps(61, 2), 31);
  // A 10,240-question pool covers round 0's draw without replacement ten times over.
  EXPECT_LE(FreshPerRound(0, 512, 2, 0.5) * 10, 10240);
}

}  // namespace
}  // namespace dots
