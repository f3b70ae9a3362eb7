#include "core/storage/run_archive.h"

#include <array>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"
#include "dots/state/v1/state.pb.h"

namespace dots {
namespace {

constexpr char kMagic[8] = {'D', 'O', 'T', 'S', 'R', 'U', 'N', '\n'};
constexpr size_t kSinkBytes = 1 << 20;
constexpr int64_t kImportBatchBytes = int64_t{32} << 20;
// Bounds a corrupted length field before it allocates: no key is longer, no value larger than
// protobuf's 2 GiB message limit.
constexpr uint32_t kMaxKeyBytes = 4096;
constexpr uint64_t kMaxValueBytes = uint64_t{2} << 30;

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

template <typename T>
void PutLittleEndian(std::string* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

template <typename T>
T GetLittleEndian(const char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// Buffers the archive's bytes and hands them to the sink in pieces of about kSinkBytes.
class Writer {
 public:
  explicit Writer(const std::function<absl::Status(std::string_view)>& sink) : sink_(sink) {}
  absl::Status Append(std::string_view bytes) {
    buffer_.append(bytes.data(), bytes.size());
    while (buffer_.size() >= kSinkBytes) {
      DOTS_RETURN_IF_ERROR(sink_(std::string_view(buffer_).substr(0, kSinkBytes)));
      buffer_.erase(0, kSinkBytes);
    }
    return absl::OkStatus();
  }
  absl::Status Flush() {
    if (!buffer_.empty()) DOTS_RETURN_IF_ERROR(sink_(buffer_));
    buffer_.clear();
    return absl::OkStatus();
  }

 private:
  const std::function<absl::Status(std::string_view)>& sink_;
  std::string buffer_;
};

// Reads an archive record by record, checking as it goes.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), in_(path, std::ios::binary) {}

  absl::Status Open() {
    if (!in_) return absl::NotFoundError(absl::StrCat(path_, ": cannot be read"));
    in_.seekg(0, std::ios::end);
    size_ = static_cast<uint64_t>(in_.tellg());
    in_.seekg(0, std::ios::beg);
    char header[12];
    if (!Read(header, sizeof(header))) return Bad("shorter than the archive header");
    if (std::memcmp(header, kMagic, sizeof(kMagic)) != 0) {
      return Bad("not a dots run archive (bad magic)");
    }
    const uint32_t version = GetLittleEndian<uint32_t>(header + 8);
    if (version != kArchiveVersion) {
      return Bad(absl::StrFormat("archive version %d, this dots reads version %d", version,
                                 kArchiveVersion));
    }
    return absl::OkStatus();
  }

  // Next record into key/value; false at the (verified) trailer.
  absl::StatusOr<bool> Next(std::string* key, std::string* value) {
    char tag;
    if (!Read(&tag, 1)) return Bad(absl::StrFormat("truncated after %d records", records_));
    if (tag == 'E') {
      char trailer[20];
      if (!Read(trailer, sizeof(trailer))) return Bad("truncated in the trailer");
      if (GetLittleEndian<uint64_t>(trailer) != static_cast<uint64_t>(records_) ||
          GetLittleEndian<uint64_t>(trailer + 8) != static_cast<uint64_t>(bytes_) ||
          GetLittleEndian<uint32_t>(trailer + 16) != rolling_crc_) {
        return Bad("the trailer does not match the records (records lost or altered)");
      }
      char extra;
      if (Read(&extra, 1)) return Bad("bytes after the trailer");
      return false;
    }
    if (tag != 'K') return Bad(absl::StrFormat("record %d: bad tag", records_));
    char lengths[12];
    if (!Read(lengths, sizeof(lengths)))
      return Bad(absl::StrFormat("truncated in record %d", records_));
    const uint32_t key_len = GetLittleEndian<uint32_t>(lengths);
    const uint64_t value_len = GetLittleEndian<uint64_t>(lengths + 4);
    if (key_len == 0 || key_len > kMaxKeyBytes || value_len > kMaxValueBytes) {
      return Bad(absl::StrFormat("record %d: implausible lengths (corrupted)", records_));
    }
    // Checked against what the file still holds before anything is allocated.
    const uint64_t left = size_ - static_cast<uint64_t>(in_.tellg());
    if (uint64_t{key_len} + value_len + 4 > left) {
      return Bad(
          absl::StrFormat("truncated in record %d (it declares more bytes than follow)", records_));
    }
    key->resize(key_len);
    value->resize(value_len);
    char crc_bytes[4];
    if (!Read(key->data(), key_len) || !Read(value->data(), value_len) ||
        !Read(crc_bytes, sizeof(crc_bytes))) {
      return Bad(absl::StrFormat("truncated in record %d", records_));
    }
    const uint32_t crc = Crc32c(*value, Crc32c(*key));
    if (crc != GetLittleEndian<uint32_t>(crc_bytes)) {
      return Bad(absl::StrFormat("record %d (key \"%s\"): checksum mismatch (corrupted)", records_,
                                 key->substr(0, 2)));
    }
    std::string crc_le;
    PutLittleEndian<uint32_t>(&crc_le, crc);
    rolling_crc_ = Crc32c(crc_le, rolling_crc_);
    ++records_;
    bytes_ += static_cast<int64_t>(key_len + value_len);
    return true;
  }

  int64_t records() const { return records_; }
  int64_t bytes() const { return bytes_; }

  absl::Status Bad(std::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": ", std::string(why), "; nothing was imported"));
  }

 private:
  bool Read(char* out, uint64_t n) {
    in_.read(out, static_cast<std::streamsize>(n));
    return static_cast<uint64_t>(in_.gcount()) == n;
  }

  const std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0;  // of the file
  int64_t records_ = 0;
  int64_t bytes_ = 0;
  uint32_t rolling_crc_ = 0;
};

}  // namespace

uint32_t Crc32c(std::string_view data, uint32_t crc) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  crc = ~crc;
  for (char c : data) crc = table[(crc ^ static_cast<unsigned char>(c)) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

namespace {

// The export itself, from an open database (StateStore::Read holds it open).
absl::Status ExportFrom(rocksdb::DB* db, std::string_view run,
                        const std::function<absl::Status(std::string_view)>& sink) {
  const rocksdb::Snapshot* snapshot = db->GetSnapshot();
  std::unique_ptr<const rocksdb::Snapshot, std::function<void(const rocksdb::Snapshot*)>> release(
      snapshot, [db](const rocksdb::Snapshot* s) { db->ReleaseSnapshot(s); });
  rocksdb::ReadOptions read;
  read.snapshot = snapshot;
  read.fill_cache = false;
  std::string meta;
  if (!db->Get(read, RunMetaKey(run), &meta).ok()) {
    return absl::NotFoundError(absl::StrCat("run_id: no run \"", std::string(run), "\""));
  }
  Writer out(sink);
  std::string header(kMagic, sizeof(kMagic));
  PutLittleEndian<uint32_t>(&header, kArchiveVersion);
  DOTS_RETURN_IF_ERROR(out.Append(header));
  const std::string prefix = RunPrefix(run);
  int64_t records = 0, bytes = 0;
  uint32_t rolling = 0;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const std::string_view key(it->key().data() + prefix.size(), it->key().size() - prefix.size());
    const std::string_view value(it->value().data(), it->value().size());
    std::string head;
    head.push_back('K');
    PutLittleEndian<uint32_t>(&head, static_cast<uint32_t>(key.size()));
    PutLittleEndian<uint64_t>(&head, value.size());
    DOTS_RETURN_IF_ERROR(out.Append(head));
    DOTS_RETURN_IF_ERROR(out.Append(key));
    DOTS_RETURN_IF_ERROR(out.Append(value));
    const uint32_t crc = Crc32c(value, Crc32c(key));
    std::string crc_le;
    PutLittleEndian<uint32_t>(&crc_le, crc);
    DOTS_RETURN_IF_ERROR(out.Append(crc_le));
    rolling = Crc32c(crc_le, rolling);
    ++records;
    bytes += static_cast<int64_t>(key.size() + value.size());
  }
  if (!it->status().ok()) {
    return absl::UnavailableError(
        absl::StrCat("state_dir: export read failed: ", it->status().ToString()));
  }
  std::string trailer;
  trailer.push_back('E');
  PutLittleEndian<uint64_t>(&trailer, static_cast<uint64_t>(records));
  PutLittleEndian<uint64_t>(&trailer, static_cast<uint64_t>(bytes));
  PutLittleEndian<uint32_t>(&trailer, rolling);
  DOTS_RETURN_IF_ERROR(out.Append(trailer));
  return out.Flush();
}

}  // namespace

absl::Status ExportRunArchive(StateStore& store, std::string_view run,
                              const std::function<absl::Status(std::string_view)>& sink) {
  return store.Read([&](rocksdb::DB* db) { return ExportFrom(db, run, sink); });
}

absl::StatusOr<ArchiveSummary> VerifyRunArchive(const std::string& path) {
  Reader reader(path);
  DOTS_RETURN_IF_ERROR(reader.Open());
  ArchiveSummary summary;
  bool has_meta = false;
  std::string key, value;
  while (true) {
    DOTS_ASSIGN_OR_RETURN(bool more, reader.Next(&key, &value));
    if (!more) break;
    if (key == "m") {
      state::v1::RunMeta meta;
      if (!meta.ParseFromString(value)) return reader.Bad("the run's meta record does not parse");
      summary.run_id = meta.run_id();
      has_meta = true;
    } else if (key != "s" && key != "n" && key.rfind("q/", 0) != 0 && key.rfind("e/", 0) != 0) {
      return reader.Bad(absl::StrCat("unknown record key \"", key.substr(0, 16), "\""));
    }
  }
  if (!has_meta) return reader.Bad("no meta record: not a whole run");
  summary.records = reader.records();
  summary.bytes = reader.bytes();
  return summary;
}

absl::StatusOr<ArchiveSummary> ImportRunArchive(StateStore& store, const std::string& path,
                                                std::string_view new_id) {
  DOTS_ASSIGN_OR_RETURN(ArchiveSummary summary, VerifyRunArchive(path));
  Reader reader(path);
  DOTS_RETURN_IF_ERROR(reader.Open());
  const std::string prefix = RunPrefix(new_id);
  rocksdb::WriteBatch batch;
  batch.DeleteRange(RunPrefix(new_id), RunPrefixEnd(new_id));  // leftovers of a failed import
  int64_t batch_bytes = 0;
  std::string meta_value, key, value;
  while (true) {
    DOTS_ASSIGN_OR_RETURN(bool more, reader.Next(&key, &value));
    if (!more) break;
    if (key == "m") {
      state::v1::RunMeta meta;
      meta.ParseFromString(value);
      meta.set_run_id(std::string(new_id));
      meta.set_sealed(false);  // the imported copy is the live one
      meta_value = meta.SerializeAsString();
      continue;
    }
    batch.Put(prefix + key, value);
    batch_bytes += static_cast<int64_t>(key.size() + value.size());
    if (batch_bytes > kImportBatchBytes) {
      DOTS_RETURN_IF_ERROR(store.Write(std::move(batch)));
      batch = rocksdb::WriteBatch();
      batch_bytes = 0;
    }
  }
  batch.Put(RunMetaKey(new_id), meta_value);
  DOTS_RETURN_IF_ERROR(store.Write(std::move(batch)));
  return summary;
}

}  // namespace dots
