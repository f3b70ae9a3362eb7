// dotsctl estimates / stats: read-only views of a run.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/dotsctl/commands.h"
#include "client/dotsctl/json_format.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 60;

struct InspectArgs {
  std::string run_id;
  std::string keys;  // estimates --keys
};

int Estimates(const InspectArgs& args, const Connection& connection) {
  std::vector<std::string> keys;
  for (absl::string_view k : absl::StrSplit(args.keys, ',', absl::SkipEmpty())) {
    keys.emplace_back(k);
  }
  std::unique_ptr<Client> client = Connect("estimates", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<std::vector<QuestionEstimate>> estimates = client->GetEstimates(args.run_id, keys);
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

int Stats(const InspectArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("stats", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<RunStats> stats = client->GetRunStats(args.run_id);
  if (!stats.ok()) return Fail(stats.status());
  PrintJson(RunStatsToJson(*stats));
  return 0;
}

}  // namespace

void AddInspectionCommands(CLI::App* app, const Connection* connection, cli::Action* action) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* estimates = AddNetworkedCommand(
      app, "estimates", "print the success-rate estimates of a run's questions, one JSON line each",
      "Prints the current success-rate estimate of every question (pool order) or of the given "
      "keys (that order), one JSON line each:\n"
      "  {\"key\", \"p_hat\", \"observations\", \"last_policy_version\"}\n"
      "last_policy_version is -1 for a question never observed.",
      kTimeoutSeconds);
  estimates->add_option("RUN", args->run_id, "run id")->required();
  estimates->add_option("--keys", args->keys, "comma-separated question keys (default: all)");
  RunsWith(estimates, action, args, connection, Estimates);

  CLI::App* stats = AddNetworkedCommand(
      app, "stats", "print a run's counters and gauges",
      "Prints the run's counters and gauges as one object:\n"
      "  {\"step\", \"round\", \"pool_size\", \"reported_groups\", "
      "\"effective_ratio_last_step\",\n"
      "   \"replay_groups\", \"replay_bytes\", \"leases_outstanding\", \"leases_expired\",\n"
      "   \"duplicate_reports\", \"rejected_reports\", \"effective_groups\", "
      "\"solve_all_groups\",\n"
      "   \"solve_none_groups\", \"replayed_groups\", \"rounds_planned\", "
      "\"last_planning_seconds\",\n"
      "   \"policy_version\", \"model_version\", \"model_labels\", \"model_training_loss\",\n"
      "   \"model_training_seconds\", \"model_out_of_sample_pearson\"}\n"
      "step and round are those of the latest batch issued (-1 before the first).",
      kTimeoutSeconds);
  stats->add_option("RUN", args->run_id, "run id")->required();
  RunsWith(stats, action, args, connection, Stats);
}

}  // namespace dots::dotsctl
