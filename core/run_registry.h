// The runs of one server, by id. Runs are isolated from each other; the registry only maps ids
// to runs and guards the map. Thread-safe: every method takes the registry's mutex briefly and
// never while calling into a run, so one run's slow call never blocks another run.
#ifndef DOTS_CORE_RUN_REGISTRY_H_
#define DOTS_CORE_RUN_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/run.h"

namespace dots {

struct RunEntry {
  std::shared_ptr<Run> run;
  absl::Time created;
};

class RunRegistry {
 public:
  explicit RunRegistry(Run::Options run_options = Run::Options())
      : run_options_(std::move(run_options)) {}

  // Checks a run id: 1 to 128 characters of [A-Za-z0-9._-]. INVALID_ARGUMENT naming run_id.
  static absl::Status ValidateRunId(std::string_view id);

  // Creates a run. Errors: INVALID_ARGUMENT (id or config, naming the key), ALREADY_EXISTS.
  // O(config) plus loading an adapter file if the config names one.
  absl::StatusOr<RunEntry> Create(const std::string& id, RunConfig config) ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_FOUND naming the run. O(log runs).
  absl::StatusOr<RunEntry> Get(std::string_view id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Every run, ordered by id. O(runs).
  std::vector<std::pair<std::string, RunEntry>> List() const ABSL_LOCKS_EXCLUDED(mu_);
  // Removes a run; in-flight calls holding it finish on their own reference. NOT_FOUND.
  absl::Status Delete(std::string_view id) ABSL_LOCKS_EXCLUDED(mu_);
  int64_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const Run::Options run_options_;
  mutable std::mutex mu_;  // std::mutex: visible to ThreadSanitizer (see core/run.h)
  std::map<std::string, RunEntry, std::less<>> runs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dots

#endif  // DOTS_CORE_RUN_REGISTRY_H_
