// The runs of one server, by id. Runs are isolated from each other; the registry only maps ids
// to runs and guards the map. Thread-safe: every method takes the registry's mutex briefly and
// never while calling into a run, so one run's slow call never blocks another run.
#ifndef DOTS_CORE_RUN_RUN_REGISTRY_H_
#define DOTS_CORE_RUN_RUN_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/run/run.h"
#include "core/util/mutex.h"

namespace dots {

struct RunEntry {
  std::shared_ptr<Run> run;
  absl::Time created;
};

// With a state store (run_options.store), creation and deletion are durable, Load() brings
// back every stored run after a restart, and a run whose durable write failed (Run::broken) is
// reopened from the store by the next Get, so it serves exactly what was acknowledged.
class RunRegistry {
 public:
  explicit RunRegistry(Run::Options run_options = Run::Options())
      : run_options_(std::move(run_options)) {}

  // Opens every run of the store (Run::Open), calling `progress(done, total, id)` after each.
  // Fails on the first run that does not open, naming it (nothing is deleted). Without a store:
  // OK, nothing to load. Blocks on disk: O(total stored state).
  absl::Status Load(const std::function<void(int64_t, int64_t, const std::string&)>& progress =
                        nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // Registers a run already written to the store under `id` (an import), opening it.
  // ALREADY_EXISTS if the id is taken in memory; INVALID_ARGUMENT when the records do not open
  // as a consistent run, RESOURCE_EXHAUSTED when the server holds max_runs runs or the run
  // exceeds a limit (Run::CheckLimits); the records are then removed from the store.
  absl::StatusOr<RunEntry> Adopt(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  StateStore* store() const { return run_options_.store; }

  // Checks a run id: 1 to 128 characters of [A-Za-z0-9._-]. INVALID_ARGUMENT naming run_id.
  static absl::Status ValidateRunId(std::string_view id);

  // Creates a run. Errors: INVALID_ARGUMENT (id or config, naming the key), ALREADY_EXISTS,
  // RESOURCE_EXHAUSTED when the server holds run_options.limits.max_runs runs (counting those
  // being created) or the config exceeds a limit.
  // O(config) plus loading an adapter file if the config names one.
  // `token_sha256`: see Run::Create.
  absl::StatusOr<RunEntry> Create(const std::string& id, RunConfig config,
                                  std::string token_sha256 = "") ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_FOUND naming the run. O(log runs); reopens a broken run from the store first
  // (UNAVAILABLE if that fails).
  absl::StatusOr<RunEntry> Get(std::string_view id) const ABSL_LOCKS_EXCLUDED(mu_, reopen_mu_);
  // Every run, ordered by id. O(runs).
  std::vector<std::pair<std::string, RunEntry>> List() const ABSL_LOCKS_EXCLUDED(mu_);
  // Removes a run and, durably, all its stored state; in-flight calls holding it finish on
  // their own reference without writing to the store. NOT_FOUND.
  absl::Status Delete(std::string_view id) ABSL_LOCKS_EXCLUDED(mu_);
  int64_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // RESOURCE_EXHAUSTED naming max_runs when no further run fits now (a pre-check before
  // writing an import; Create and Adopt check again). O(1).
  absl::Status CheckRoomForRun() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A place for one more run, held while it is created; released when destroyed (the run is
  // then in runs_ or was not created).
  class Slot {
   public:
    explicit Slot(RunRegistry* registry) : registry_(registry) {}
    Slot(Slot&& other) noexcept : registry_(std::exchange(other.registry_, nullptr)) {}
    Slot& operator=(Slot&&) = delete;
    ~Slot();

   private:
    RunRegistry* registry_;
  };
  // ALREADY_EXISTS for a taken id, RESOURCE_EXHAUSTED naming max_runs when runs plus
  // reservations reach it. O(log runs).
  absl::StatusOr<Slot> ReserveSlot(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  const Run::Options run_options_;
  mutable Mutex reopen_mu_;  // one reopen at a time; never held with mu_ held
  mutable Mutex mu_;
  mutable std::map<std::string, RunEntry, std::less<>> runs_ ABSL_GUARDED_BY(mu_);
  int64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;  // runs being created or adopted
};

}  // namespace dots

#endif  // DOTS_CORE_RUN_RUN_REGISTRY_H_
