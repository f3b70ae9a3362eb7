// dotsctl estimates / stats: read-only views of a run.
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/cpp/json_format.h"
#include "client/dotsctl/commands.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 60;

}  // namespace

int EstimatesCommand(int argc, char** argv) {
  cli::FlagSet flags(
      "dotsctl estimates RUN [--keys k1,k2,...]",
      "Prints the current success-rate estimate of every question (pool order) or of the given\n"
      "keys (that order), one JSON line each:\n"
      "  {\"key\", \"p_hat\", \"observations\", \"last_policy_version\"}\n"
      "last_policy_version is -1 for a question never observed.");
  flags.Add("keys", "comma-separated question keys (default: all)");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 2, {});
  if (std::optional<int> exit = ParseCommandLine("estimates", args, 1, &flags)) return *exit;
  std::vector<std::string> keys;
  if (flags.Has("keys")) {
    for (absl::string_view k : absl::StrSplit(flags.Get("keys"), ',', absl::SkipEmpty())) {
      keys.emplace_back(k);
    }
  }
  std::unique_ptr<Client> client = Connect("estimates", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<std::vector<QuestionEstimate>> estimates =
      client->GetEstimates(args.positionals[0], keys);
  if (!estimates.ok()) return Fail(estimates.status());
  std::string out;
  for (const QuestionEstimate& e : *estimates) {
    out += EstimateToJson(e);
    out += '\n';
    if (out.size() > (1 << 20)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int StatsCommand(int argc, char** argv) {
  cli::FlagSet flags(
      "dotsctl stats RUN",
      "Prints the run's counters and gauges as one object:\n"
      "  {\"step\", \"round\", \"pool_size\", \"reported_groups\", "
      "\"effective_ratio_last_step\",\n"
      "   \"replay_groups\", \"replay_bytes\", \"leases_outstanding\", \"leases_expired\",\n"
      "   \"duplicate_reports\", \"rejected_reports\", \"effective_groups\", "
      "\"solve_all_groups\",\n"
      "   \"solve_none_groups\", \"replayed_groups\", \"rounds_planned\", "
      "\"last_planning_seconds\",\n"
      "   \"policy_version\"}\n"
      "step and round are those of the latest batch issued (-1 before the first).");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 2, {});
  if (std::optional<int> exit = ParseCommandLine("stats", args, 1, &flags)) return *exit;
  std::unique_ptr<Client> client = Connect("stats", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<RunStats> stats = client->GetRunStats(args.positionals[0]);
  if (!stats.ok()) return Fail(stats.status());
  PrintJson(RunStatsToJson(*stats));
  return 0;
}

}  // namespace dots::dotsctl
