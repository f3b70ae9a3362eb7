#include "core/run/run_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/mutex.h"
#include "core/util/status_macros.h"

namespace dots {

absl::Status RunRegistry::ValidateRunId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("run_id: must have 1 to 128 characters, has %d", id.size()));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          "run_id: only letters, digits, '.', '_' and '-' are allowed");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RunEntry> RunRegistry::Create(const std::string& id, RunConfig config,
                                             std::string token_sha256) {
  DOTS_RETURN_IF_ERROR(ValidateRunId(id));
  DOTS_ASSIGN_OR_RETURN(Slot slot, ReserveSlot(id));
  // Built outside the lock (it may load an adapter file); the insert re-checks the id.
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run,
                        Run::Create(id, std::move(config), run_options_, std::move(token_sha256)));
  const absl::Time created = run->created();
  RunEntry entry{std::shared_ptr<Run>(std::move(run)), created};
  MutexLock lock(&mu_);
  if (!runs_.emplace(id, entry).second) {
    return absl::AlreadyExistsError(absl::StrFormat("run_id: run \"%s\" already exists", id));
  }
  return entry;
}

namespace {
absl::Status NoRoom(int64_t held, int64_t max_runs) {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "max_runs: this server already holds %d runs (its limit is %d); delete one first", held,
      max_runs));
}
}  // namespace

absl::Status RunRegistry::CheckRoomForRun() const {
  MutexLock lock(&mu_);
  const int64_t held = static_cast<int64_t>(runs_.size()) + reserved_;
  if (held >= run_options_.limits.max_runs) return NoRoom(held, run_options_.limits.max_runs);
  return absl::OkStatus();
}

absl::StatusOr<RunRegistry::Slot> RunRegistry::ReserveSlot(const std::string& id) {
  MutexLock lock(&mu_);
  if (runs_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrFormat("run_id: run \"%s\" already exists", id));
  }
  const int64_t held = static_cast<int64_t>(runs_.size()) + reserved_;
  if (held >= run_options_.limits.max_runs) return NoRoom(held, run_options_.limits.max_runs);
  ++reserved_;
  return Slot(this);
}

RunRegistry::Slot::~Slot() {
  if (registry_ == nullptr) return;
  MutexLock lock(&registry_->mu_);
  --registry_->reserved_;
}

absl::StatusOr<RunEntry> RunRegistry::Get(std::string_view id) const {
  RunEntry entry;
  {
    MutexLock lock(&mu_);
    auto it = runs_.find(id);
    if (it == runs_.end()) {
      return absl::NotFoundError(absl::StrFormat("run_id: no run \"%s\"", std::string(id)));
    }
    entry = it->second;
  }
  if (!entry.run->broken()) return entry;
  // A durable write of this run failed: its memory may hold what the store does not. Reopen it
  // from the store, which holds exactly what was acknowledged.
  MutexLock reopen(&reopen_mu_);
  {
    MutexLock lock(&mu_);
    auto it = runs_.find(id);
    if (it == runs_.end()) {
      return absl::NotFoundError(absl::StrFormat("run_id: no run \"%s\"", std::string(id)));
    }
    if (!it->second.run->broken()) return it->second;  // reopened meanwhile
    entry = it->second;
  }
  entry.run->DetachFromStore();
  absl::StatusOr<std::unique_ptr<Run>> reopened = Run::Open(std::string(id), run_options_);
  if (!reopened.ok()) {
    return absl::UnavailableError(absl::StrCat("run \"", std::string(id),
                                               "\" cannot be reopened from the state directory "
                                               "after a failed write: ",
                                               reopened.status().message()));
  }
  RunEntry fresh{std::shared_ptr<Run>(*std::move(reopened)), entry.created};
  MutexLock lock(&mu_);
  runs_[std::string(id)] = fresh;
  return fresh;
}

absl::Status RunRegistry::Load(
    const std::function<void(int64_t, int64_t, const std::string&)>& progress) {
  StateStore* store = run_options_.store;
  if (store == nullptr) return absl::OkStatus();
  DOTS_ASSIGN_OR_RETURN(std::vector<std::string> ids, store->ListRuns());
  int64_t done = 0;
  for (const std::string& id : ids) {
    absl::StatusOr<std::unique_ptr<Run>> run = Run::Open(id, run_options_);
    if (absl::IsNotFound(run.status())) {
      // Keys without a meta record: an import that did not finish. Not a run; left in place.
      ++done;
      continue;
    }
    if (!run.ok()) {
      return absl::Status(run.status().code(),
                          absl::StrCat("opening run \"", id, "\" from ", store->dir(), ": ",
                                       run.status().message()));
    }
    const absl::Time created = (*run)->created();
    {
      MutexLock lock(&mu_);
      runs_[id] = RunEntry{std::shared_ptr<Run>(*std::move(run)), created};
    }
    ++done;
    if (progress) progress(done, static_cast<int64_t>(ids.size()), id);
  }
  return absl::OkStatus();
}

absl::StatusOr<RunEntry> RunRegistry::Adopt(const std::string& id) {
  // The records were just imported; when they do not make a run this server accepts, they are
  // removed, so that nothing is created and the next start does not trip over them.
  auto discard = [&] {
    if (run_options_.store != nullptr) run_options_.store->DeleteRun(id).IgnoreError();
  };
  absl::StatusOr<Slot> slot = ReserveSlot(id);
  if (!slot.ok()) {
    if (absl::IsResourceExhausted(slot.status())) discard();
    return slot.status();
  }
  absl::StatusOr<std::unique_ptr<Run>> opened = Run::Open(id, run_options_);
  if (!opened.ok()) {
    discard();
    return absl::InvalidArgumentError(
        absl::StrCat("the archive does not hold a consistent run, nothing was imported: ",
                     opened.status().message()));
  }
  if (absl::Status limits = (*opened)->CheckLimits(); !limits.ok()) {
    opened->reset();
    discard();
    return absl::ResourceExhaustedError(absl::StrCat(limits.message(), "; nothing was imported"));
  }
  const absl::Time created = (*opened)->created();
  RunEntry entry{std::shared_ptr<Run>(*std::move(opened)), created};
  MutexLock lock(&mu_);
  if (!runs_.emplace(id, entry).second) {
    return absl::AlreadyExistsError(absl::StrFormat("run_id: run \"%s\" already exists", id));
  }
  return entry;
}

std::vector<std::pair<std::string, RunEntry>> RunRegistry::List() const {
  MutexLock lock(&mu_);
  return {runs_.begin(), runs_.end()};
}

absl::Status RunRegistry::Delete(std::string_view id) {
  std::shared_ptr<Run> doomed;  // destroyed outside the lock: it joins the run's planner
  {
    MutexLock lock(&mu_);
    auto it = runs_.find(id);
    if (it == runs_.end()) {
      return absl::NotFoundError(absl::StrFormat("run_id: no run \"%s\"", std::string(id)));
    }
    doomed = std::move(it->second.run);
    runs_.erase(it);
  }
  doomed->DetachFromStore();
  if (run_options_.store != nullptr) return run_options_.store->DeleteRun(id);
  return absl::OkStatus();
}

int64_t RunRegistry::size() const {
  MutexLock lock(&mu_);
  return static_cast<int64_t>(runs_.size());
}

}  // namespace dots
