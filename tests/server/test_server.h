// Test fixture of the server integration tests: a real dots::Server on 127.0.0.1:0 in this
// process, a real channel to it, the generated stub, and helpers that speak the streaming
// protocol on the client side through the one payload codec (proto/payload_codec.h: fragmenting
// reports, reassembling batches while checking the chunk layout), plus raw calls to the health
// and reflection services, whose generated C++ stubs Debian does not ship.
#ifndef DOTS_TESTS_SERVER_TEST_SERVER_H_
#define DOTS_TESTS_SERVER_TEST_SERVER_H_

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dots/v1/dots.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "proto/convert.h"
#include "proto/payload_codec.h"
#include "server/server.h"
#include "tests/server/observe.h"
#include "tests/server/wire_questions.h"

namespace dots::testing {

namespace pb = ::dots::v1;

// A small config that plans fast: B = 16, G = 4, mu = 2, K = 4 inline references, history
// estimator. Needs a pool of at least mu * B + K = 36 questions.
inline constexpr char kSmallConfig[] =
    R"({"batch_size": 16, "group_size": 4, "steps_per_round": 2, "reference_size": 4,
        "estimator": {"mode": "history"}})";

// A NextBatch stream: the header and items as they travelled, the replay groups reassembled.
struct ReceivedBatch {
  pb::BatchHeader header;
  std::vector<pb::BatchItem> items;
  std::vector<ReplayGroup> replay;
  int64_t chunks = 0;
  int64_t largest_chunk_bytes = 0;
  std::string protocol_error;  // empty when the chunk layout followed the proto's rules
};

// One group to report (key, rewards, policy_version, payload).
using GroupToReport = RolloutReport;

inline std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

// A new empty directory under the test's temporary directory, for a server's --state_dir.
// Removed by the returned guard's destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string pattern = ::testing::TempDir() + prefix + "-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
    EXPECT_FALSE(path_.empty()) << "mkdtemp failed for " << pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Starts a server on 127.0.0.1:0; fails the test if it cannot.
inline std::unique_ptr<Server> StartTestServer(Server::Options options = Server::Options()) {
  options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

// Options for tests: few threads, short wait slices so that drains are quick.
inline Server::Options TestOptions() {
  Server::Options options;
  options.call_threads = 4;
  options.wait_threads = 16;
  options.wait_slice = absl::Milliseconds(100);
  return options;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(TestOptions()); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
  }

  void Start(Server::Options options) {
    server_ = StartTestServer(std::move(options));
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = pb::Dots::NewStub(channel_);
  }

  grpc::Status CreateRun(const std::string& run_id, const std::string& config_json,
                         pb::RunInfo* info = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    pb::CreateRunRequest request;
    request.set_run_id(run_id);
    request.set_config_json(config_json);
    pb::RunInfo ignored;
    return stub_->CreateRun(&context, request, info != nullptr ? info : &ignored);
  }

  // Uploads `questions`, `per_message` to a message.
  grpc::Status Upsert(const std::string& run_id, const std::vector<pb::Question>& questions,
                      pb::UpsertQuestionsResponse* response = nullptr, int per_message = 16) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    pb::UpsertQuestionsResponse ignored;
    auto writer = stub_->UpsertQuestions(&context, response != nullptr ? response : &ignored);
    pb::UpsertQuestionsRequest request;
    request.set_run_id(run_id);
    for (size_t i = 0; i < questions.size(); ++i) {
      *request.add_questions() = questions[i];
      if (request.questions_size() == per_message || i + 1 == questions.size()) {
        if (!writer->Write(request)) break;
        request.Clear();
      }
    }
    if (questions.empty()) writer->Write(request);
    writer->WritesDone();
    return writer->Finish();
  }

  // A run with kSmallConfig (or `config`) and `n` questions of dimension 8.
  void CreateRunWithPool(const std::string& run_id, int n = 64,
                         const std::string& config = kSmallConfig) {
    ASSERT_TRUE(CreateRun(run_id, config).ok());
    pb::UpsertQuestionsResponse response;
    grpc::Status status = Upsert(run_id, WireQuestions(n, 8), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.added(), n);
    ASSERT_EQ(response.rejected_size(), 0) << response.rejected(0).error();
  }

  grpc::Status NextBatch(const std::string& run_id, int64_t step, int rank, int world_size,
                         ReceivedBatch* batch, int64_t max_chunk_bytes = 0,
                         absl::Duration timeout = absl::Seconds(20), int64_t policy_version = 0) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(timeout));
    pb::NextBatchRequest request;
    request.set_run_id(run_id);
    request.set_step(step);
    request.set_rank(rank);
    request.set_world_size(world_size);
    request.set_policy_version(policy_version);
    request.set_max_chunk_bytes(max_chunk_bytes);
    auto reader = stub_->NextBatch(&context, request);
    pb::NextBatchChunk chunk;
    *batch = ReceivedBatch();
    BatchDecoder decoder;
    while (reader->Read(&chunk)) {
      batch->largest_chunk_bytes =
          std::max<int64_t>(batch->largest_chunk_bytes, chunk.ByteSizeLong());
      if (chunk.has_header()) batch->header = chunk.header();
      batch->items.insert(batch->items.end(), chunk.items().begin(), chunk.items().end());
      if (absl::Status s = decoder.Add(chunk); !s.ok() && batch->protocol_error.empty()) {
        batch->protocol_error = absl::StrCat("chunk ", batch->chunks, ": ", s.message());
      }
      ++batch->chunks;
    }
    grpc::Status status = reader->Finish();
    if (status.ok() && batch->protocol_error.empty()) {
      absl::StatusOr<BatchSlice> slice = decoder.Finish();
      if (slice.ok()) {
        batch->replay = std::move(slice->replay);
      } else {
        batch->protocol_error = std::string(slice.status().message());
      }
    }
    return status;
  }

  // Reports `groups` of `step` through the codec's ReportEncoder: messages of at most about
  // `message_bytes`, fragments of at most `fragment_bytes` payload bytes.
  grpc::Status Report(const std::string& run_id, int64_t step,
                      const std::vector<GroupToReport>& groups,
                      pb::ReportRolloutsResponse* response = nullptr,
                      int64_t fragment_bytes = 1 << 20, int64_t message_bytes = 2 << 20,
                      absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(timeout));
    pb::ReportRolloutsResponse ignored;
    auto writer = stub_->ReportRollouts(&context, response != nullptr ? response : &ignored);
    ReportEncoder encoder(
        run_id, step, groups,
        {.max_message_bytes = message_bytes, .max_fragment_bytes = fragment_bytes});
    pb::ReportRolloutsRequest request;
    while (encoder.Next(&request) && writer->Write(request)) {
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Rewards for a group: a fixed mix of 0s and 1s so it is informative (kept for replay).
  static std::vector<float> MixedRewards(int group_size = 4) {
    std::vector<float> r(static_cast<size_t>(group_size), 0.0f);
    r[0] = 1.0f;
    return r;
  }

  // Reports every item of `batch` (step `step`) with mixed rewards and `payload_bytes` each.
  grpc::Status ReportItems(const std::string& run_id, int64_t step, const ReceivedBatch& batch,
                           int64_t payload_bytes = 16,
                           pb::ReportRolloutsResponse* response = nullptr) {
    std::vector<GroupToReport> groups;
    for (const pb::BatchItem& item : batch.items) {
      groups.push_back(
          {item.key(), MixedRewards(), step,
           std::string(static_cast<size_t>(payload_bytes), static_cast<char>('a' + step % 26))});
    }
    return Report(run_id, step, groups, response);
  }

  // grpc.health.v1.Health/Check for `service`; returns the ServingStatus enum value (1 =
  // SERVING, 2 = NOT_SERVING) or -1 with the call's status in *status.
  int HealthCheck(const std::string& service, grpc::Status* status = nullptr) {
    std::string request;
    if (!service.empty()) {
      request.push_back(0x0A);  // field 1, length-delimited
      request.push_back(static_cast<char>(service.size()));
      request += service;
    }
    std::string response;
    grpc::Status s = RawUnary("/grpc.health.v1.Health/Check", request, &response);
    if (status != nullptr) *status = s;
    if (!s.ok()) return -1;
    // HealthCheckResponse { ServingStatus status = 1; }: absent = 0 (UNKNOWN).
    if (response.size() == 2 && response[0] == 0x08) return response[1];
    return response.empty() ? 0 : -2;
  }

  // The service names listed by grpc.reflection.v1alpha.ServerReflection (a bidi stream: one
  // list_services request, one response).
  std::vector<std::string> ReflectionServices(grpc::Status* status) {
    grpc::GenericStub generic(channel_);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(5)));
    grpc::CompletionQueue cq;
    void* tag;
    bool ok = false;
    auto step = [&] { return cq.Next(&tag, &ok) && ok; };
    auto call = generic.PrepareCall(
        &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    std::vector<std::string> names;
    grpc::ByteBuffer receive;
    if (step()) {
      const std::string request("\x3a\x00", 2);  // list_services = 7: ""
      grpc::Slice slice(request);
      grpc::ByteBuffer send(&slice, 1);
      call->Write(send, reinterpret_cast<void*>(2));
      if (step()) {
        call->Read(&receive, reinterpret_cast<void*>(3));
        if (step()) {
          std::vector<grpc::Slice> slices;
          (void)receive.Dump(&slices);
          std::string bytes;
          for (const grpc::Slice& s : slices) {
            bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
          }
          // ServerReflectionResponse.list_services_response (6) -> service (1) -> name (1).
          for (const std::string& list : WireStrings(bytes, 6)) {
            for (const std::string& service : WireStrings(list, 1)) {
              for (const std::string& name : WireStrings(service, 1)) names.push_back(name);
            }
          }
        }
      }
    }
    call->WritesDone(reinterpret_cast<void*>(4));
    step();
    call->Finish(status, reinterpret_cast<void*>(5));
    step();
    return names;
  }

  // The length-delimited fields number `field` of a serialized protobuf message.
  static std::vector<std::string> WireStrings(const std::string& bytes, int field) {
    std::vector<std::string> out;
    size_t i = 0;
    auto varint = [&](uint64_t* v) {
      *v = 0;
      for (int shift = 0; i < bytes.size() && shift < 64; shift += 7) {
        const uint8_t b = static_cast<uint8_t>(bytes[i++]);
        *v |= static_cast<uint64_t>(b & 0x7f) << shift;
        if ((b & 0x80) == 0) return true;
      }
      return false;
    };
    while (i < bytes.size()) {
      uint64_t tag, value;
      if (!varint(&tag)) break;
      const int type = static_cast<int>(tag & 7);
      if (type == 0) {
        if (!varint(&value)) break;
      } else if (type == 2) {
        if (!varint(&value) || value > bytes.size() - i) break;
        if (static_cast<int>(tag >> 3) == field) out.push_back(bytes.substr(i, value));
        i += value;
      } else if (type == 5) {
        i += 4;
      } else if (type == 1) {
        i += 8;
      } else {
        break;
      }
    }
    return out;
  }

  grpc::Status RawUnary(const std::string& method, const std::string& request,
                        std::string* response) {
    grpc::GenericStub generic(channel_);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(5)));
    grpc::Slice slice(request);
    grpc::ByteBuffer send(&slice, 1), receive;
    grpc::CompletionQueue cq;
    auto call = generic.PrepareUnaryCall(&context, method, send, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&receive, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    if (status.ok()) {
      std::vector<grpc::Slice> slices;
      (void)receive.Dump(&slices);
      response->clear();
      for (const grpc::Slice& s : slices) {
        response->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    return status;
  }

  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Dots::Stub> stub_;
};

}  // namespace dots::testing

#endif  // DOTS_TESTS_SERVER_TEST_SERVER_H_
