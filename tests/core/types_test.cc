#include "core/types.h"

#include <gtest/gtest.h>

namespace dots {
namespace {

TEST(FloatMatrixTest, RowMajorLayout) {
  FloatMatrix m(2, 3);
  m.row(1)[2] = 5.0f;
  EXPECT_EQ(m.data[5], 5.0f);
  EXPECT_EQ(m.data.size(), 6u);
}

}  // namespace
}  // namespace dots
