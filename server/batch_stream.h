// The two stream codecs of the training RPCs, kept free of reactors so they can be tested alone:
//
//   BatchChunker       core BatchSlice -> NextBatchChunk messages (server side of NextBatch).
//   RolloutAssembler   ReportRolloutsRequest fragments -> core RolloutReports (server side of
//                      ReportRollouts).
//
// Wire layout (proto/dots/v1/dots.proto): a NextBatch stream is a header (first chunk only), the
// rank's items in order, then its replay groups in order, each group as one or more consecutive
// ReplayFragments. The first fragment of a group (offset 0) carries step, policy_version and
// rewards; every fragment carries index, key, payload_size, offset and its slice of the payload.
// A ReportRollouts stream carries RolloutFragments with the same rule: a group is a run of
// consecutive fragments with offsets 0, n1, n1 + n2, ... until payload_size bytes arrived.
#ifndef DOTS_SERVER_BATCH_STREAM_H_
#define DOTS_SERVER_BATCH_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/run/run.h"
#include "dots/v1/dots.pb.h"

namespace dots {

// Smallest max_chunk_bytes a NextBatch caller may ask for: below it the per-fragment metadata
// (up to a 4 KiB key and G rewards) would dominate the stream.
inline constexpr int64_t kMinChunkBytes = 1024;
// Smallest payload slice put into a fragment when a chunk still has other content: a smaller
// remainder of room starts a new chunk instead.
inline constexpr int64_t kMinFragmentDataBytes = 256;

class BatchChunker {
 public:
  // Takes ownership of the slice. `max_chunk_bytes` (>= kMinChunkBytes) is the target size of a
  // chunk's serialized form; a single item larger than it travels alone in a chunk (and a chunk
  // holding just one fragment's metadata may exceed it by kMinFragmentDataBytes). Every chunk is
  // at most `hard_limit_bytes` (the server's send limit): an item, or a replay group's first
  // fragment metadata, that cannot fit in it is RESOURCE_EXHAUSTED naming the key.
  // O(items + groups).
  static absl::StatusOr<BatchChunker> Create(BatchSlice slice, int64_t max_chunk_bytes,
                                             int64_t hard_limit_bytes);

  // Clears *chunk and fills it with the next chunk; false (chunk untouched) once everything was
  // returned. There is always at least one chunk: the header. O(bytes of the chunk); payloads
  // are copied into the chunk, and freed from the slice once fully sent.
  bool Next(v1::NextBatchChunk* chunk);

  int64_t chunks_returned() const { return chunks_returned_; }

 private:
  BatchChunker(BatchSlice slice, int64_t max_chunk_bytes)
      : slice_(std::move(slice)), max_chunk_bytes_(max_chunk_bytes) {}

  BatchSlice slice_;
  int64_t max_chunk_bytes_;
  bool header_sent_ = false;
  size_t next_item_ = 0;
  size_t next_group_ = 0;
  int64_t next_offset_ = 0;  // within slice_.replay[next_group_].payload
  int64_t chunks_returned_ = 0;
};

struct RolloutAssemblerLimits {
  // Largest payload_size of one group; larger is RESOURCE_EXHAUSTED.
  int64_t max_group_payload_bytes = 64LL << 20;
  // Largest sum of payload_size over the groups of one stream; larger is RESOURCE_EXHAUSTED.
  int64_t max_stream_payload_bytes = 1LL << 30;
};

class RolloutAssembler {
 public:
  explicit RolloutAssembler(RolloutAssemblerLimits limits) : limits_(limits) {}

  // Consumes one fragment (its data is moved out). Errors, naming the group (its 0-based number
  // in the stream and key) and the field: INVALID_ARGUMENT for a negative payload_size or
  // offset, an offset that is not the number of payload bytes received so far for the group, a
  // continuation whose payload_size, key, rewards or policy_version differ from its group's
  // first fragment, data running past payload_size, or a continuation with no group open;
  // RESOURCE_EXHAUSTED over a limit. After an error the assembler must be discarded.
  // O(fragment size).
  absl::Status Add(v1::RolloutFragment& fragment);

  // The complete groups in stream order. INVALID_ARGUMENT naming the group if its last fragments
  // never arrived. O(groups); call once.
  absl::StatusOr<std::vector<RolloutReport>> Finish();

  int64_t groups() const { return static_cast<int64_t>(done_.size()) + (open_ ? 1 : 0); }

 private:
  std::string Describe(int64_t group, const std::string& key) const;

  const RolloutAssemblerLimits limits_;
  std::vector<RolloutReport> done_;
  bool open_ = false;           // a group is waiting for more fragments
  RolloutReport current_;       // the open group
  int64_t current_size_ = 0;    // its payload_size
  int64_t declared_bytes_ = 0;  // sum of payload_size over the stream's groups
};

}  // namespace dots

#endif  // DOTS_SERVER_BATCH_STREAM_H_
