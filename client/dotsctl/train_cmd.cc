// dotsctl next / report: the training protocol from the shell (what a trainer rank does at every
// step), for scripts, smoke tests and debugging a run.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/dotsctl/commands.h"
#include "client/dotsctl/json_format.h"
#include "core/util/file_util.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 60;

// Reads a report file: every non-blank line must parse, else INVALID_ARGUMENT naming file:line.
absl::StatusOr<std::vector<RolloutReport>> ReadReportFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::vector<RolloutReport> groups;
  size_t start = 0;
  for (int64_t line_no = 1; start < text->size(); ++line_no) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    std::string_view line(text->data() + start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    absl::StatusOr<RolloutReport> group = ParseReportLine(line);
    if (!group.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: %s", path, line_no, std::string(group.status().message())));
    }
    groups.push_back(std::move(*group));
  }
  return groups;
}

struct NextArgs {
  std::string run_id;
  int64_t step = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t policy_version = 0;
};

int Next(const NextArgs& args, const Connection& connection) {
  if (args.rank >= args.world_size) {
    return UsageError(
        "next", absl::StrFormat("--rank: %d is outside [0, %d]", args.rank, args.world_size - 1));
  }
  std::unique_ptr<Client> client = Connect("next", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<BatchSlice> slice =
      client->NextBatch(args.run_id, args.step, static_cast<int>(args.rank),
                        static_cast<int>(args.world_size), args.policy_version);
  if (!slice.ok()) return Fail(slice.status());
  PrintJson(BatchSliceToJson(args.run_id, *slice));
  return 0;
}

struct ReportArgs {
  std::string run_id;
  int64_t step = 0;
  std::string file;
};

int Report(const ReportArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("report", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<std::vector<RolloutReport>> groups = ReadReportFile(args.file);
  if (!groups.ok()) return Fail(groups.status());
  absl::StatusOr<ReportResult> result = client->ReportRollouts(args.run_id, args.step, *groups);
  if (!result.ok()) return Fail(result.status());
  PrintJson(ReportResultToJson(*result));
  return 0;
}

}  // namespace

void AddTrainingCommands(CLI::App* app, const Connection* connection, cli::Action* action) {
  constexpr int64_t kMaxStep = int64_t{1} << 53, kMaxInt = 2147483647;
  auto next_args = std::make_shared<NextArgs>();
  CLI::App* next = AddNetworkedCommand(
      app, "next", "fetch a rank's slice of a step's batch",
      "Fetches rank R of W's slice of step S's batch (what a trainer rank does before its "
      "rollouts); the same step returns the same batch to every retry. Waits up to --timeout "
      "while the step's round is planned. Prints one object:\n"
      "  {\"run_id\", \"step\", \"round\", \"reference_batch\", \"batch_size\",\n"
      "   \"items\": [{\"key\", \"role\": \"fresh\"|\"reference\", \"prompt\", "
      "\"metadata\"}],\n"
      "   \"replay\": [{\"key\", \"step\", \"policy_version\", \"rewards\": [...], "
      "\"payload_b64\"}]}\n"
      "metadata is the question's JSON value; payload_b64 is standard base64 with padding. "
      "reference_batch true (paper reference mode): roll the items out, report them, then ask "
      "for the step again.",
      kTimeoutSeconds);
  next->add_option("RUN", next_args->run_id, "run id")->required();
  next->add_option("--step", next_args->step, "training step")
      ->required()
      ->check(CLI::Range(int64_t{0}, kMaxStep));
  next->add_option("--rank", next_args->rank, "this rank, in [0, world-size)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, kMaxInt));
  next->add_option("--world-size", next_args->world_size, "number of ranks")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, kMaxInt));
  next->add_option("--policy-version", next_args->policy_version,
                   "version of the policy that will roll the batch out")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, kMaxStep));
  RunsWith(next, action, next_args, connection, Next);

  auto report_args = std::make_shared<ReportArgs>();
  CLI::App* report = AddNetworkedCommand(
      app, "report", "report the rollout groups of a step from a JSONL file",
      "Reports the rollout groups of step S, one per line of FILE.jsonl:\n"
      "  {\"key\": ..., \"rewards\": [r1, ..., rG], \"policy_version\": v, \"payload_b64\": "
      "\"...\"}\n"
      "(key and rewards required; policy_version defaults to 0, payload_b64 to empty). A "
      "malformed line fails the command naming the line, and nothing is sent. Idempotent per "
      "step and key: a repeated group counts as a duplicate. Prints\n"
      "  {\"accepted\": n, \"duplicates\": n, \"rejected\": [{\"key\", \"error\"}]}",
      kTimeoutSeconds);
  report->add_option("RUN", report_args->run_id, "run id")->required();
  report->add_option("--step", report_args->step, "training step the groups were handed out at")
      ->required()
      ->check(CLI::Range(int64_t{0}, kMaxStep));
  report->add_option("--file", report_args->file, "report JSONL (a file; stdin is not supported)")
      ->required();
  RunsWith(report, action, report_args, connection, Report);
}

}  // namespace dots::dotsctl
