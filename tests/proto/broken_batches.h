// NextBatch streams that break the chunk layout of proto/payload_codec.h, each with a word its
// error must contain: checked against the BatchDecoder alone (tests/proto/payload_codec_test.cc)
// and through the C++ client (tests/client/client_protocol_test.cc), which must turn each into
// INTERNAL without a retry.
#ifndef DOTS_TESTS_PROTO_BROKEN_BATCHES_H_
#define DOTS_TESTS_PROTO_BROKEN_BATCHES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "dots/v1/dots.pb.h"

namespace dots::testing {

struct BrokenBatch {
  std::string name;
  std::vector<v1::NextBatchChunk> chunks;
  std::string needle;  // in the error message
};

inline std::vector<BrokenBatch> BrokenBatches() {
  auto header = [](int items, int replay) {
    v1::NextBatchChunk c;
    c.mutable_header()->set_item_count(items);
    c.mutable_header()->set_replay_count(replay);
    return c;
  };
  // Appends a fragment of group `index` to chunk `c`.
  auto fragment = [](v1::NextBatchChunk& c, int index, int64_t size, int64_t offset,
                     const std::string& data) {
    v1::ReplayFragment* f = c.add_replay();
    f->set_index(index);
    f->set_key("k");
    f->set_payload_size(size);
    f->set_offset(offset);
    f->set_data(data);
  };
  std::vector<BrokenBatch> cases;
  cases.push_back({"empty stream", {}, "no header"});
  cases.push_back({"no header first", {v1::NextBatchChunk()}, "no header"});
  cases.push_back({"two headers", {header(0, 0), header(0, 0)}, "second chunk"});
  cases.push_back({"negative count", {header(-1, 0)}, "negative"});
  BrokenBatch c{"too many items", {header(1, 0)}, "items the header says"};
  c.chunks[0].add_items()->set_key("a");
  c.chunks[0].add_items()->set_key("b");
  cases.push_back(c);
  c = {"missing item", {header(2, 0)}, "header says"};
  c.chunks[0].add_items()->set_key("a");
  cases.push_back(c);
  c = {"item after replay", {header(1, 1), v1::NextBatchChunk()}, "item follows replay"};
  fragment(c.chunks[0], 0, 1, 0, "x");
  c.chunks[1].add_items()->set_key("late");
  cases.push_back(c);
  c = {"offset gap", {header(0, 1)}, "out of order"};
  fragment(c.chunks[0], 0, 6, 0, "abc");
  fragment(c.chunks[0], 0, 6, 4, "de");
  cases.push_back(c);
  c = {"payload_size changes", {header(0, 1)}, "out of order"};
  fragment(c.chunks[0], 0, 6, 0, "abc");
  fragment(c.chunks[0], 0, 7, 3, "def");
  cases.push_back(c);
  c = {"group starts early", {header(0, 2)}, "when the next group starts"};
  fragment(c.chunks[0], 0, 6, 0, "abc");
  fragment(c.chunks[0], 1, 1, 0, "x");
  cases.push_back(c);
  c = {"skipped group", {header(0, 2)}, "out of order"};
  fragment(c.chunks[0], 1, 0, 0, "");
  cases.push_back(c);
  c = {"too many groups", {header(0, 1)}, "replay groups the header says"};
  fragment(c.chunks[0], 0, 0, 0, "");
  fragment(c.chunks[0], 1, 0, 0, "");
  cases.push_back(c);
  c = {"long payload", {header(0, 1)}, "exceed payload_size"};
  fragment(c.chunks[0], 0, 2, 0, "abc");
  cases.push_back(c);
  c = {"short payload", {header(0, 1)}, "when the stream ended"};
  fragment(c.chunks[0], 0, 6, 0, "abc");
  cases.push_back(c);
  return cases;
}

}  // namespace dots::testing

#endif  // DOTS_TESTS_PROTO_BROKEN_BATCHES_H_
