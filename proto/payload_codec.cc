#include "proto/payload_codec.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "proto/convert.h"

namespace dots {
namespace {

using google::protobuf::io::CodedOutputStream;

// Reassembly pre-allocates at most this much per group on the word of the sender; the rest grows
// as data actually arrives.
constexpr int64_t kMaxPayloadReserve = 64LL << 20;

// `text` (a key: user data) quoted for an error message, cut after 80 bytes.
std::string Quote(const std::string& text) {
  constexpr size_t kMaxBytes = 80;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxBytes)), "\"",
                      text.size() > kMaxBytes ? "..." : "");
}

// Bytes of a length-delimited field with a one-byte tag (every field number of dots.proto is
// below 16). An empty proto3 string or bytes field is not serialized at all.
int64_t StringFieldBytes(size_t length) {
  if (length == 0) return 0;
  return 1 + static_cast<int64_t>(CodedOutputStream::VarintSize64(length)) +
         static_cast<int64_t>(length);
}

// Bytes one element of a repeated (or singular) message field adds to its parent: tag, length,
// body.
int64_t EntryBytes(int64_t body) {
  return 1 + static_cast<int64_t>(CodedOutputStream::VarintSize64(static_cast<uint64_t>(body))) +
         body;
}

// The serialized size of ToProto(item), without building it (the item is moved only once it is
// known to fit).
int64_t ItemBytes(const BatchItem& item) {
  const auto role = static_cast<uint64_t>(ToProto(item.role));
  return StringFieldBytes(item.key.size()) + 1 +
         static_cast<int64_t>(CodedOutputStream::VarintSize64(role)) +
         StringFieldBytes(item.prompt.size()) + StringFieldBytes(item.metadata_json.size());
}

// The cutting rule of payload_codec.h for one fragment: whether the message must be sent first,
// and how many payload bytes the fragment takes.
struct Cut {
  bool send_first;
  int64_t take;
};
Cut CutFragment(int64_t size, int64_t meta, int64_t rest, int64_t budget, int64_t cap) {
  int64_t room = budget - size - meta - kFragmentWrapBytes;
  const bool send_first = size > 0 && room < std::min(rest, kMinFragmentDataBytes);
  if (send_first) room = budget - meta - kFragmentWrapBytes;
  int64_t take = std::min(rest, std::max(room, kMinFragmentDataBytes));
  if (cap > 0) take = std::min(take, cap);
  return Cut{send_first, take};
}

// The fragment of `group` at `offset` without its data.
v1::ReplayFragment ReplayFragmentMetadata(const ReplayGroup& group, int64_t index, int64_t offset) {
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

absl::Status Malformed(absl::string_view what) {
  return absl::InternalError(absl::StrCat("NextBatch: ", what));
}

}  // namespace

// ---- BatchEncoder ----

absl::StatusOr<BatchEncoder> BatchEncoder::Create(BatchSlice slice, int64_t max_chunk_bytes,
                                                  int64_t hard_limit_bytes) {
  if (max_chunk_bytes < kMinChunkBytes || max_chunk_bytes > hard_limit_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("max_chunk_bytes: ", max_chunk_bytes,
                                                   " is outside [", kMinChunkBytes, ", ",
                                                   hard_limit_bytes, "]"));
  }
  for (const BatchItem& item : slice.items) {
    const int64_t bytes = EntryBytes(ItemBytes(item));
    if (bytes > hard_limit_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("items: question ", Quote(item.key), " takes ", bytes,
                       " bytes (prompt and metadata), more than the server's message limit of ",
                       hard_limit_bytes, " bytes (--max_message_bytes)"));
    }
  }
  for (const ReplayGroup& group : slice.replay) {
    const int64_t bytes = static_cast<int64_t>(ReplayFragmentMetadata(group, 0, 0).ByteSizeLong()) +
                          kFragmentWrapBytes + kMinFragmentDataBytes;
    if (bytes > hard_limit_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("replay: the metadata of group ", Quote(group.key),
                       " does not fit the server's message limit of ", hard_limit_bytes, " bytes"));
    }
  }
  return BatchEncoder(std::move(slice), max_chunk_bytes);
}

bool BatchEncoder::Next(v1::NextBatchChunk* chunk) {
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
    size += EntryBytes(static_cast<int64_t>(header->ByteSizeLong()));
    header_sent_ = true;
  }
  while (next_item_ < slice_.items.size()) {
    BatchItem& item = slice_.items[next_item_];
    const int64_t bytes = EntryBytes(ItemBytes(item));
    if (size > 0 && size + bytes > max_chunk_bytes_) break;
    ToProto(std::move(item), chunk->add_items());
    size += bytes;
    ++next_item_;
  }
  while (next_item_ == slice_.items.size() && next_group_ < slice_.replay.size()) {
    ReplayGroup& group = slice_.replay[next_group_];
    v1::ReplayFragment fragment =
        ReplayFragmentMetadata(group, static_cast<int64_t>(next_group_), next_offset_);
    const Cut cut = CutFragment(size, static_cast<int64_t>(fragment.ByteSizeLong()),
                                static_cast<int64_t>(group.payload.size()) - next_offset_,
                                max_chunk_bytes_, /*cap=*/0);
    if (cut.send_first) break;
    fragment.set_data(
        group.payload.substr(static_cast<size_t>(next_offset_), static_cast<size_t>(cut.take)));
    size += EntryBytes(static_cast<int64_t>(fragment.ByteSizeLong()));
    *chunk->add_replay() = std::move(fragment);
    next_offset_ += cut.take;
    if (next_offset_ == static_cast<int64_t>(group.payload.size())) {
      std::string().swap(group.payload);  // sent: free it now rather than with the slice
      ++next_group_;
      next_offset_ = 0;
    }
  }
  ++chunks_returned_;
  return true;
}

// ---- BatchDecoder ----

absl::Status BatchDecoder::Add(v1::NextBatchChunk& chunk) {
  if (chunk.has_header()) {
    if (have_header_) return Malformed("a second chunk carries a header");
    have_header_ = true;
    const v1::BatchHeader& h = chunk.header();
    slice_.step = h.step();
    slice_.round = h.round();
    slice_.reference_batch = h.reference_batch();
    slice_.batch_size = h.batch_size();
    item_count_ = h.item_count();
    replay_count_ = h.replay_count();
    if (item_count_ < 0 || replay_count_ < 0) {
      return Malformed("header: negative item_count or replay_count");
    }
    slice_.items.reserve(static_cast<size_t>(std::min<int64_t>(item_count_, 1 << 20)));
    slice_.replay.reserve(static_cast<size_t>(std::min<int64_t>(replay_count_, 1 << 20)));
  } else if (!have_header_) {
    return Malformed("the first chunk has no header");
  }
  if (chunk.items_size() > 0 && !slice_.replay.empty()) {
    return Malformed("an item follows replay data (items come first)");
  }
  if (static_cast<int64_t>(slice_.items.size()) + chunk.items_size() > item_count_) {
    return Malformed(absl::StrCat("more than the ", item_count_, " items the header says"));
  }
  for (v1::BatchItem& item : *chunk.mutable_items()) {
    slice_.items.push_back(FromProto(std::move(item)));
  }
  for (v1::ReplayFragment& fragment : *chunk.mutable_replay()) {
    if (absl::Status s = AddFragment(fragment); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BatchDecoder::CheckLastGroupComplete(const char* when) const {
  if (slice_.replay.empty()) return absl::OkStatus();
  const ReplayGroup& g = slice_.replay.back();
  if (static_cast<int64_t>(g.payload.size()) == expected_payload_) return absl::OkStatus();
  return Malformed(absl::StrCat("replay group ", slice_.replay.size() - 1, " (key ", Quote(g.key),
                                ") has ", g.payload.size(), " of ", expected_payload_,
                                " payload bytes ", when));
}

absl::Status BatchDecoder::AddFragment(v1::ReplayFragment& f) {
  const int64_t next = static_cast<int64_t>(slice_.replay.size());
  const int64_t received =
      next == 0 ? 0 : static_cast<int64_t>(slice_.replay.back().payload.size());
  if (f.offset() == 0 && f.index() == next) {  // a new group
    if (absl::Status s = CheckLastGroupComplete("when the next group starts"); !s.ok()) return s;
    if (next >= replay_count_) {
      return Malformed(
          absl::StrCat("more than the ", replay_count_, " replay groups the header says"));
    }
    if (f.payload_size() < 0) {
      return Malformed(
          absl::StrCat("replay group ", next, ": negative payload_size ", f.payload_size()));
    }
    ReplayGroup group;
    group.key = std::move(*f.mutable_key());
    group.step = f.step();
    group.policy_version = f.policy_version();
    group.rewards.assign(f.rewards().begin(), f.rewards().end());
    group.payload.reserve(static_cast<size_t>(std::min(f.payload_size(), kMaxPayloadReserve)));
    slice_.replay.push_back(std::move(group));
    expected_payload_ = f.payload_size();
  } else if (next == 0 || f.index() != next - 1 || f.offset() != received ||
             f.payload_size() != expected_payload_) {
    return Malformed(absl::StrCat(
        "replay fragment out of order: index ", f.index(), " offset ", f.offset(), " payload_size ",
        f.payload_size(), "; expected index ", next - 1, " offset ", received, " payload_size ",
        expected_payload_, ", or index ", next, " offset 0"));
  }
  std::string& payload = slice_.replay.back().payload;
  if (static_cast<int64_t>(payload.size() + f.data().size()) > expected_payload_) {
    return Malformed(absl::StrCat("replay group ", slice_.replay.size() - 1,
                                  ": fragments exceed payload_size ", expected_payload_));
  }
  if (payload.empty() && static_cast<int64_t>(f.data().size()) == expected_payload_) {
    payload.swap(*f.mutable_data());  // the common single-fragment group
  } else {
    payload.append(f.data());
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchSlice> BatchDecoder::Finish() {
  if (!have_header_) return Malformed("the stream carried no header");
  if (absl::Status s = CheckLastGroupComplete("when the stream ended"); !s.ok()) return s;
  if (static_cast<int64_t>(slice_.items.size()) != item_count_ ||
      static_cast<int64_t>(slice_.replay.size()) != replay_count_) {
    return Malformed(absl::StrCat("got ", slice_.items.size(), " items and ", slice_.replay.size(),
                                  " replay groups, header says ", item_count_, " and ",
                                  replay_count_));
  }
  return std::move(slice_);
}

// ---- ReportEncoder ----

ReportEncoder::ReportEncoder(std::string run_id, int64_t step,
                             absl::Span<const RolloutReport> groups, ReportEncoderOptions options)
    : run_id_(std::move(run_id)), step_(step), groups_(groups), options_(options) {}

bool ReportEncoder::Next(v1::ReportRolloutsRequest* request) {
  if (first_sent_ && next_group_ == groups_.size()) return false;
  request->Clear();
  int64_t size = 0;
  if (!first_sent_) {
    request->set_run_id(run_id_);
    request->set_step(step_);
    size = static_cast<int64_t>(request->ByteSizeLong());
    first_sent_ = true;
  }
  while (next_group_ < groups_.size()) {
    const RolloutReport& group = groups_[next_group_];
    const int64_t payload_size = static_cast<int64_t>(group.payload.size());
    v1::RolloutFragment fragment;
    fragment.set_key(group.key);
    fragment.set_payload_size(payload_size);
    fragment.set_offset(next_offset_);
    if (next_offset_ == 0) {
      fragment.mutable_rewards()->Assign(group.rewards.begin(), group.rewards.end());
      fragment.set_policy_version(group.policy_version);
    }
    const Cut cut = CutFragment(size, static_cast<int64_t>(fragment.ByteSizeLong()),
                                payload_size - next_offset_, options_.max_message_bytes,
                                options_.max_fragment_bytes);
    if (cut.send_first) break;
    fragment.set_data(group.payload.data() + next_offset_, static_cast<size_t>(cut.take));
    size += EntryBytes(static_cast<int64_t>(fragment.ByteSizeLong()));
    *request->add_groups() = std::move(fragment);
    next_offset_ += cut.take;
    if (next_offset_ == payload_size) {
      ++next_group_;
      next_offset_ = 0;
    }
  }
  return true;
}

// ---- ReportDecoder ----

std::string ReportDecoder::Describe(int64_t group, const std::string& key) const {
  return absl::StrCat("group ", group, " of the stream (key ", Quote(key), ")");
}

absl::Status ReportDecoder::Add(v1::RolloutFragment& fragment) {
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
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(group, key), ": key: a continuation fragment names ", Quote(fragment.key())));
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

absl::StatusOr<std::vector<RolloutReport>> ReportDecoder::Finish() {
  if (open_) {
    return absl::InvalidArgumentError(absl::StrCat(
        Describe(static_cast<int64_t>(done_.size()), current_.key), ": the stream ended after ",
        current_.payload.size(), " of ", current_size_, " payload bytes"));
  }
  return std::move(done_);
}

}  // namespace dots
