#include "core/state_store.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rocksdb/options.h"

namespace dots {
namespace {

constexpr std::string_view kFormatKey = "format";
constexpr char kFormatPrefix[] = "dots-state ";

void AppendBigEndian(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

// Appends the operations of the batches it iterates to `target`: group commit writes what
// concurrent callers enqueued as one batch (one WAL record, one memtable insertion).
class AppendTo : public rocksdb::WriteBatch::Handler {
 public:
  explicit AppendTo(rocksdb::WriteBatch* target) : target_(target) {}
  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    if (cf != 0) return rocksdb::Status::NotSupported("column families");
    return target_->Put(key, value);
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& key) override {
    if (cf != 0) return rocksdb::Status::NotSupported("column families");
    return target_->Delete(key);
  }
  rocksdb::Status DeleteRangeCF(uint32_t cf, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    if (cf != 0) return rocksdb::Status::NotSupported("column families");
    return target_->DeleteRange(begin, end);
  }

 private:
  rocksdb::WriteBatch* const target_;
};

}  // namespace

absl::StatusOr<SyncMode> ParseSyncMode(std::string_view name) {
  if (name == "always") return SyncMode::kAlways;
  if (name == "group") return SyncMode::kGroup;
  return absl::InvalidArgumentError(
      absl::StrCat("sync: \"", std::string(name), "\" is not one of always, group"));
}

std::string_view SyncModeName(SyncMode mode) {
  return mode == SyncMode::kAlways ? "always" : "group";
}

std::string RunPrefix(std::string_view run) { return absl::StrCat("r/", std::string(run), "/"); }
std::string RunPrefixEnd(std::string_view run) {
  return absl::StrCat("r/", std::string(run), "0");  // '0' follows '/' in ASCII
}
std::string RunMetaKey(std::string_view run) { return RunPrefix(run) + "m"; }
std::string RunSnapshotKey(std::string_view run) { return RunPrefix(run) + "s"; }
std::string PoolSizeKey(std::string_view run) { return RunPrefix(run) + "n"; }
std::string QuestionPrefix(std::string_view run) { return RunPrefix(run) + "q/"; }
std::string EventPrefix(std::string_view run) { return RunPrefix(run) + "e/"; }

std::string QuestionKey(std::string_view run, int64_t index) {
  std::string key = QuestionPrefix(run);
  AppendBigEndian(&key, static_cast<uint64_t>(index));
  return key;
}

std::string EventKey(std::string_view run, int64_t seq) {
  std::string key = EventPrefix(run);
  AppendBigEndian(&key, static_cast<uint64_t>(seq));
  return key;
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir,
                                                             SyncMode sync) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(dir, ec);
  if (existed && !std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: ", dir, " exists and is not a directory"));
  }
  if (existed && !std::filesystem::is_empty(dir, ec) &&
      !std::filesystem::exists(std::filesystem::path(dir) / "CURRENT", ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state_dir: ", dir,
        " is not empty and holds no dots state (no RocksDB CURRENT file); refusing to use it"));
  }
  rocksdb::Options options;
  options.create_if_missing = !existed || std::filesystem::is_empty(dir, ec);
  options.paranoid_checks = true;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.max_background_jobs = 2;
  options.compression = rocksdb::kNoCompression;  // embeddings and payloads barely compress
  options.write_buffer_size = 64 << 20;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: cannot open ", dir, ": ", s.ToString()));
  }
  std::unique_ptr<StateStore> store(new StateStore(dir, sync, std::unique_ptr<rocksdb::DB>(raw)));
  std::string format;
  s = raw->Get(rocksdb::ReadOptions(), ToSlice(kFormatKey), &format);
  const std::string expected = absl::StrCat(kFormatPrefix, kFormatVersion);
  if (s.IsNotFound()) {
    std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (it->Valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat("state_dir: ", dir,
                       " is a RocksDB database without a dots format record; refusing "
                       "to use it"));
    }
    rocksdb::WriteBatch batch;
    batch.Put(ToSlice(kFormatKey), expected);
    if (absl::Status w = store->Write(std::move(batch)); !w.ok()) return w;
  } else if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: cannot read ", dir, ": ", s.ToString()));
  } else if (format != expected) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "state_dir: %s has format \"%s\", this dots-server reads \"%s\"; use the dots-server "
        "version that wrote it (the directory is left untouched)",
        dir, format.substr(0, 64), expected));
  }
  return store;
}

StateStore::~StateStore() {
  uint64_t last;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    last = next_ticket_ - 1;
  }
  if (last > 0) WaitDurable(last).IgnoreError();
  if (db_ != nullptr) db_->Close().PermitUncheckedError();
}

absl::Status StateStore::FromRocks(const rocksdb::Status& s, std::string_view what) const {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("state_dir: ", std::string(what), " failed in ", dir_, ": ", s.ToString()));
}

uint64_t StateStore::Enqueue(rocksdb::WriteBatch batch) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  queue_.push_back(std::move(batch));
  return next_ticket_++;
}

absl::Status StateStore::WaitDurable(uint64_t ticket) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  if (written_ < ticket) {
    // This caller writes everything enqueued so far: its own batch and any that concurrent
    // callers enqueued while the previous write held the disk.
    std::deque<rocksdb::WriteBatch> pending;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      pending.swap(queue_);
    }
    const uint64_t first = written_ + 1, last = written_ + pending.size();
    // kGroup: everything pending becomes one batch with one fsync, atomic as a whole;
    // kAlways: one fsync per batch, in ticket order.
    rocksdb::Status s;
    if (sync_ == SyncMode::kGroup && pending.size() > 1) {
      rocksdb::WriteBatch group;
      AppendTo append(&group);
      for (size_t i = 0; i < pending.size() && s.ok(); ++i) s = pending[i].Iterate(&append);
      rocksdb::WriteOptions write;
      write.sync = true;
      if (s.ok()) s = db_->Write(write, &group);
    } else {
      for (size_t i = 0; i < pending.size() && s.ok(); ++i) {
        rocksdb::WriteOptions write;
        write.sync = true;
        s = db_->Write(write, &pending[i]);
      }
    }
    if (!s.ok()) {
      // RocksDB stops writing after a background or WAL error (e.g. a full disk) until resumed;
      // try to resume so the next write can succeed once the cause is gone.
      last_error_ = s.ToString();
      failed_.emplace_back(first, last);
      if (failed_.size() > 64) failed_.erase(failed_.begin());
      db_->Resume().PermitUncheckedError();
    }
    written_ = last;
  }
  for (const auto& [lo, hi] : failed_) {
    if (ticket >= lo && ticket <= hi) {
      return absl::UnavailableError(absl::StrCat(
          "state_dir: write to ", dir_, " failed, the change was not applied: ", last_error_));
    }
  }
  return absl::OkStatus();
}

absl::Status StateStore::Write(rocksdb::WriteBatch batch) {
  return WaitDurable(Enqueue(std::move(batch)));
}

absl::StatusOr<std::vector<std::string>> StateStore::ListRuns() const {
  std::vector<std::string> runs;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek("r/");
  while (it->Valid() && it->key().starts_with("r/")) {
    const std::string key = it->key().ToString();
    const size_t slash = key.find('/', 2);
    if (slash == std::string::npos) {
      return absl::DataLossError(absl::StrCat("state_dir: malformed key in ", dir_));
    }
    const std::string run = key.substr(2, slash - 2);
    runs.push_back(run);
    // Skip the rest of this run: '0' follows '/' in ASCII.
    it->Seek(absl::StrCat("r/", run, "0"));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing runs");
  return runs;
}

absl::StatusOr<std::string> StateStore::Get(std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ToSlice(key), &value);
  if (s.IsNotFound())
    return absl::NotFoundError(absl::StrCat("state_dir: no key ", std::string(key)));
  if (!s.ok()) return FromRocks(s, "read");
  return value;
}

absl::Status StateStore::Scan(
    std::string_view prefix,
    const std::function<absl::Status(std::string_view, std::string_view)>& fn) const {
  rocksdb::ReadOptions read;
  read.fill_cache = false;
  read.readahead_size = 8 << 20;  // scans are long and sequential (a whole pool at restart)
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
  for (it->Seek(ToSlice(prefix)); it->Valid() && it->key().starts_with(ToSlice(prefix));
       it->Next()) {
    const rocksdb::Slice k = it->key(), v = it->value();
    if (absl::Status s =
            fn(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()));
        !s.ok()) {
      return s;
    }
  }
  return FromRocks(it->status(), "scan");
}

absl::Status StateStore::DeleteRun(std::string_view run) {
  rocksdb::WriteBatch batch;
  rocksdb::Status s = batch.DeleteRange(RunPrefix(run), RunPrefixEnd(run));
  if (!s.ok()) return FromRocks(s, "delete");
  return Write(std::move(batch));
}

}  // namespace dots
