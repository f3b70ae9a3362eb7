// The streaming protocol of the training RPCs through a real server (the codec alone is
// tests/proto/payload_codec_test.cc): a batch whose replay payloads total more than 16 MiB
// arrives over a channel with gRPC's default 4 MiB receive limit, and four ranks fetching one
// step concurrently get slices that partition it.
#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

// Deterministic bytes for a key, so a replayed payload can be checked byte by byte.
std::string PayloadFor(const std::string& key, size_t size) {
  std::string payload(size, '\0');
  uint64_t x = std::hash<std::string>()(key) | 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    payload[i] = static_cast<char>(x);
  }
  return payload;
}

class StreamingTest : public ServerTest {};

// B = 32, mu = 1: round 0 (step 0) is all fresh; from step 1 on, half the batch is replay.
constexpr char kReplayConfig[] =
    R"({"batch_size": 32, "group_size": 4, "steps_per_round": 1, "reference_size": 4,
        "estimator": {"mode": "history"}})";

TEST_F(StreamingTest, ReplayBatchOver16MiBArrivesWithDefaultClientLimits) {
  CreateRunWithPool("big", 96, kReplayConfig);
  ReceivedBatch step0;
  ASSERT_TRUE(NextBatch("big", 0, 0, 1, &step0).ok());
  ASSERT_EQ(step0.items.size(), 32u);
  // 32 groups of 1.25 MiB (40 MiB in one report call, in 1 MiB fragments).
  const size_t payload_bytes = (5u << 20) / 4;
  std::vector<GroupToReport> groups;
  for (const pb::BatchItem& item : step0.items) {
    groups.push_back({item.key(), MixedRewards(), 3, PayloadFor(item.key(), payload_bytes)});
  }
  pb::ReportRolloutsResponse report;
  grpc::Status status = Report("big", 0, groups, &report);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(report.accepted(), 32);

  // The channel has gRPC's default limits (4 MiB receive).
  ReceivedBatch step1;
  status = NextBatch("big", 1, 0, 1, &step1);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(step1.protocol_error, "");
  ASSERT_EQ(step1.replay.size(), 16u);
  int64_t total = 0;
  std::set<std::string> step0_keys;
  for (const pb::BatchItem& item : step0.items) step0_keys.insert(item.key());
  for (const ReplayGroup& g : step1.replay) {
    EXPECT_TRUE(step0_keys.contains(g.key)) << g.key;
    EXPECT_EQ(g.step, 0);
    EXPECT_EQ(g.policy_version, 3);
    EXPECT_EQ(g.rewards, MixedRewards());
    EXPECT_TRUE(g.payload == PayloadFor(g.key, payload_bytes)) << "payload of " << g.key;
    total += static_cast<int64_t>(g.payload.size());
  }
  EXPECT_GT(total, 16LL << 20);
  EXPECT_GE(step1.chunks, 20);
  EXPECT_LE(step1.largest_chunk_bytes, 1 << 20);  // the default chunk size

  // A client that asks for small chunks gets them; the content is the same.
  ReceivedBatch small;
  ASSERT_TRUE(NextBatch("big", 1, 0, 1, &small, /*max_chunk_bytes=*/64 << 10).ok());
  EXPECT_EQ(small.protocol_error, "");
  EXPECT_LE(small.largest_chunk_bytes, 64 << 10);
  EXPECT_GT(small.chunks, 16 * 20);
  ASSERT_EQ(small.replay.size(), 16u);
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(small.replay[i].key, step1.replay[i].key);
    EXPECT_TRUE(small.replay[i].payload == step1.replay[i].payload);
  }

  // Four ranks, concurrently: the replay groups are partitioned too.
  std::vector<ReceivedBatch> ranks(4);
  std::vector<grpc::Status> statuses(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] { statuses[r] = NextBatch("big", 1, r, 4, &ranks[r]); });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> keys;
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r].error_message();
    EXPECT_EQ(ranks[r].replay.size(), 4u);
    for (const ReplayGroup& g : ranks[r].replay) {
      keys.push_back(g.key);
      EXPECT_TRUE(g.payload == PayloadFor(g.key, payload_bytes));
    }
  }
  ASSERT_EQ(keys.size(), 16u);
  for (size_t i = 0; i < 16; ++i) EXPECT_EQ(keys[i], step1.replay[i].key);
}

TEST_F(StreamingTest, FourRanksFetchingOneStepConcurrentlyPartitionTheBatch) {
  // B = 30 does not divide by 4: slices of 7 and 8.
  CreateRunWithPool("ranks", 96,
                    R"({"batch_size": 30, "group_size": 4, "steps_per_round": 2,
                        "reference_size": 4, "estimator": {"mode": "history"}})");
  constexpr int kWorld = 4, kRepeats = 3;  // every rank asks three times at once
  std::vector<ReceivedBatch> batches(kWorld * kRepeats);
  std::vector<grpc::Status> statuses(kWorld * kRepeats);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorld * kRepeats; ++i) {
    threads.emplace_back(
        [&, i] { statuses[i] = NextBatch("ranks", 0, i % kWorld, kWorld, &batches[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kWorld * kRepeats; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(batches[i].protocol_error, "");
    EXPECT_EQ(batches[i].header.batch_size(), 30);
    // Retries of a rank are identical.
    const ReceivedBatch& first = batches[i % kWorld];
    ASSERT_EQ(batches[i].items.size(), first.items.size());
    for (size_t j = 0; j < first.items.size(); ++j) {
      EXPECT_EQ(batches[i].items[j].key(), first.items[j].key());
    }
  }
  ReceivedBatch whole;
  ASSERT_TRUE(NextBatch("ranks", 0, 0, 1, &whole).ok());
  ASSERT_EQ(whole.items.size(), 30u);
  std::vector<std::string> joined;
  size_t smallest = 30, largest = 0;
  for (int r = 0; r < kWorld; ++r) {
    smallest = std::min(smallest, batches[r].items.size());
    largest = std::max(largest, batches[r].items.size());
    for (const pb::BatchItem& item : batches[r].items) joined.push_back(item.key());
  }
  EXPECT_LE(largest - smallest, 1u);  // balanced
  ASSERT_EQ(joined.size(), 30u);      // a partition: the rank slices, in rank order, are the batch
  for (size_t j = 0; j < 30; ++j) EXPECT_EQ(joined[j], whole.items[j].key());
  EXPECT_EQ(std::set<std::string>(joined.begin(), joined.end()).size(), 30u);
}

}  // namespace
}  // namespace dots::testing
