#include "core/storage/state_store.h"

#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/mutex.h"
#include "core/util/status_macros.h"
#include "dots/state/v1/state.pb.h"
#include "rocksdb/env.h"
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

// RocksDB's warnings and errors go to stderr (the server's log) instead of a LOG file in the
// state directory. Besides being where operators look, this matters on a full disk: RocksDB's
// own file logger fails there, and Debian's build then aborts the process on its next message
// (an assertion in WritableFileWriter), which would turn a failed write into a crash.
class StderrLogger : public rocksdb::Logger {
 public:
  StderrLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char line[1024];
    std::vsnprintf(line, sizeof(line), format, ap);
    std::fprintf(stderr, "dots-server: rocksdb: %s\n", line);
  }
};

// Opens the RocksDB database of a state directory. FAILED_PRECONDITION with RocksDB's message.
absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(const std::string& dir, bool create,
                                                    bool read_only) {
  rocksdb::Options options;
  options.create_if_missing = create;
  options.paranoid_checks = true;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.max_background_jobs = 2;
  options.compression = rocksdb::kNoCompression;  // embeddings and payloads barely compress
  options.write_buffer_size = 64 << 20;
  options.info_log = std::make_shared<StderrLogger>();
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(options, dir, &raw)
                                      : rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state_dir: cannot open ", dir, read_only ? " (read-only)" : "", ": ", s.ToString()));
  }
  return std::unique_ptr<rocksdb::DB>(raw);
}

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
  const bool create = !existed || std::filesystem::is_empty(dir, ec);
  // Made here rather than by RocksDB, which logs an alarming error for a missing directory.
  if (!existed && !std::filesystem::create_directories(dir, ec) && ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: cannot create ", dir, ": ", ec.message()));
  }
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> db = OpenDb(dir, create, /*read_only=*/false);
  if (!db.ok()) return db.status();
  rocksdb::DB* raw = db->get();
  std::unique_ptr<StateStore> store(new StateStore(dir, sync, *std::move(db)));
  std::string format;
  rocksdb::Status s = raw->Get(rocksdb::ReadOptions(), ToSlice(kFormatKey), &format);
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
    MutexLock lock(&queue_mu_);
    last = next_ticket_ - 1;
  }
  if (last > 0) WaitDurable(last).IgnoreError();
  WriterMutexLock db_lock(&db_mu_);
  if (db_ != nullptr) db_->Close().PermitUncheckedError();
}

absl::Status StateStore::FromRocks(const rocksdb::Status& s, std::string_view what) const {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("state_dir: ", std::string(what), " failed in ", dir_, ": ", s.ToString()));
}

uint64_t StateStore::Enqueue(rocksdb::WriteBatch batch) {
  MutexLock lock(&queue_mu_);
  queue_.push_back(std::move(batch));
  return next_ticket_++;
}

rocksdb::Status StateStore::WritePendingLocked(std::deque<rocksdb::WriteBatch>& pending) {
  ReaderMutexLock db_lock(&db_mu_);
  if (db_ == nullptr) return rocksdb::Status::IOError("the database is closed");
  rocksdb::WriteOptions write;
  write.sync = true;
  rocksdb::Status s;
  if (sync_ == SyncMode::kGroup && pending.size() > 1) {
    rocksdb::WriteBatch group;
    AppendTo append(&group);
    for (size_t i = 0; i < pending.size() && s.ok(); ++i) s = pending[i].Iterate(&append);
    if (s.ok()) s = db_->Write(write, &group);
  } else {
    for (size_t i = 0; i < pending.size() && s.ok(); ++i) s = db_->Write(write, &pending[i]);
  }
  return s;
}

void StateStore::ReopenLocked() {
  WriterMutexLock db_lock(&db_mu_);
  if (db_ != nullptr) {
    db_->Close().PermitUncheckedError();  // reports the failed log; closing still completes
    db_.reset();
  }
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> db = OpenDb(dir_, false, /*read_only=*/false);
  if (db.ok()) {
    db_ = *std::move(db);
    writable_ = true;
    unwritable_.clear();
    return;
  }
  writable_ = false;
  unwritable_ = std::string(db.status().message());
  // Reads (restoring a run, exports) still work from a read-only instance, which writes nothing.
  db = OpenDb(dir_, false, /*read_only=*/true);
  if (db.ok()) db_ = *std::move(db);
}

absl::Status StateStore::WaitDurable(uint64_t ticket) {
  MutexLock commit(&commit_mu_);
  if (written_ < ticket) {
    // This caller writes everything enqueued so far: its own batch and any that concurrent
    // callers enqueued while the previous write held the disk.
    std::deque<rocksdb::WriteBatch> pending;
    {
      MutexLock lock(&queue_mu_);
      pending.swap(queue_);
    }
    const uint64_t first = written_ + 1, last = written_ + pending.size();
    if (!writable_ && absl::Now() >= next_reopen_) {
      ReopenLocked();
      next_reopen_ = absl::Now() + kReopenInterval;
    }
    rocksdb::Status s = writable_ ? WritePendingLocked(pending)
                                  : rocksdb::Status::IOError("not writable", unwritable_);
    if (!s.ok()) {
      last_error_ = s.ToString();
      failed_.emplace_back(first, last);
      if (failed_.size() > 64) failed_.erase(failed_.begin());
      if (writable_) {
        // The first failure: close and reopen now, so that nothing more is written through the
        // instance that failed (a failed log file must not be appended to again).
        writable_ = false;
        unwritable_ = last_error_;
        ReopenLocked();
        next_reopen_ = absl::Now() + kReopenInterval;
      }
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

absl::Status StateStore::Read(const std::function<absl::Status(rocksdb::DB*)>& fn) const {
  ReaderMutexLock db_lock(&db_mu_);
  if (db_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("state_dir: ", dir_,
                                               " is closed after a write error and could not be "
                                               "reopened; see the server's log"));
  }
  return fn(db_.get());
}

absl::StatusOr<std::vector<std::string>> StateStore::ListRuns() const {
  std::vector<std::string> runs;
  ReaderMutexLock db_lock(&db_mu_);
  if (db_ == nullptr) return FromRocks(rocksdb::Status::IOError("closed"), "listing runs");
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
  ReaderMutexLock db_lock(&db_mu_);
  if (db_ == nullptr) return FromRocks(rocksdb::Status::IOError("closed"), "read");
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
  ReaderMutexLock db_lock(&db_mu_);
  if (db_ == nullptr) return FromRocks(rocksdb::Status::IOError("closed"), "scan");
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

absl::Status UpdateRunMeta(StateStore& store, std::string_view run,
                           const std::function<void(state::v1::RunMeta&)>& change) {
  DOTS_ASSIGN_OR_RETURN(std::string value, store.Get(RunMetaKey(run)));
  state::v1::RunMeta meta;
  if (!meta.ParseFromString(value)) {
    return absl::DataLossError(
        absl::StrCat("run \"", std::string(run), "\": its meta record does not parse"));
  }
  change(meta);
  rocksdb::WriteBatch batch;
  batch.Put(RunMetaKey(run), meta.SerializeAsString());
  return store.Write(std::move(batch));
}

}  // namespace dots
