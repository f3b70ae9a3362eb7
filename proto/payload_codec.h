// The payload fragment codec of the two training streams of proto/dots/v1/dots.proto, the one
// implementation used by the server, the C++ client (client/cpp) and the test fixtures. The
// Python client (client/python/dots_client/client.py) implements the same rules; the golden
// streams of tests/proto/golden hold both to the same bytes.
//
//   BatchEncoder   core BatchSlice        -> NextBatchChunk messages        (server: NextBatch)
//   BatchDecoder   NextBatchChunk messages -> core BatchSlice               (clients)
//   ReportEncoder  core RolloutReports    -> ReportRolloutsRequest messages (clients)
//   ReportDecoder  RolloutFragments       -> core RolloutReports            (server)
//
// Layout (what every decoder checks). A group's payload travels as one or more consecutive
// fragments with offsets 0, n1, n1 + n2, ... until payload_size bytes arrived. The first
// fragment of a group (offset 0) carries its metadata: ReplayFragment step, policy_version and
// rewards; RolloutFragment rewards and policy_version. Every fragment carries the key,
// payload_size, offset, its slice of the payload as data and, in a batch, the group's index in
// the rank's slice. A NextBatch stream is the header (in the first chunk only), the items in
// order, then the replay groups in order. A ReportRollouts stream names run_id and step in its
// first message and has at least that message.
//
// Cutting rule (what both encoders, and the Python client's, do). Every message has a budget B
// of serialized bytes; `size` counts the message being filled exactly as serialized, header or
// run_id and step included. An item (indivisible) joins the message when size is 0 or
// size + its entry bytes <= B; otherwise the message is sent and the item opens the next one,
// alone if it is larger than B. For a fragment, with `meta` the serialized size of the fragment
// without its data, `rest` the payload bytes not sent yet and
//   room = B - size - meta - kFragmentWrapBytes,
// when size > 0 and room < min(rest, kMinFragmentDataBytes) the message is sent first (and
// room recomputed with size 0). The fragment then takes
//   min(rest, max(room, kMinFragmentDataBytes), F)
// bytes, where F is an optional cap on data bytes per fragment. So a message exceeds B only when
// it holds a single item larger than B, or a single fragment whose metadata leaves less than
// kMinFragmentDataBytes of room (by at most that much).
//
// Thread safety: none of these objects is shared; each serves one stream on one thread at a
// time. Nothing here blocks.
#ifndef DOTS_PROTO_PAYLOAD_CODEC_H_
#define DOTS_PROTO_PAYLOAD_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/types.h"
#include "dots/v1/dots.pb.h"

namespace dots {

// Smallest budget an encoder accepts (and a NextBatch caller may ask for): below it the
// per-fragment metadata (up to a 4 KiB key and G rewards) would dominate the stream.
inline constexpr int64_t kMinChunkBytes = 1024;
// Smallest payload slice put into a fragment when the message already holds something: a
// smaller room starts the next message instead.
inline constexpr int64_t kMinFragmentDataBytes = 256;
// Upper bound of what the data field (tag, length) and the fragment's entry in its message
// (tag, length) add to the fragment's metadata and data bytes.
inline constexpr int64_t kFragmentWrapBytes = 2 * (1 + 10);

// ---- NextBatch: server -> client ----

class BatchEncoder {
 public:
  // Takes the slice. `max_chunk_bytes` (in [kMinChunkBytes, hard_limit_bytes]) is the budget B
  // of the cutting rule. Every chunk must stay within `hard_limit_bytes` (the sender's message
  // limit): an item, or a replay group's first-fragment metadata, that cannot is
  // RESOURCE_EXHAUSTED naming the key; a budget outside the range is INVALID_ARGUMENT.
  // O(items + groups).
  static absl::StatusOr<BatchEncoder> Create(BatchSlice slice, int64_t max_chunk_bytes,
                                             int64_t hard_limit_bytes);

  // Clears *chunk and fills it with the next chunk; false (chunk untouched) once everything was
  // returned. There is always at least one chunk: the header. O(bytes of the chunk); item
  // strings are moved into the chunk and a group's payload is freed once fully sent.
  bool Next(v1::NextBatchChunk* chunk);

  int64_t chunks_returned() const { return chunks_returned_; }

 private:
  BatchEncoder(BatchSlice slice, int64_t max_chunk_bytes)
      : slice_(std::move(slice)), max_chunk_bytes_(max_chunk_bytes) {}

  BatchSlice slice_;
  int64_t max_chunk_bytes_;
  bool header_sent_ = false;
  size_t next_item_ = 0;
  size_t next_group_ = 0;
  int64_t next_offset_ = 0;  // within slice_.replay[next_group_].payload
  int64_t chunks_returned_ = 0;
};

class BatchDecoder {
 public:
  // Consumes one chunk (its strings are moved out). INTERNAL, starting "NextBatch: ", for a
  // chunk that breaks the layout: no header in the first chunk or one in a later chunk, an item
  // after replay data, a fragment that does not continue its group or open the next, a negative
  // count or size, data past payload_size, more items or groups than the header announced.
  // After an error the decoder must be discarded. O(chunk size).
  absl::Status Add(v1::NextBatchChunk& chunk);

  // The reassembled slice. INTERNAL when no chunk arrived, the last group is incomplete, or the
  // counts differ from the header. Call once, after the last Add. O(1).
  absl::StatusOr<BatchSlice> Finish();

 private:
  absl::Status AddFragment(v1::ReplayFragment& fragment);
  // OK when the open group (if any) has all its payload bytes; `when` says where we are.
  absl::Status CheckLastGroupComplete(const char* when) const;

  BatchSlice slice_;
  bool have_header_ = false;
  int64_t item_count_ = 0;
  int64_t replay_count_ = 0;
  int64_t expected_payload_ = 0;  // payload_size of the last group
};

// ---- ReportRollouts: client -> server ----

struct ReportEncoderOptions {
  // The budget B of the cutting rule, >= kMinChunkBytes.
  int64_t max_message_bytes = 1 << 20;
  // F, the largest data slice of one fragment; 0 = no cap (the budget decides).
  int64_t max_fragment_bytes = 0;
};

class ReportEncoder {
 public:
  // Encodes `groups` (not copied: they must outlive the encoder) of `step` of run `run_id`. No
  // validation: the caller checks its arguments (the server checks everything again).
  ReportEncoder(std::string run_id, int64_t step, absl::Span<const RolloutReport> groups,
                ReportEncoderOptions options = {});

  // Clears *request and fills it with the next message; false (request untouched) once
  // everything was returned. The first message names run_id and step, and there is always at
  // least that one. O(bytes of the message): payload slices are copied.
  bool Next(v1::ReportRolloutsRequest* request);

 private:
  const std::string run_id_;
  const int64_t step_;
  const absl::Span<const RolloutReport> groups_;
  const ReportEncoderOptions options_;
  bool first_sent_ = false;
  size_t next_group_ = 0;
  int64_t next_offset_ = 0;  // within groups_[next_group_].payload
};

struct ReportDecoderLimits {
  // Largest payload_size of one group; larger is RESOURCE_EXHAUSTED.
  int64_t max_group_payload_bytes = 64LL << 20;
  // Largest sum of payload_size over the groups of one stream; larger is RESOURCE_EXHAUSTED.
  int64_t max_stream_payload_bytes = 1LL << 30;
};

class ReportDecoder {
 public:
  explicit ReportDecoder(ReportDecoderLimits limits) : limits_(limits) {}

  // Consumes one fragment (its data is moved out). Errors, naming the group (its 0-based number
  // in the stream and key) and the field: INVALID_ARGUMENT for a negative payload_size or
  // offset, an offset that is not the number of payload bytes received so far for the group, a
  // continuation whose payload_size, key, rewards or policy_version differ from its group's
  // first fragment, data running past payload_size, or a continuation with no group open;
  // RESOURCE_EXHAUSTED over a limit. After an error the decoder must be discarded.
  // O(fragment size).
  absl::Status Add(v1::RolloutFragment& fragment);

  // The complete groups in stream order. INVALID_ARGUMENT naming the group if its last fragments
  // never arrived. O(groups); call once.
  absl::StatusOr<std::vector<RolloutReport>> Finish();

  int64_t groups() const { return static_cast<int64_t>(done_.size()) + (open_ ? 1 : 0); }

 private:
  std::string Describe(int64_t group, const std::string& key) const;

  const ReportDecoderLimits limits_;
  std::vector<RolloutReport> done_;
  bool open_ = false;           // a group is waiting for more fragments
  RolloutReport current_;       // the open group
  int64_t current_size_ = 0;    // its payload_size
  int64_t declared_bytes_ = 0;  // sum of payload_size over the stream's groups
};

}  // namespace dots

#endif  // DOTS_PROTO_PAYLOAD_CODEC_H_
