#include "core/run_registry.h"

#include "absl/strings/str_format.h"
#include "core/status_macros.h"

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

absl::StatusOr<RunEntry> RunRegistry::Create(const std::string& id, RunConfig config) {
  DOTS_RETURN_IF_ERROR(ValidateRunId(id));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (runs_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrFormat("run_id: run \"%s\" already exists", id));
    }
  }
  // Built outside the lock (it may load an adapter file); the insert re-checks the id.
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Run> run, Run::Create(id, std::move(config), run_options_));
  RunEntry entry{std::shared_ptr<Run>(std::move(run)), absl::Now()};
  std::lock_guard<std::mutex> lock(mu_);
  if (!runs_.emplace(id, entry).second) {
    return absl::AlreadyExistsError(absl::StrFormat("run_id: run \"%s\" already exists", id));
  }
  return entry;
}

absl::StatusOr<RunEntry> RunRegistry::Get(std::string_view id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(id);
  if (it == runs_.end()) {
    return absl::NotFoundError(absl::StrFormat("run_id: no run \"%s\"", std::string(id)));
  }
  return it->second;
}

std::vector<std::pair<std::string, RunEntry>> RunRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {runs_.begin(), runs_.end()};
}

absl::Status RunRegistry::Delete(std::string_view id) {
  std::shared_ptr<Run> doomed;  // destroyed outside the lock: it joins the run's planner
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = runs_.find(id);
    if (it == runs_.end()) {
      return absl::NotFoundError(absl::StrFormat("run_id: no run \"%s\"", std::string(id)));
    }
    doomed = std::move(it->second.run);
    runs_.erase(it);
  }
  return absl::OkStatus();
}

int64_t RunRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(runs_.size());
}

}  // namespace dots
