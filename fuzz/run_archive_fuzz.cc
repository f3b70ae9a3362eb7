// Fuzzes what an ImportRun archive (core/storage/run_archive.h) reaches behind its checksums: the
// archive reader, and Run::Open rebuilding a run from hostile meta, pool, snapshot and event
// records (the restore path of a restart, too). Archives carry CRC-32Cs, so mutated bytes would
// almost never get past them; this target therefore builds a well-formed archive around the
// fuzzed records, with correct checksums and trailer.
//
// Input: records [kind: 1 byte][length: u16 little-endian][length bytes], at most 256 of them.
// kind % 4 picks the key: 0 "m" (RunMeta), 1 "s" (RunSnapshot), 2 "q/<index>" (QuestionRecord),
// 3 "e/<seq>" (RunEvent); for q and e the first 8 bytes are the big-endian index or sequence
// number, the rest is the value. Records are archived in input order.
//
// Per input: VerifyRunArchive, ImportRunArchive as run "a" into a real StateStore (RocksDB on
// TMPDIR), RunRegistry::Adopt (Run::Open) as ImportRun does. Checked:
//   - a rejected archive is INVALID_ARGUMENT and writes nothing;
//   - a run that does not open fails with DATA_LOSS / INVALID_ARGUMENT / NOT_FOUND (a stored
//     config naming an adapter file: INTERNAL), never crashes;
//   - a run that opens serves: Stats, GetEstimates, NextBatch of its current and next step and
//     a report of that step's items answer without crashing; then it exports, the export
//     imports and opens again as run "b", and both runs have the same counters;
//   - deleting the runs leaves the store empty.
//
// Seeds: DOTS_FUZZ_WRITE_SEEDS=<dir> run_archive_fuzz writes archives of real runs (fresh,
// trained, checkpointed, paper reference mode, text-only pool) in the input format and exits;
// fuzz/corpus/run_archive_fuzz/ holds their output.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/run/run.h"
#include "core/run/run_config.h"
#include "core/run/run_registry.h"
#include "core/storage/run_archive.h"
#include "core/storage/state_store.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"

namespace {

constexpr size_t kMaxRecords = 256;

template <typename T>
void PutLittleEndian(std::string* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

template <typename T>
T GetLittleEndian(const char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    v |= static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

// A well-formed archive (format of core/storage/run_archive.h) of (key, value) records.
std::string BuildArchive(const std::vector<std::pair<std::string, std::string>>& records) {
  std::string out("DOTSRUN\n");
  PutLittleEndian<uint32_t>(&out, dots::kArchiveVersion);
  uint32_t rolling = 0;
  uint64_t bytes = 0;
  for (const auto& [key, value] : records) {
    out.push_back('K');
    PutLittleEndian<uint32_t>(&out, static_cast<uint32_t>(key.size()));
    PutLittleEndian<uint64_t>(&out, value.size());
    out += key;
    out += value;
    std::string crc;
    PutLittleEndian<uint32_t>(&crc, dots::Crc32c(value, dots::Crc32c(key)));
    out += crc;
    rolling = dots::Crc32c(crc, rolling);
    bytes += key.size() + value.size();
  }
  out.push_back('E');
  PutLittleEndian<uint64_t>(&out, records.size());
  PutLittleEndian<uint64_t>(&out, bytes);
  PutLittleEndian<uint32_t>(&out, rolling);
  return out;
}

// The input format's records of an exported archive (the inverse of DecodeInput + BuildArchive).
std::string ArchiveToInput(std::string_view archive) {
  std::string input;
  size_t pos = 12;
  while (pos < archive.size() && archive[pos] == 'K') {
    const uint32_t key_len = GetLittleEndian<uint32_t>(archive.data() + pos + 1);
    const uint64_t value_len = GetLittleEndian<uint64_t>(archive.data() + pos + 5);
    const std::string_view key = archive.substr(pos + 13, key_len);
    const std::string_view value = archive.substr(pos + 13 + key_len, value_len);
    pos += 13 + key_len + value_len + 4;
    std::string payload;
    uint8_t kind = 0;
    if (key == "m") {
      kind = 0;
    } else if (key == "s") {
      kind = 1;
    } else {
      kind = key[0] == 'q' ? 2 : 3;
      payload = std::string(key.substr(2));  // the big-endian index
    }
    payload += value;
    FUZZ_CHECK(payload.size() <= 0xffff, absl::StrCat("a seed record of ", payload.size()));
    input.push_back(static_cast<char>(kind));
    PutLittleEndian<uint16_t>(&input, static_cast<uint16_t>(payload.size()));
    input += payload;
  }
  return input;
}

std::vector<std::pair<std::string, std::string>> DecodeInput(const uint8_t* data, size_t size) {
  std::vector<std::pair<std::string, std::string>> records;
  size_t pos = 0;
  while (pos < size && records.size() < kMaxRecords) {
    const uint8_t kind = data[pos++] % 4;
    size_t length = size - pos;
    if (size - pos >= 2) {
      length = std::min<size_t>(data[pos] | (data[pos + 1] << 8), size - pos - 2);
      pos += 2;
    }
    std::string payload(reinterpret_cast<const char*>(data + pos), length);
    pos += length;
    if (kind == 0) {
      records.emplace_back("m", std::move(payload));
    } else if (kind == 1) {
      records.emplace_back("s", std::move(payload));
    } else {
      payload.resize(std::max<size_t>(payload.size(), 8), '\0');
      records.emplace_back(absl::StrCat(kind == 2 ? "q/" : "e/", payload.substr(0, 8)),
                           payload.substr(8));
    }
  }
  return records;
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot create " + path);
  FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), "write " + path);
  FUZZ_CHECK(std::fclose(f) == 0, "close " + path);
}

std::string StableStats(dots::Run& run) {
  const dots::RunStats s = run.Stats();
  return absl::StrCat("step ", s.step, " pool ", s.pool_size, " reported ", s.reported_groups,
                      " duplicates ", s.duplicate_reports, " rejected ", s.rejected_reports,
                      " effective ", s.effective_groups, " replay ", s.replay_groups, "/",
                      s.replay_bytes, " replayed ", s.replayed_groups, " version ",
                      s.policy_version);
}

// A fresh state directory every kInputsPerStore inputs: RocksDB keeps the tombstones of every
// deleted run in its memtable, and scans over them slow the target down as they pile up.
constexpr int kInputsPerStore = 256;

struct Env {
  std::string dir;
  std::unique_ptr<dots::StateStore> store;
  std::unique_ptr<dots::RunRegistry> registry;
  int inputs = 0;
  int generation = 0;

  void OpenStore() {
    registry.reset();
    store.reset();
    if (generation > 0) std::filesystem::remove_all(absl::StrCat(dir, "/state", generation - 1));
    absl::StatusOr<std::unique_ptr<dots::StateStore>> opened =
        dots::StateStore::Open(absl::StrCat(dir, "/state", generation++), dots::SyncMode::kGroup);
    FUZZ_CHECK(opened.ok(), opened.status().ToString());
    store = std::move(*opened);
    dots::Run::Options options;
    options.store = store.get();
    options.background_planning = false;  // plans inside the call: deterministic
    registry = std::make_unique<dots::RunRegistry>(options);
  }
};

Env& GetEnv() {
  static Env* env = [] {
    auto* e = new Env();
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/dots-archive-fuzz.XXXXXX");
    FUZZ_CHECK(mkdtemp(pattern.data()) != nullptr, "mkdtemp " + pattern);
    e->dir = pattern;
    e->OpenStore();
    // At a normal exit, close RocksDB (joining its threads) before the exit-time leak check,
    // and remove the scratch directory.
    static Env* closing = e;
    std::atexit([] {
      closing->registry.reset();
      closing->store.reset();
      std::filesystem::remove_all(closing->dir);
    });
    // String fields that are not UTF-8 fail to parse (DATA_LOSS); protobuf would log each one.
    google::protobuf::SetLogHandler(nullptr);
    return e;
  }();
  return *env;
}

std::vector<std::string> StoredRuns() {
  absl::StatusOr<std::vector<std::string>> runs = GetEnv().store->ListRuns();
  FUZZ_CHECK(runs.ok(), runs.status().ToString());
  return *runs;
}

std::string Export(std::string_view id) {
  std::string archive;
  const absl::Status status =
      dots::ExportRunArchive(*GetEnv().store, id, [&archive](std::string_view piece) {
        archive.append(piece.data(), piece.size());
        return absl::OkStatus();
      });
  FUZZ_CHECK(status.ok(), "export: " + status.ToString());
  return archive;
}

// Issues and reports one step of run `id` (whatever can be served), ignoring failures.
void Train(dots::Run& run, int64_t step) {
  absl::StatusOr<dots::BatchSlice> batch =
      run.NextBatch(step, 0, 1, 0, absl::Now() + absl::Milliseconds(1));
  if (!batch.ok()) return;
  std::vector<dots::RolloutReport> groups;
  for (size_t i = 0; i < batch->items.size(); ++i) {
    dots::RolloutReport r;
    r.key = batch->items[i].key;
    r.rewards.assign(static_cast<size_t>(run.config().group_size), 0.0f);
    r.rewards[0] = i % 3 == 0 ? 0.0f : 1.0f;
    r.payload = absl::StrCat("payload of ", r.key, " at step ", step);
    groups.push_back(std::move(r));
  }
  (void)run.ReportRollouts(step, std::move(groups));
}

// Seeds: archives of real runs in the input format.
void WriteSeeds(const std::string& out_dir) {
  Env& env = GetEnv();
  struct Seed {
    const char* name;
    const char* config;
    int dim;
    int steps;
    bool checkpoint;
  };
  const Seed seeds[] = {
      {"fresh", R"({"batch_size": 8, "group_size": 4, "reference_size": 2})", 4, 0, false},
      {"trained",
       R"({"batch_size": 8, "group_size": 4, "reference_size": 2, "estimator": {"mode": "history"}})",
       4, 5, false},
      {"checkpointed", R"({"batch_size": 8, "group_size": 2, "reference_size": 2})", 4, 3, true},
      {"paper",
       R"({"batch_size": 8, "group_size": 4, "reference_size": 4, "reference_mode": "paper"})", 4,
       3, false},
      {"text_only", R"({"batch_size": 8, "group_size": 4, "reference_mode": "none",
                      "reference_size": 0, "replay": {"enabled": false}})",
       0, 2, false},
  };
  for (const Seed& seed : seeds) {
    absl::StatusOr<dots::RunConfig> config = dots::ParseRunConfig(seed.config);
    FUZZ_CHECK(config.ok(), config.status().ToString());
    absl::StatusOr<dots::RunEntry> entry = env.registry->Create(seed.name, *config);
    FUZZ_CHECK(entry.ok(), entry.status().ToString());
    dots::Run& run = *entry->run;
    std::vector<dots::Question> questions;
    dots::FloatMatrix embeddings;
    const int n = 40;
    if (seed.dim > 0) embeddings = dots::FloatMatrix(n, seed.dim);
    for (int i = 0; i < n; ++i) {
      dots::Question q;
      q.key = absl::StrCat("q", i);
      q.prompt = absl::StrCat("What is ", i, " squared?");
      q.metadata_json = absl::StrCat("{\"answer\": ", i * i, "}");
      if (i % 2 == 0) q.prior = (i % 10) / 10.0;
      for (int d = 0; d < seed.dim; ++d) embeddings.row(i)[d] = static_cast<float>((i + d) % 5);
      questions.push_back(std::move(q));
    }
    absl::StatusOr<dots::UpsertResult> upserted = run.UpsertQuestions(questions, embeddings);
    FUZZ_CHECK(upserted.ok(), upserted.status().ToString());
    for (int64_t step = 0; step < seed.steps; ++step) {
      Train(run, step);
      Train(run, step);  // paper mode: the reference batch first, then the step itself
    }
    if (seed.checkpoint) FUZZ_CHECK(run.Checkpoint().ok(), "checkpoint");
    WriteFile(absl::StrCat(out_dir, "/", seed.name), ArchiveToInput(Export(seed.name)));
    FUZZ_CHECK(env.registry->Delete(seed.name).ok(), "delete seed run");
  }
}

// How far inputs got, printed at exit (the README's figures).
struct Outcomes {
  int64_t rejected = 0, not_opened = 0, opened = 0;
  std::map<std::string, int64_t> open_errors;  // by status code
};
Outcomes& GetOutcomes() {
  static auto* outcomes = new Outcomes();
  return *outcomes;
}
void PrintOutcomes() {
  const Outcomes& o = GetOutcomes();
  std::string codes;
  for (const auto& [code, n] : o.open_errors) absl::StrAppend(&codes, " ", code, ":", n);
  std::fprintf(stderr,
               "run_archive_fuzz: archives rejected by VerifyRunArchive %lld, imported but not "
               "opened %lld (%s ), opened and served %lld\n",
               static_cast<long long>(o.rejected), static_cast<long long>(o.not_opened),
               codes.c_str(), static_cast<long long>(o.opened));
}

void ExpectOpenError(const absl::Status& status, const std::string& what) {
  const absl::StatusCode code = status.code();
  FUZZ_CHECK(code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kInvalidArgument ||
                 code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInternal,
             what + ": " + status.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  if (const char* dir = std::getenv("DOTS_FUZZ_WRITE_SEEDS"); dir != nullptr) {
    WriteSeeds(dir);
    std::exit(0);
  }
  std::atexit(PrintOutcomes);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Env& env = GetEnv();
  if (++env.inputs % kInputsPerStore == 0) env.OpenStore();
  const std::string path = env.dir + "/in.archive";
  WriteFile(path, BuildArchive(DecodeInput(data, size)));

  absl::StatusOr<dots::ArchiveSummary> verified = dots::VerifyRunArchive(path);
  if (!verified.ok()) {
    FUZZ_CHECK(verified.status().code() == absl::StatusCode::kInvalidArgument,
               verified.status().ToString());
    ++GetOutcomes().rejected;
    return 0;
  }
  absl::StatusOr<dots::ArchiveSummary> imported = dots::ImportRunArchive(*env.store, path, "a");
  FUZZ_CHECK(imported.ok(), "a verified archive does not import: " + imported.status().ToString());
  FUZZ_CHECK(StoredRuns() == std::vector<std::string>{"a"},
             "after the import, the store holds [" + absl::StrJoin(StoredRuns(), ", ") + "]");

  absl::StatusOr<dots::RunEntry> a = env.registry->Adopt("a");
  if (!a.ok()) {
    ExpectOpenError(a.status(), "Run::Open of the imported archive");
    ++GetOutcomes().not_opened;
    ++GetOutcomes().open_errors[absl::StatusCodeToString(a.status().code())];
    // ImportRun leaves these records behind today (see fuzz/README.md); clear them for the
    // next input.
    FUZZ_CHECK(env.store->DeleteRun("a").ok(), "store DeleteRun");
    FUZZ_CHECK(StoredRuns().empty(), "the store is not empty after DeleteRun");
    return 0;
  }

  ++GetOutcomes().opened;
  dots::Run& run = *a->run;
  const dots::RunStats stats = run.Stats();
  FUZZ_CHECK(stats.pool_size >= 0 && stats.step >= -1 && stats.reported_groups >= 0 &&
                 stats.replay_groups >= 0 && stats.replay_bytes >= 0,
             "inconsistent stats of an opened run: " + StableStats(run));
  (void)run.GetEstimates({});
  Train(run, std::max<int64_t>(0, stats.step));
  if (stats.step < INT64_MAX) Train(run, stats.step + 1);

  // An opened run exports to an archive that opens again, identically.
  const std::string archive = Export("a");
  const std::string path_b = env.dir + "/b.archive";
  WriteFile(path_b, archive);
  absl::StatusOr<dots::ArchiveSummary> reimported = dots::ImportRunArchive(*env.store, path_b, "b");
  FUZZ_CHECK(reimported.ok(),
             "the export of an opened run does not import: " + reimported.status().ToString());
  absl::StatusOr<dots::RunEntry> b = env.registry->Adopt("b");
  FUZZ_CHECK(b.ok(), "the export of an opened run does not open: " + b.status().ToString());
  FUZZ_CHECK(
      StableStats(*b->run) == StableStats(run),
      "export + import changed the run:\n  " + StableStats(run) + "\n  " + StableStats(*b->run));

  FUZZ_CHECK(env.registry->Delete("a").ok() && env.registry->Delete("b").ok(), "delete");
  FUZZ_CHECK(StoredRuns().empty(),
             "deleted runs are still stored: [" + absl::StrJoin(StoredRuns(), ", ") + "]");
  return 0;
}
