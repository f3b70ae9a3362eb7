// The streaming protocol of the training RPCs: the chunk codec alone (BatchChunker,
// RolloutAssembler), then through a real server: a batch whose replay payloads total more than
// 16 MiB arrives over a channel with gRPC's default 4 MiB receive limit, and four ranks fetching
// one step concurrently get slices that partition it.
#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batch_stream.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

using ::testing::HasSubstr;

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

BatchSlice RandomSlice(std::mt19937_64& rng, int items, int groups, size_t max_prompt,
                       size_t max_payload) {
  BatchSlice slice;
  slice.step = 7;
  slice.round = 3;
  slice.batch_size = 100;
  for (int i = 0; i < items; ++i) {
    BatchItem item;
    item.key = absl::StrCat("item", i);
    item.role = i % 3 == 0 ? ItemRole::kReference : ItemRole::kFresh;
    item.prompt = std::string(rng() % max_prompt, 'p');
    item.metadata_json = absl::StrCat("{\"i\": ", i, "}");
    slice.items.push_back(std::move(item));
  }
  for (int g = 0; g < groups; ++g) {
    ReplayGroup group;
    group.key = absl::StrCat("group", g);
    group.step = g;
    group.policy_version = 10 + g;
    group.rewards = {0.0f, 1.0f, 0.5f};
    group.payload = PayloadFor(group.key, rng() % max_payload);
    slice.replay.push_back(std::move(group));
  }
  return slice;
}

TEST(BatchChunkerTest, EmptySliceIsOneHeaderChunk) {
  BatchSlice slice;
  slice.step = 4;
  slice.batch_size = 16;
  absl::StatusOr<BatchChunker> chunker = BatchChunker::Create(slice, 1 << 20, 4 << 20);
  ASSERT_TRUE(chunker.ok()) << chunker.status();
  v1::NextBatchChunk chunk;
  ASSERT_TRUE(chunker->Next(&chunk));
  EXPECT_TRUE(chunk.has_header());
  EXPECT_EQ(chunk.header().step(), 4);
  EXPECT_EQ(chunk.header().batch_size(), 16);
  EXPECT_EQ(chunk.header().item_count(), 0);
  EXPECT_FALSE(chunker->Next(&chunk));
}

TEST(BatchChunkerTest, RandomSlicesRespectTheChunkSizeAndReassemble) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t max_chunk = kMinChunkBytes + static_cast<int64_t>(rng() % (64 << 10));
    BatchSlice slice = RandomSlice(rng, static_cast<int>(rng() % 20), static_cast<int>(rng() % 12),
                                   static_cast<size_t>(max_chunk / 3), 200000);
    const BatchSlice original = slice;
    absl::StatusOr<BatchChunker> chunker =
        BatchChunker::Create(std::move(slice), max_chunk, 4 << 20);
    ASSERT_TRUE(chunker.ok()) << chunker.status();
    v1::NextBatchChunk chunk;
    std::vector<v1::BatchItem> items;
    std::vector<std::string> payloads;
    int64_t chunks = 0;
    while (chunker->Next(&chunk)) {
      EXPECT_EQ(chunk.has_header(), chunks == 0);
      ++chunks;
      EXPECT_LE(static_cast<int64_t>(chunk.ByteSizeLong()), max_chunk)
          << "trial " << trial << " chunk " << chunks;
      for (const v1::BatchItem& item : chunk.items()) items.push_back(item);
      for (const v1::ReplayFragment& f : chunk.replay()) {
        if (f.offset() == 0) {
          ASSERT_EQ(f.index(), static_cast<int64_t>(payloads.size()));
          const ReplayGroup& g = original.replay[payloads.size()];
          EXPECT_EQ(f.key(), g.key);
          EXPECT_EQ(f.step(), g.step);
          EXPECT_EQ(f.policy_version(), g.policy_version);
          EXPECT_THAT(f.rewards(), ::testing::ElementsAreArray(g.rewards));
          payloads.emplace_back();
        }
        ASSERT_FALSE(payloads.empty());
        EXPECT_EQ(f.offset(), static_cast<int64_t>(payloads.back().size()));
        EXPECT_EQ(f.payload_size(),
                  static_cast<int64_t>(original.replay[payloads.size() - 1].payload.size()));
        payloads.back() += f.data();
      }
    }
    EXPECT_EQ(chunker->chunks_returned(), chunks);
    ASSERT_EQ(items.size(), original.items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(items[i].key(), original.items[i].key);
      EXPECT_EQ(items[i].prompt(), original.items[i].prompt);
      EXPECT_EQ(items[i].role(),
                original.items[i].role == ItemRole::kFresh ? v1::ROLE_FRESH : v1::ROLE_REFERENCE);
    }
    ASSERT_EQ(payloads.size(), original.replay.size());
    for (size_t g = 0; g < payloads.size(); ++g) EXPECT_EQ(payloads[g], original.replay[g].payload);
  }
}

TEST(BatchChunkerTest, OversizedItemsTravelAloneOrAreRefused) {
  BatchSlice slice;
  BatchItem big;
  big.key = "big";
  big.prompt = std::string(10000, 'x');
  slice.items = {BatchItem{"a", ItemRole::kFresh, "small", "{}"}, big,
                 BatchItem{"b", ItemRole::kFresh, "small", "{}"}};
  absl::StatusOr<BatchChunker> chunker = BatchChunker::Create(slice, 2048, 1 << 20);
  ASSERT_TRUE(chunker.ok());
  v1::NextBatchChunk chunk;
  std::vector<int> sizes;
  while (chunker->Next(&chunk)) sizes.push_back(chunk.items_size());
  EXPECT_EQ(sizes, (std::vector<int>{1, 1, 1}));  // header + a, big alone, b

  absl::StatusOr<BatchChunker> refused = BatchChunker::Create(slice, 2048, 8192);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("\"big\""));
  EXPECT_EQ(BatchChunker::Create(slice, 100, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

v1::RolloutFragment Fragment(const std::string& key, int64_t size, int64_t offset,
                             const std::string& data, std::vector<float> rewards = {}) {
  v1::RolloutFragment f;
  f.set_key(key);
  for (float r : rewards) f.add_rewards(r);
  f.set_payload_size(size);
  f.set_offset(offset);
  f.set_data(data);
  return f;
}

TEST(RolloutAssemblerTest, ReassemblesGroupsCutAnywhere) {
  RolloutAssembler assembler({1 << 20, 1 << 30});
  std::vector<v1::RolloutFragment> fragments = {
      Fragment("a", 5, 0, "", {1, 0}),  // metadata only; data follows at offset 0
      Fragment("", 5, 0, "he"), Fragment("a", 5, 2, "llo"),
      Fragment("b", 0, 0, "", {0, 1}),  // an empty payload completes at once
      Fragment("c", 3, 0, "xyz", {1, 1})};
  fragments[0].set_policy_version(9);
  for (v1::RolloutFragment& f : fragments) ASSERT_TRUE(assembler.Add(f).ok());
  absl::StatusOr<std::vector<RolloutReport>> groups = assembler.Finish();
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 3u);
  EXPECT_EQ((*groups)[0].key, "a");
  EXPECT_EQ((*groups)[0].payload, "hello");
  EXPECT_EQ((*groups)[0].policy_version, 9);
  EXPECT_EQ((*groups)[0].rewards, (std::vector<float>{1, 0}));
  EXPECT_EQ((*groups)[1].payload, "");
  EXPECT_EQ((*groups)[2].payload, "xyz");
}

TEST(RolloutAssemblerTest, RefusesInconsistentFragmentsAndOverLimitStreams) {
  auto first_error = [](std::vector<v1::RolloutFragment> fragments, int64_t group_limit = 100,
                        int64_t stream_limit = 1000) {
    RolloutAssembler assembler({group_limit, stream_limit});
    for (v1::RolloutFragment& f : fragments) {
      absl::Status s = assembler.Add(f);
      if (!s.ok()) return s;
    }
    return assembler.Finish().status();
  };
  absl::Status s = first_error({Fragment("a", 4, 0, "ab"), Fragment("b", 4, 2, "cd")});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("key"));
  s = first_error({Fragment("a", 4, 0, "ab", {1}), Fragment("a", 4, 2, "cd", {0})});
  EXPECT_THAT(std::string(s.message()), HasSubstr("rewards"));
  s = first_error({Fragment("a", 4, 0, "ab"), Fragment("a", 4, 1, "cd")});
  EXPECT_THAT(std::string(s.message()), HasSubstr("offset: 1, expected 2"));
  s = first_error({Fragment("a", 101, 0, "")});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("per-group limit"));
  std::vector<v1::RolloutFragment> many;
  for (int i = 0; i < 11; ++i) many.push_back(Fragment(absl::StrCat("k", i), 100, 0, ""));
  for (int i = 0; i < 11; ++i)
    many.insert(many.begin() + 2 * i + 1, Fragment("", 100, 0, std::string(100, 'z')));
  s = first_error(many);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("group 10"));
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
  for (const ReceivedGroup& g : step1.replay) {
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
    for (const ReceivedGroup& g : ranks[r].replay) {
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
