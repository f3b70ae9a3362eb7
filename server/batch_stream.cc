#include "server/batch_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "server/grpc_status.h"

namespace dots {
namespace {

using google::protobuf::io::CodedOutputStream;

// Bytes of a length-delimited field (all our field numbers are < 16: one tag byte). A proto3
// string or bytes field that is empty is not serialized at all.
int64_t StringFieldBytes(size_t length) {
  if (length == 0) return 0;
  return 1 + static_cast<int64_t>(CodedOutputStream::VarintSize64(length)) +
         static_cast<int64_t>(length);
}

// Bytes one element of a repeated message field adds to its parent: tag, length, body.
int64_t RepeatedEntryBytes(int64_t body) {
  return 1 + static_cast<int64_t>(CodedOutputStream::VarintSize64(static_cast<uint64_t>(body))) +
         body;
}

// Upper bound of what wrapping a fragment of metadata size m and n data bytes adds beyond
// m + n: the data field's tag and length, and the fragment entry's tag and length.
constexpr int64_t kFragmentWrapBytes = 2 * (1 + 10);

int64_t ItemBytes(const BatchItem& item) {
  const int64_t role = item.role == ItemRole::kFresh ? v1::ROLE_FRESH : v1::ROLE_REFERENCE;
  return StringFieldBytes(item.key.size()) + 1 +
         static_cast<int64_t>(CodedOutputStream::VarintSize64(static_cast<uint64_t>(role))) +
         StringFieldBytes(item.prompt.size()) + StringFieldBytes(item.metadata_json.size());
}

// The fragment of `group` at `offset` without its data.
v1::ReplayFragment FragmentMetadata(const ReplayGroup& group, int64_t index, int64_t offset) {
  v1::ReplayFragment f;
  f.set_index(index);
  f.set_key(group.key);
  f.set_payload_size(static_cast<int64_t>(group.payload.size()));
  f.set_offset(offset);
  if (offset == 0) {
    f.set_step(group.step);
    f.set_policy_version(group.policy_version);
    f.mutable_rewards()->Assign(group.rewards.begin(), group.rewards.end());
  }
  return f;
}

}  // namespace

absl::StatusOr<BatchChunker> BatchChunker::Create(BatchSlice slice, int64_t max_chunk_bytes,
                                                  int64_t hard_limit_bytes) {
  if (max_chunk_bytes < kMinChunkBytes || max_chunk_bytes > hard_limit_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("max_chunk_bytes: ", max_chunk_bytes,
                                                   " is outside [", kMinChunkBytes, ", ",
                                                   hard_limit_bytes, "]"));
  }
  for (const BatchItem& item : slice.items) {
    const int64_t bytes = RepeatedEntryBytes(ItemBytes(item));
    if (bytes > hard_limit_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("items: question ", QuoteForMessage(item.key), " takes ", bytes,
                       " bytes (prompt and metadata), more than the server's message limit of ",
                       hard_limit_bytes, " bytes (--max_message_bytes)"));
    }
  }
  for (const ReplayGroup& group : slice.replay) {
    const int64_t bytes = static_cast<int64_t>(FragmentMetadata(group, 0, 0).ByteSizeLong()) +
                          kFragmentWrapBytes + kMinFragmentDataBytes;
    if (bytes > hard_limit_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("replay: the metadata of group ", QuoteForMessage(group.key),
                       " does not fit the server's message limit of ", hard_limit_bytes, " bytes"));
    }
  }
  return BatchChunker(std::move(slice), max_chunk_bytes);
}

bool BatchChunker::Next(v1::NextBatchChunk* chunk) {
  if (header_sent_ && next_item_ == slice_.items.size() && next_group_ == slice_.replay.size()) {
    return false;
  }
  chunk->Clear();
  int64_t size = 0;
  if (!header_sent_) {
    v1::BatchHeader* header = chunk->mutable_header();
    header->set_step(slice_.step);
    header->set_round(slice_.round);
    header->set_reference_batch(slice_.reference_batch);
    header->set_batch_size(slice_.batch_size);
    header->set_item_count(static_cast<int64_t>(slice_.items.size()));
    header->set_replay_count(static_cast<int64_t>(slice_.replay.size()));
    size += RepeatedEntryBytes(static_cast<int64_t>(header->ByteSizeLong()));
    header_sent_ = true;
  }
  // Items are indivisible: one that does not fit goes first into the next chunk, alone if need be.
  while (next_item_ < slice_.items.size()) {
    BatchItem& item = slice_.items[next_item_];
    const int64_t bytes = RepeatedEntryBytes(ItemBytes(item));
    if (size > 0 && size + bytes > max_chunk_bytes_) break;
    v1::BatchItem* out = chunk->add_items();
    out->set_key(std::move(item.key));
    out->set_role(item.role == ItemRole::kFresh ? v1::ROLE_FRESH : v1::ROLE_REFERENCE);
    out->set_prompt(std::move(item.prompt));
    out->set_metadata_json(std::move(item.metadata_json));
    size += bytes;
    ++next_item_;
  }
  // Replay payloads are split at arbitrary byte offsets to fill each chunk.
  while (next_item_ == slice_.items.size() && next_group_ < slice_.replay.size()) {
    ReplayGroup& group = slice_.replay[next_group_];
    v1::ReplayFragment fragment =
        FragmentMetadata(group, static_cast<int64_t>(next_group_), next_offset_);
    const int64_t metadata = static_cast<int64_t>(fragment.ByteSizeLong());
    const int64_t remaining = static_cast<int64_t>(group.payload.size()) - next_offset_;
    const int64_t room = max_chunk_bytes_ - size - metadata - kFragmentWrapBytes;
    if (size > 0 && room < std::min(remaining, kMinFragmentDataBytes)) break;
    const int64_t n = std::min(remaining, std::max(room, kMinFragmentDataBytes));
    fragment.set_data(
        group.payload.substr(static_cast<size_t>(next_offset_), static_cast<size_t>(n)));
    size += RepeatedEntryBytes(static_cast<int64_t>(fragment.ByteSizeLong()));
    *chunk->add_replay() = std::move(fragment);
    next_offset_ += n;
    if (next_offset_ < static_cast<int64_t>(group.payload.size())) break;  // chunk is full
    std::string().swap(group.payload);  // sent: free it now rather than with the slice
    ++next_group_;
    next_offset_ = 0;
  }
  ++chunks_returned_;
  return true;
}

std::string RolloutAssembler::Describe(int64_t group, const std::string& key) const {
  return absl::StrCat("group ", group, " of the stream (key ", QuoteForMessage(key), ")");
}

absl::Status RolloutAssembler::Add(v1::RolloutFragment& fragment) {
  const int64_t group = static_cast<int64_t>(done_.size());
  const int64_t received = open_ ? static_cast<int64_t>(current_.payload.size()) : 0;
  const std::string& key = open_ ? current_.key : fragment.key();
  if (fragment.offset() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(group, key), ": offset: ", fragment.offset(), " < 0"));
  }
  if (!open_) {
    if (fragment.offset() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(group, key), ": offset: ", fragment.offset(),
                       ", but no group is open (the first fragment of a group has offset 0)"));
    }
    if (fragment.payload_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(group, key), ": payload_size: ", fragment.payload_size(), " < 0"));
    }
    if (fragment.payload_size() > limits_.max_group_payload_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(Describe(group, key), ": payload_size: ", fragment.payload_size(),
                       " bytes exceed the server's per-group limit of ",
                       limits_.max_group_payload_bytes, " bytes (--max_group_payload_bytes)"));
    }
    if (fragment.payload_size() > limits_.max_stream_payload_bytes - declared_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat(Describe(group, key),
                       ": payload_size: the stream's payloads exceed the server's "
                       "per-call limit of ",
                       limits_.max_stream_payload_bytes,
                       " bytes (--max_stream_bytes); split the report over several calls"));
    }
    current_ = RolloutReport();
    current_.key = fragment.key();
    current_.rewards.assign(fragment.rewards().begin(), fragment.rewards().end());
    current_.policy_version = fragment.policy_version();
    current_.payload.reserve(static_cast<size_t>(fragment.payload_size()));
    current_size_ = fragment.payload_size();
    declared_bytes_ += fragment.payload_size();
    open_ = true;
  } else {
    if (fragment.offset() != received) {
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(group, key), ": offset: ", fragment.offset(), ", expected ", received,
          " (the payload bytes received so far; fragments must be consecutive)"));
    }
    if (fragment.payload_size() != current_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(group, key), ": payload_size: ", fragment.payload_size(),
                       " differs from the group's first fragment (", current_size_, ")"));
    }
    if (!fragment.key().empty() && fragment.key() != current_.key) {
      return absl::InvalidArgumentError(absl::StrCat(Describe(group, key),
                                                     ": key: a continuation fragment names ",
                                                     QuoteForMessage(fragment.key())));
    }
    if (fragment.rewards_size() > 0 &&
        !std::equal(fragment.rewards().begin(), fragment.rewards().end(), current_.rewards.begin(),
                    current_.rewards.end())) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(group, key), ": rewards: differ from the group's first fragment"));
    }
    if (fragment.policy_version() != 0 && fragment.policy_version() != current_.policy_version) {
      return absl::InvalidArgumentError(
          absl::StrCat(Describe(group, key), ": policy_version: ", fragment.policy_version(),
                       " differs from the group's first fragment (", current_.policy_version, ")"));
    }
  }
  if (static_cast<int64_t>(fragment.data().size()) > current_size_ - received) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(group, key), ": data: ", fragment.data().size(), " bytes at offset ",
                     received, " run past payload_size ", current_size_));
  }
  if (received == 0 && static_cast<int64_t>(fragment.data().size()) == current_size_) {
    current_.payload.swap(*fragment.mutable_data());  // the common single-fragment group
  } else {
    current_.payload.append(fragment.data());
  }
  if (static_cast<int64_t>(current_.payload.size()) == current_size_) {
    done_.push_back(std::move(current_));
    current_ = RolloutReport();
    open_ = false;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RolloutReport>> RolloutAssembler::Finish() {
  if (open_) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(static_cast<int64_t>(done_.size()), current_.key), ": the stream ended after ",
        current_.payload.size(), " of ", current_size_, " payload bytes"));
  }
  return std::move(done_);
}

}  // namespace dots
