// Run archives: a portable, versioned, checksummed file holding one run's whole durable state
// (`dotsctl run export` / `run import`), so a run can move between servers and a trainer can
// keep a copy beside its checkpoint.
//
// Format (all integers little-endian):
//   magic    "DOTSRUN\n" (8 bytes), then u32 format version (kArchiveVersion)
//   records  'K', u32 key length, u64 value length, key, value, u32 CRC-32C of key + value
//            keys are relative to the run ("m", "n", "s", "q/<be64>", "e/<be64>":
//            core/storage/state_store.h)
//   trailer  'E', u64 record count, u64 total bytes of keys and values,
//            u32 CRC-32C over every record's CRC in order
// An archive is the run as of one consistent moment of the store (a RocksDB snapshot): its meta,
// pool, snapshot and the events after it. Importing replays it like a restart.
#ifndef DOTS_CORE_STORAGE_RUN_ARCHIVE_H_
#define DOTS_CORE_STORAGE_RUN_ARCHIVE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/storage/state_store.h"

namespace dots {

inline constexpr uint32_t kArchiveVersion = 1;

// CRC-32C (Castagnoli) of `data`, continuing from `crc` (0 to start). O(n).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

struct ArchiveSummary {
  std::string run_id;  // the id the run had where it was exported
  int64_t records = 0;
  int64_t bytes = 0;  // keys and values
};

// Writes run `run` of `store` as an archive through `sink` (called with consecutive pieces of
// the file, each at most ~1 MiB; its first error stops the export and is returned).
// NOT_FOUND when the store has no such run. Reads under a snapshot, so concurrent changes to
// the run are either wholly in the archive or not at all. O(run state); blocks on disk.
absl::Status ExportRunArchive(StateStore& store, std::string_view run,
                              const std::function<absl::Status(std::string_view)>& sink);

// Checks a whole archive file: magic, version, every record's checksum, the trailer's counts
// and checksum, and that it holds a parseable meta record. INVALID_ARGUMENT naming the file and
// what is wrong (e.g. "truncated in record 17"), NOT_FOUND when it cannot be read.
// O(file); reads it once.
absl::StatusOr<ArchiveSummary> VerifyRunArchive(const std::string& path);

// Verifies the archive, then writes it into `store` as run `new_id` (durably), the meta record
// last, so a crash midway leaves no run (only keys that the next import or create of that id
// clears). Nothing is written when verification fails. The caller makes sure `new_id` is free.
// Returns the summary. O(file); blocks on disk.
absl::StatusOr<ArchiveSummary> ImportRunArchive(StateStore& store, const std::string& path,
                                                std::string_view new_id);

}  // namespace dots

#endif  // DOTS_CORE_STORAGE_RUN_ARCHIVE_H_
