// The routing header `x-dots-run`: a call that names a run may carry it as metadata (the clients
// always do; a router hashes it to pick a replica); when present it must equal the request's
// run id, so that a misrouted call never acts on another run.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/convert.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

using ::testing::HasSubstr;

class RoutingTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    CreateRunWithPool("a", 16);
    CreateRunWithPool("b", 16);
  }

  // A context carrying `routes` as x-dots-run headers (none for an empty list).
  static void AddRoutes(grpc::ClientContext* context, const std::vector<std::string>& routes) {
    context->set_deadline(DeadlineIn(absl::Seconds(10)));
    for (const std::string& route : routes) context->AddMetadata(kRoutingHeader, route);
  }

  grpc::Status Stats(const std::string& run_id, const std::vector<std::string>& routes,
                     pb::RunStats* stats) {
    grpc::ClientContext context;
    AddRoutes(&context, routes);
    pb::GetRunStatsRequest request;
    request.set_run_id(run_id);
    return stub_->GetRunStats(&context, request, stats);
  }

  std::vector<std::string> RunIds() {
    grpc::ClientContext context;
    AddRoutes(&context, {});
    pb::ListRunsResponse response;
    EXPECT_TRUE(stub_->ListRuns(&context, pb::ListRunsRequest(), &response).ok());
    std::vector<std::string> ids;
    for (const pb::RunInfo& run : response.runs()) ids.push_back(run.run_id());
    return ids;
  }
};

void ExpectMisrouted(const grpc::Status& status, const std::string& what) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what;
  EXPECT_THAT(status.error_message(), HasSubstr("x-dots-run")) << what;
}

TEST_F(RoutingTest, TheHeaderMayBeAbsentAndMustOtherwiseNameTheRequestsRun) {
  pb::RunStats stats;
  EXPECT_TRUE(Stats("a", {}, &stats).ok());
  EXPECT_TRUE(Stats("a", {"a"}, &stats).ok());
  const grpc::Status wrong = Stats("a", {"b"}, &stats);
  ExpectMisrouted(wrong, "header of another run");
  EXPECT_THAT(wrong.error_message(), HasSubstr("\"b\""));
  EXPECT_THAT(wrong.error_message(), HasSubstr("\"a\""));
  ExpectMisrouted(Stats("a", {"a", "a"}, &stats), "header given twice");
  ExpectMisrouted(Stats("a", {""}, &stats), "empty header");
}

TEST_F(RoutingTest, AMisroutedCallChangesNothing) {
  pb::RunStats before_a, before_b, after;
  ASSERT_TRUE(Stats("a", {}, &before_a).ok());
  ASSERT_TRUE(Stats("b", {}, &before_b).ok());
  {  // NextBatch of run a, routed for run b: nothing is planned or leased on either run.
    grpc::ClientContext context;
    AddRoutes(&context, {"b"});
    pb::NextBatchRequest request;
    request.set_run_id("a");
    request.set_world_size(1);
    auto reader = stub_->NextBatch(&context, request);
    pb::NextBatchChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    ExpectMisrouted(reader->Finish(), "NextBatch");
  }
  {  // DeleteRun of run a, routed for run b.
    grpc::ClientContext context;
    AddRoutes(&context, {"b"});
    pb::DeleteRunRequest request;
    request.set_run_id("a");
    pb::DeleteRunResponse response;
    ExpectMisrouted(stub_->DeleteRun(&context, request, &response), "DeleteRun");
  }
  {  // CreateRun of run c, routed for run d: no run is created.
    grpc::ClientContext context;
    AddRoutes(&context, {"d"});
    pb::CreateRunRequest request;
    request.set_run_id("c");
    pb::RunInfo info;
    ExpectMisrouted(stub_->CreateRun(&context, request, &info), "CreateRun");
  }
  EXPECT_EQ(RunIds(), (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(Stats("a", {}, &after).ok());
  EXPECT_EQ(after.ShortDebugString(), before_a.ShortDebugString());
  ASSERT_TRUE(Stats("b", {}, &after).ok());
  EXPECT_EQ(after.ShortDebugString(), before_b.ShortDebugString());
}

}  // namespace
}  // namespace dots::testing
