#include "core/run/run_registry.h"

#include <gtest/gtest.h>

namespace dots {
namespace {

TEST(RunRegistryTest, CreateGetListDelete) {
  RunRegistry registry;
  RunConfig config;
  ASSERT_TRUE(registry.Create("b-run", config).ok());
  ASSERT_TRUE(registry.Create("a.run_1", config).ok());
  EXPECT_EQ(registry.Create("a.run_1", config).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Create("bad id", config).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Create("", config).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Create(std::string(129, 'x'), config).status().code(),
            absl::StatusCode::kInvalidArgument);
  RunConfig bad;
  bad.batch_size = 0;
  auto invalid = registry.Create("c", bad);
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(invalid.status().message().find("batch_size"), absl::string_view::npos);
  auto list = registry.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].first, "a.run_1");  // ordered by id
  EXPECT_TRUE(registry.Get("b-run").ok());
  EXPECT_EQ(registry.Get("nope").status().code(), absl::StatusCode::kNotFound);
  // A deleted run stays usable by a caller that still holds it.
  auto held = registry.Get("b-run");
  ASSERT_TRUE(registry.Delete("b-run").ok());
  EXPECT_EQ(registry.Delete("b-run").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(held->run->Stats().pool_size, 0);
  EXPECT_EQ(registry.size(), 1);
}

}  // namespace
}  // namespace dots
