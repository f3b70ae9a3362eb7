// The payload fragment codec (proto/payload_codec.h): each encoder against its decoder on random
// inputs and budgets (every message within the budget, everything back byte for byte), the
// decoders against broken streams, and the golden streams of tests/proto/golden, which the
// Python client's tests check too.
#include "proto/payload_codec.h"

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_payload.h"
#include "tests/proto/broken_batches.h"
#include "tests/proto/golden_cases.h"

namespace dots::testing {
namespace {

using ::testing::HasSubstr;

void ExpectSameSlice(const BatchSlice& got, const BatchSlice& want, const std::string& where) {
  EXPECT_EQ(got.step, want.step) << where;
  EXPECT_EQ(got.round, want.round) << where;
  EXPECT_EQ(got.reference_batch, want.reference_batch) << where;
  EXPECT_EQ(got.batch_size, want.batch_size) << where;
  ASSERT_EQ(got.items.size(), want.items.size()) << where;
  for (size_t i = 0; i < want.items.size(); ++i) {
    EXPECT_EQ(got.items[i].key, want.items[i].key) << where;
    EXPECT_EQ(got.items[i].role, want.items[i].role) << where;
    EXPECT_EQ(got.items[i].prompt, want.items[i].prompt) << where;
    EXPECT_EQ(got.items[i].metadata_json, want.items[i].metadata_json) << where;
  }
  ASSERT_EQ(got.replay.size(), want.replay.size()) << where;
  for (size_t g = 0; g < want.replay.size(); ++g) {
    EXPECT_EQ(got.replay[g].key, want.replay[g].key) << where;
    EXPECT_EQ(got.replay[g].step, want.replay[g].step) << where;
    EXPECT_EQ(got.replay[g].policy_version, want.replay[g].policy_version) << where;
    EXPECT_EQ(got.replay[g].rewards, want.replay[g].rewards) << where;
    EXPECT_TRUE(got.replay[g].payload == want.replay[g].payload) << where << " group " << g;
  }
}

void ExpectSameReports(const std::vector<RolloutReport>& got,
                       const std::vector<RolloutReport>& want, const std::string& where) {
  ASSERT_EQ(got.size(), want.size()) << where;
  for (size_t g = 0; g < want.size(); ++g) {
    EXPECT_EQ(got[g].key, want[g].key) << where;
    EXPECT_EQ(got[g].rewards, want[g].rewards) << where;
    EXPECT_EQ(got[g].policy_version, want[g].policy_version) << where;
    EXPECT_TRUE(got[g].payload == want[g].payload) << where << " group " << g;
  }
}

// Decodes `chunks` (moved from) with a BatchDecoder: the first error, or the slice.
absl::StatusOr<BatchSlice> DecodeBatch(std::vector<v1::NextBatchChunk> chunks) {
  BatchDecoder decoder;
  for (v1::NextBatchChunk& chunk : chunks) {
    if (absl::Status s = decoder.Add(chunk); !s.ok()) return s;
  }
  return decoder.Finish();
}

absl::StatusOr<std::vector<RolloutReport>> DecodeReport(
    std::vector<v1::ReportRolloutsRequest> messages,
    ReportDecoderLimits limits = ReportDecoderLimits()) {
  ReportDecoder decoder(limits);
  for (v1::ReportRolloutsRequest& m : messages) {
    for (v1::RolloutFragment& f : *m.mutable_groups()) {
      if (absl::Status s = decoder.Add(f); !s.ok()) return s;
    }
  }
  return decoder.Finish();
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
    group.payload = Pattern(rng() % max_payload, static_cast<uint32_t>(g));
    slice.replay.push_back(std::move(group));
  }
  return slice;
}

// ---- NextBatch ----

TEST(BatchEncoderTest, EmptySliceIsOneHeaderChunk) {
  BatchSlice slice;
  slice.step = 4;
  slice.batch_size = 16;
  absl::StatusOr<BatchEncoder> encoder = BatchEncoder::Create(slice, 1 << 20, 4 << 20);
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  v1::NextBatchChunk chunk;
  ASSERT_TRUE(encoder->Next(&chunk));
  EXPECT_TRUE(chunk.has_header());
  EXPECT_EQ(chunk.header().step(), 4);
  EXPECT_EQ(chunk.header().batch_size(), 16);
  EXPECT_EQ(chunk.header().item_count(), 0);
  EXPECT_FALSE(encoder->Next(&chunk));
  EXPECT_EQ(encoder->chunks_returned(), 1);
}

TEST(BatchEncoderTest, RandomSlicesStayWithinTheBudgetAndRoundTrip) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t budget = kMinChunkBytes + static_cast<int64_t>(rng() % (64 << 10));
    const BatchSlice original =
        RandomSlice(rng, static_cast<int>(rng() % 20), static_cast<int>(rng() % 12),
                    static_cast<size_t>(budget / 3), 200000);
    absl::StatusOr<BatchEncoder> encoder = BatchEncoder::Create(original, budget, 4 << 20);
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    std::vector<v1::NextBatchChunk> chunks;
    v1::NextBatchChunk chunk;
    while (encoder->Next(&chunk)) {
      EXPECT_EQ(chunk.has_header(), chunks.empty());
      EXPECT_LE(static_cast<int64_t>(chunk.ByteSizeLong()), budget)
          << "trial " << trial << " chunk " << chunks.size();
      chunks.push_back(chunk);
    }
    EXPECT_EQ(encoder->chunks_returned(), static_cast<int64_t>(chunks.size()));
    absl::StatusOr<BatchSlice> decoded = DecodeBatch(std::move(chunks));
    ASSERT_TRUE(decoded.ok()) << "trial " << trial << ": " << decoded.status();
    ExpectSameSlice(*decoded, original, absl::StrCat("trial ", trial));
  }
}

TEST(BatchEncoderTest, OversizedItemsTravelAloneOrAreRefused) {
  BatchSlice slice;
  BatchItem big;
  big.key = "big";
  big.prompt = std::string(10000, 'x');
  slice.items = {BatchItem{"a", ItemRole::kFresh, "small", "{}"}, big,
                 BatchItem{"b", ItemRole::kFresh, "small", "{}"}};
  absl::StatusOr<BatchEncoder> encoder = BatchEncoder::Create(slice, 2048, 1 << 20);
  ASSERT_TRUE(encoder.ok());
  v1::NextBatchChunk chunk;
  std::vector<int> sizes;
  while (encoder->Next(&chunk)) sizes.push_back(chunk.items_size());
  EXPECT_EQ(sizes, (std::vector<int>{1, 1, 1}));  // header + a, big alone, b

  absl::StatusOr<BatchEncoder> refused = BatchEncoder::Create(slice, 2048, 8192);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("\"big\""));
  EXPECT_EQ(BatchEncoder::Create(slice, 100, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BatchDecoderTest, RefusesStreamsThatBreakTheLayout) {
  for (BrokenBatch& c : BrokenBatches()) {
    absl::StatusOr<BatchSlice> slice = DecodeBatch(std::move(c.chunks));
    ASSERT_FALSE(slice.ok()) << c.name;
    EXPECT_EQ(slice.status().code(), absl::StatusCode::kInternal) << c.name;
    EXPECT_THAT(std::string(slice.status().message()), HasSubstr(c.needle)) << c.name;
  }
}

// ---- ReportRollouts ----

std::vector<RolloutReport> RandomReports(std::mt19937_64& rng, int groups, size_t max_payload) {
  std::vector<RolloutReport> out;
  for (int g = 0; g < groups; ++g) {
    std::vector<float> rewards(1 + rng() % 16);
    for (float& r : rewards) r = static_cast<float>(rng() % 5) / 4;
    out.push_back({absl::StrCat("key-", g, std::string(rng() % 40, 'k')), rewards,
                   static_cast<int64_t>(rng() % 1000),
                   Pattern(rng() % max_payload, static_cast<uint32_t>(g + 100))});
  }
  return out;
}

TEST(ReportEncoderTest, RandomReportsStayWithinTheBudgetAndRoundTrip) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t budget = kMinChunkBytes + static_cast<int64_t>(rng() % (64 << 10));
    const int64_t cap = trial % 3 == 0 ? 1 + static_cast<int64_t>(rng() % 5000) : 0;
    const std::vector<RolloutReport> groups =
        RandomReports(rng, static_cast<int>(rng() % 12), 200000);
    ReportEncoder encoder("run-x", 42, groups,
                          {.max_message_bytes = budget, .max_fragment_bytes = cap});
    std::vector<v1::ReportRolloutsRequest> messages;
    v1::ReportRolloutsRequest request;
    while (encoder.Next(&request)) {
      EXPECT_LE(static_cast<int64_t>(request.ByteSizeLong()), budget) << "trial " << trial;
      for (const v1::RolloutFragment& f : request.groups()) {
        if (cap > 0) {
          EXPECT_LE(static_cast<int64_t>(f.data().size()), cap) << "trial " << trial;
        }
        // Continuations carry the key and sizes, not the metadata again.
        if (f.offset() > 0) {
          EXPECT_EQ(f.rewards_size(), 0);
          EXPECT_EQ(f.policy_version(), 0);
        }
      }
      messages.push_back(request);
    }
    ASSERT_FALSE(messages.empty());
    EXPECT_EQ(messages[0].run_id(), "run-x");
    EXPECT_EQ(messages[0].step(), 42);
    for (size_t m = 1; m < messages.size(); ++m) {
      EXPECT_TRUE(messages[m].run_id().empty());
      EXPECT_GT(messages[m].groups_size(), 0);  // no empty message after the first
    }
    absl::StatusOr<std::vector<RolloutReport>> decoded = DecodeReport(std::move(messages));
    ASSERT_TRUE(decoded.ok()) << "trial " << trial << ": " << decoded.status();
    ExpectSameReports(*decoded, groups, absl::StrCat("trial ", trial));
  }
}

TEST(ReportEncoderTest, EmptyReportIsOneMessageNamingRunAndStep) {
  ReportEncoder encoder("r9", 2, {});
  v1::ReportRolloutsRequest request;
  ASSERT_TRUE(encoder.Next(&request));
  EXPECT_EQ(request.run_id(), "r9");
  EXPECT_EQ(request.step(), 2);
  EXPECT_EQ(request.groups_size(), 0);
  EXPECT_FALSE(encoder.Next(&request));
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

TEST(ReportDecoderTest, ReassemblesGroupsCutAnywhere) {
  ReportDecoder decoder({1 << 20, 1 << 30});
  std::vector<v1::RolloutFragment> fragments = {
      Fragment("a", 5, 0, "", {1, 0}),  // metadata only; data follows at offset 0
      Fragment("", 5, 0, "he"), Fragment("a", 5, 2, "llo"),
      Fragment("b", 0, 0, "", {0, 1}),  // an empty payload completes at once
      Fragment("c", 3, 0, "xyz", {1, 1})};
  fragments[0].set_policy_version(9);
  for (v1::RolloutFragment& f : fragments) ASSERT_TRUE(decoder.Add(f).ok());
  absl::StatusOr<std::vector<RolloutReport>> groups = decoder.Finish();
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 3u);
  EXPECT_EQ((*groups)[0].key, "a");
  EXPECT_EQ((*groups)[0].payload, "hello");
  EXPECT_EQ((*groups)[0].policy_version, 9);
  EXPECT_EQ((*groups)[0].rewards, (std::vector<float>{1, 0}));
  EXPECT_EQ((*groups)[1].payload, "");
  EXPECT_EQ((*groups)[2].payload, "xyz");
}

TEST(ReportDecoderTest, RefusesInconsistentFragmentsAndOverLimitStreams) {
  auto first_error = [](std::vector<v1::RolloutFragment> fragments, int64_t group_limit = 100,
                        int64_t stream_limit = 1000) {
    ReportDecoder decoder({group_limit, stream_limit});
    for (v1::RolloutFragment& f : fragments) {
      absl::Status s = decoder.Add(f);
      if (!s.ok()) return s;
    }
    return decoder.Finish().status();
  };
  absl::Status s = first_error({Fragment("a", 4, 0, "ab"), Fragment("b", 4, 2, "cd")});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("key"));
  s = first_error({Fragment("a", 4, 0, "ab", {1}), Fragment("a", 4, 2, "cd", {0})});
  EXPECT_THAT(std::string(s.message()), HasSubstr("rewards"));
  s = first_error({Fragment("a", 4, 0, "ab"), Fragment("a", 4, 1, "cd")});
  EXPECT_THAT(std::string(s.message()), HasSubstr("offset: 1, expected 2"));
  s = first_error({Fragment("a", 4, 0, "ab")});
  EXPECT_THAT(std::string(s.message()), HasSubstr("ended after 2 of 4"));
  s = first_error({Fragment("a", 101, 0, "")});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("per-group limit"));
  std::vector<v1::RolloutFragment> many;
  for (int i = 0; i < 11; ++i) many.push_back(Fragment(absl::StrCat("k", i), 100, 0, ""));
  for (int i = 0; i < 11; ++i) {
    many.insert(many.begin() + 2 * i + 1, Fragment("", 100, 0, std::string(100, 'z')));
  }
  s = first_error(many);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("group 10"));
}

// ---- golden streams ----

class GoldenStreamsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* source = std::getenv("DOTS_SOURCE_DIR");
    ASSERT_NE(source, nullptr) << "DOTS_SOURCE_DIR is set by ctest";
    dir_ = std::string(source) + "/tests/proto/golden";
    absl::StatusOr<GoldenCases> cases = LoadGoldenCases(dir_);
    ASSERT_TRUE(cases.ok()) << cases.status();
    cases_ = std::move(*cases);
    ASSERT_FALSE(cases_.report.empty());
    ASSERT_FALSE(cases_.batch.empty());
  }

  std::vector<std::string> Golden(const std::string& name) {
    absl::StatusOr<std::vector<std::string>> lines = ReadHexLines(dir_ + "/" + name + ".hex");
    EXPECT_TRUE(lines.ok()) << lines.status();
    return lines.ok() ? *lines : std::vector<std::string>();
  }

  std::string dir_;
  GoldenCases cases_;
};

TEST_F(GoldenStreamsTest, ReportEncoderWritesTheGoldenBytesAndTheDecoderReadsThem) {
  for (const ReportCase& c : cases_.report) {
    const std::vector<std::string> golden = Golden(c.name);
    ASSERT_FALSE(golden.empty()) << c.name;
    EXPECT_EQ(EncodeGolden(c), golden)
        << c.name << ": the encoder's output changed; if that is intended, regenerate "
        << "(tests/proto/golden/README.md) and make the Python client follow";
    std::vector<v1::ReportRolloutsRequest> messages(golden.size());
    for (size_t i = 0; i < golden.size(); ++i) {
      ASSERT_TRUE(messages[i].ParseFromString(golden[i])) << c.name << " line " << i + 1;
    }
    EXPECT_EQ(messages[0].run_id(), c.run_id) << c.name;
    EXPECT_EQ(messages[0].step(), c.step) << c.name;
    absl::StatusOr<std::vector<RolloutReport>> decoded = DecodeReport(std::move(messages));
    ASSERT_TRUE(decoded.ok()) << c.name << ": " << decoded.status();
    ExpectSameReports(*decoded, c.groups, c.name);
  }
}

TEST_F(GoldenStreamsTest, BatchEncoderWritesTheGoldenBytesAndTheDecoderReadsThem) {
  for (const BatchCase& c : cases_.batch) {
    const std::vector<std::string> golden = Golden(c.name);
    ASSERT_FALSE(golden.empty()) << c.name;
    absl::StatusOr<std::vector<std::string>> encoded = EncodeGolden(c);
    ASSERT_TRUE(encoded.ok()) << c.name << ": " << encoded.status();
    EXPECT_EQ(*encoded, golden)
        << c.name << ": the encoder's output changed; if that is intended, regenerate "
        << "(tests/proto/golden/README.md) and make the Python client follow";
    std::vector<v1::NextBatchChunk> chunks(golden.size());
    for (size_t i = 0; i < golden.size(); ++i) {
      ASSERT_TRUE(chunks[i].ParseFromString(golden[i])) << c.name << " line " << i + 1;
    }
    absl::StatusOr<BatchSlice> decoded = DecodeBatch(std::move(chunks));
    ASSERT_TRUE(decoded.ok()) << c.name << ": " << decoded.status();
    ExpectSameSlice(*decoded, c.slice, c.name);
  }
}

// The cases exercise what they are meant to: payloads cut across messages, a capped fragment
// size, an item larger than the budget, an empty report and a header-only batch.
TEST_F(GoldenStreamsTest, CasesCoverTheCuttingRule) {
  bool report_spans = false, capped = false, empty_report = false;
  for (const ReportCase& c : cases_.report) {
    const std::vector<std::string> golden = Golden(c.name);
    report_spans |= golden.size() >= 3;
    capped |= c.options.max_fragment_bytes > 0;
    empty_report |= c.groups.empty() && golden.size() == 1;
  }
  bool oversized_item = false, header_only = false, batch_spans = false;
  for (const BatchCase& c : cases_.batch) {
    const std::vector<std::string> golden = Golden(c.name);
    for (const std::string& line : golden) {
      oversized_item |= static_cast<int64_t>(line.size()) > c.max_chunk_bytes;
    }
    header_only |= golden.size() == 1 && c.slice.items.empty() && c.slice.replay.empty();
    batch_spans |= golden.size() >= 4;
  }
  EXPECT_TRUE(report_spans && capped && empty_report);
  EXPECT_TRUE(oversized_item && header_only && batch_spans);
}

}  // namespace
}  // namespace dots::testing
