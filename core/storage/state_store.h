// The durable state of a dots-server: one embedded RocksDB under --state_dir.
//
// Key layout (format version kFormatVersion; every key is ASCII up to the binary suffixes):
//   "format"                  -> "dots-state <version>"; a directory with another version is
//                                refused at Open, never rewritten.
//   "r/<run>/m"               -> dots.state.v1.RunMeta (id, config, creation time, token hash)
//   "r/<run>/q/<index:be64>"  -> dots.state.v1.QuestionRecord, the pool in index order
//   "r/<run>/n"               -> the pool's size (decimal), a capacity hint for loading
//   "r/<run>/s"               -> dots.state.v1.RunSnapshot, the run's state as of an event
//   "r/<run>/e/<seq:be64>"    -> dots.state.v1.RunEvent, changes after the snapshot, in order
// Run ids are [A-Za-z0-9._-]{1,128} (RunRegistry::ValidateRunId), so "r/<run>/" never prefixes
// another run's keys. A run's state = its snapshot + its events replayed in order
// (core/run/run.h, Run::Open).
//
// Writes. Callers enqueue a WriteBatch and get a ticket; the batch becomes durable (RocksDB WAL,
// fsync) in ticket order, never out of order, so a crash keeps a prefix of the enqueued batches.
// WaitDurable(ticket) blocks until that batch (and every earlier one) is on disk. Two modes:
//   kAlways: each batch is written with its own fsync;
//   kGroup:  whatever is enqueued when the disk becomes free is written as one batch with one
//            fsync (group commit), so concurrent writers share fsyncs.
// Thread-safe.
#ifndef DOTS_CORE_STORAGE_STATE_STORE_H_
#define DOTS_CORE_STORAGE_STATE_STORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/util/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace dots {
namespace state::v1 {
class RunMeta;
}  // namespace state::v1

enum class SyncMode { kAlways, kGroup };
absl::StatusOr<SyncMode> ParseSyncMode(std::string_view name);  // always|group
std::string_view SyncModeName(SyncMode mode);

// Key builders of the layout above.
std::string RunPrefix(std::string_view run);     // "r/<run>/"
std::string RunPrefixEnd(std::string_view run);  // the first key after all of "r/<run>/..."
std::string RunMetaKey(std::string_view run);
std::string RunSnapshotKey(std::string_view run);
std::string PoolSizeKey(std::string_view run);
std::string QuestionKey(std::string_view run, int64_t index);
std::string EventKey(std::string_view run, int64_t seq);
std::string EventPrefix(std::string_view run);
std::string QuestionPrefix(std::string_view run);

class StateStore {
 public:
  static constexpr int kFormatVersion = 1;

  // Opens (creating when missing) the state directory. Errors: FAILED_PRECONDITION for a
  // directory of another format version or one that is not a dots state directory (naming the
  // path and what was found); UNAVAILABLE/INTERNAL with RocksDB's message otherwise (a missing
  // or corrupted file, a lock held by another server). Never deletes or rewrites data.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir, SyncMode sync);
  ~StateStore();  // flushes; any still-enqueued batch is written first

  const std::string& dir() const { return dir_; }
  SyncMode sync_mode() const { return sync_; }

  // Hands a batch to the writer. Never blocks on disk; O(1). Returns its ticket.
  uint64_t Enqueue(rocksdb::WriteBatch batch) ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Blocks until batch `ticket` is durable. UNAVAILABLE naming the state directory when its
  // write failed (the batch is then lost: callers must treat the change as not applied). A
  // failed write does not poison later ones. After a write error (a full disk, an I/O error) the
  // database is closed and reopened, read-only while it cannot be opened for writing (reads keep
  // working), and every later write first retries the reopen, at most every
  // kReopenInterval; so once space returns, writes succeed again. (RocksDB's own in-place
  // recovery is not used for this: after a failed log write it can reuse the failed log file.)
  absl::Status WaitDurable(uint64_t ticket) ABSL_LOCKS_EXCLUDED(commit_mu_, queue_mu_);
  // Enqueue + WaitDurable.
  absl::Status Write(rocksdb::WriteBatch batch);

  // Ids of every stored run (those with a meta record), sorted. O(runs) seeks.
  absl::StatusOr<std::vector<std::string>> ListRuns() const;
  // Value of `key`, NOT_FOUND when absent.
  absl::StatusOr<std::string> Get(std::string_view key) const;
  // Calls `fn(key, value)` for every key with `prefix`, in key order; stops at fn's first error.
  absl::Status Scan(
      std::string_view prefix,
      const std::function<absl::Status(std::string_view, std::string_view)>& fn) const;
  // Removes every key of `run`, durably.
  absl::Status DeleteRun(std::string_view run);

  // Calls fn(db) with the database held open (a reopen after a write error waits for fn), e.g.
  // for a consistent read through a RocksDB snapshot. UNAVAILABLE when the database is closed
  // (it could not be reopened). Blocks only on fn.
  absl::Status Read(const std::function<absl::Status(rocksdb::DB*)>& fn) const
      ABSL_LOCKS_EXCLUDED(db_mu_);

  // The underlying database, for benchmarks that compare against raw puts. Invalidated by a
  // reopen after a write error; use Read() anywhere that can happen.
  rocksdb::DB* db() ABSL_LOCKS_EXCLUDED(db_mu_) {
    ReaderMutexLock lock(&db_mu_);
    return db_.get();
  }

  // How often writes retry reopening the database after a write error.
  static constexpr absl::Duration kReopenInterval = absl::Seconds(1);

 private:
  StateStore(std::string dir, SyncMode sync, std::unique_ptr<rocksdb::DB> db)
      : dir_(std::move(dir)), sync_(sync), db_(std::move(db)) {}
  absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) const;
  // Writes `pending` (kAlways: one by one; kGroup: as one batch). Caller holds commit_mu_.
  rocksdb::Status WritePendingLocked(std::deque<rocksdb::WriteBatch>& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(db_mu_);
  // Closes the database and opens it again for writing, or read-only when that fails (then
  // writable_ stays false and unwritable_ says why). Blocks on disk and on readers.
  void ReopenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(db_mu_);

  const std::string dir_;
  const SyncMode sync_;

  // Lock order: commit_mu_, then db_mu_ or queue_mu_ (core/util/mutex.h: checked by clang,
  // visible to ThreadSanitizer).
  // Readers share db_mu_; a reopen (under commit_mu_) takes it exclusively.
  mutable SharedMutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(db_mu_);  // null when it could not reopen
  Mutex commit_mu_;  // one writer at a time: batches reach the WAL in ticket order
  bool writable_ ABSL_GUARDED_BY(commit_mu_) = true;
  std::string unwritable_ ABSL_GUARDED_BY(commit_mu_);  // why, while !writable_
  absl::Time next_reopen_ ABSL_GUARDED_BY(commit_mu_) = absl::InfinitePast();
  Mutex queue_mu_;
  std::deque<rocksdb::WriteBatch> queue_ ABSL_GUARDED_BY(queue_mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(queue_mu_) = 1;  // ticket of queue_.back() + 1
  uint64_t written_ ABSL_GUARDED_BY(commit_mu_) = 0;     // every ticket <= this is resolved
  // Ticket ranges whose write failed, newest last (a short history suffices: a waiter is
  // resolved right after its range).
  std::vector<std::pair<uint64_t, uint64_t>> failed_ ABSL_GUARDED_BY(commit_mu_);
  std::string last_error_ ABSL_GUARDED_BY(commit_mu_);
};

// Reads run `run`'s meta record, applies `change` to it and writes it back durably (one Write).
// Blocks on disk. Errors: NOT_FOUND without a record, DATA_LOSS when it does not parse, the
// store's write errors.
absl::Status UpdateRunMeta(StateStore& store, std::string_view run,
                           const std::function<void(state::v1::RunMeta&)>& change);

}  // namespace dots

#endif  // DOTS_CORE_STORAGE_STATE_STORE_H_
