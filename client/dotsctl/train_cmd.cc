// dotsctl next / report: the training protocol from the shell (what a trainer rank does at every
// step), for scripts, smoke tests and debugging a run.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/cpp/json_format.h"
#include "client/dotsctl/commands.h"
#include "core/util/file_util.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 60;

// An integer flag, or the usage error to return.
std::optional<int> IntFlag(const std::string& command, const cli::FlagSet& flags,
                           const std::string& name, int64_t lo, int64_t hi, int64_t* out) {
  absl::StatusOr<int64_t> v = flags.GetInt(name);
  if (!v.ok()) return UsageError(command, std::string(v.status().message()));
  if (*v < lo || *v > hi) {
    return UsageError(command, absl::StrFormat("--%s: %d is outside [%d, %d]", name, *v, lo, hi));
  }
  *out = *v;
  return std::nullopt;
}

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

}  // namespace

int NextCommand(int argc, char** argv) {
  cli::FlagSet flags(
      "dotsctl next RUN --step S [--rank R] [--world-size W] [--policy-version V]",
      "Fetches rank R of W's slice of step S's batch (what a trainer rank does before its\n"
      "rollouts); the same step returns the same batch to every retry. Waits up to --timeout\n"
      "while the step's round is planned. Prints one object:\n"
      "  {\"run_id\", \"step\", \"round\", \"reference_batch\", \"batch_size\",\n"
      "   \"items\": [{\"key\", \"role\": \"fresh\"|\"reference\", \"prompt\", \"metadata\"}],\n"
      "   \"replay\": [{\"key\", \"step\", \"policy_version\", \"rewards\": [...], "
      "\"payload_b64\"}]}\n"
      "metadata is the question's JSON value; payload_b64 is standard base64 with padding.\n"
      "reference_batch true (paper reference mode): roll the items out, report them, then ask\n"
      "for the step again.");
  flags.Add("step", "training step, >= 0");
  flags.Add("rank", "this rank", "0");
  flags.Add("world-size", "number of ranks", "1");
  flags.Add("policy-version", "version of the policy that will roll the batch out", "0");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 2, {});
  if (std::optional<int> exit = ParseCommandLine("next", args, 1, &flags)) return *exit;
  if (!flags.Has("step")) return UsageError("next", "--step is required");
  int64_t step = 0, rank = 0, world = 1, version = 0;
  constexpr int64_t kMaxInt = 2147483647, kMaxStep = int64_t{1} << 53;
  if (auto e = IntFlag("next", flags, "step", 0, kMaxStep, &step)) return *e;
  if (auto e = IntFlag("next", flags, "world-size", 1, kMaxInt, &world)) return *e;
  if (auto e = IntFlag("next", flags, "rank", 0, world - 1, &rank)) return *e;
  if (auto e = IntFlag("next", flags, "policy-version", 0, kMaxStep, &version)) return *e;
  std::unique_ptr<Client> client = Connect("next", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<BatchSlice> slice = client->NextBatch(
      args.positionals[0], step, static_cast<int>(rank), static_cast<int>(world), version);
  if (!slice.ok()) return Fail(slice.status());
  PrintJson(BatchSliceToJson(args.positionals[0], *slice));
  return 0;
}

int ReportCommand(int argc, char** argv) {
  cli::FlagSet flags(
      "dotsctl report RUN --step S --file FILE.jsonl",
      "Reports the rollout groups of step S, one per line of FILE.jsonl:\n"
      "  {\"key\": ..., \"rewards\": [r1, ..., rG], \"policy_version\": v, \"payload_b64\": "
      "\"...\"}\n"
      "(key and rewards required; policy_version defaults to 0, payload_b64 to empty). A\n"
      "malformed line fails the command naming the line, and nothing is sent. Idempotent per\n"
      "step and key: a repeated group counts as a duplicate. Prints\n"
      "  {\"accepted\": n, \"duplicates\": n, \"rejected\": [{\"key\", \"error\"}]}");
  flags.Add("step", "training step the groups were handed out at, >= 0");
  flags.Add("file", "report JSONL (- for stdin is not supported; use a file)");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 2, {});
  if (std::optional<int> exit = ParseCommandLine("report", args, 1, &flags)) return *exit;
  if (!flags.Has("step")) return UsageError("report", "--step is required");
  if (!flags.Has("file")) return UsageError("report", "--file is required");
  int64_t step = 0;
  if (auto e = IntFlag("report", flags, "step", 0, int64_t{1} << 53, &step)) return *e;
  std::unique_ptr<Client> client = Connect("report", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<std::vector<RolloutReport>> groups = ReadReportFile(flags.Get("file"));
  if (!groups.ok()) return Fail(groups.status());
  absl::StatusOr<ReportResult> result = client->ReportRollouts(args.positionals[0], step, *groups);
  if (!result.ok()) return Fail(result.status());
  PrintJson(ReportResultToJson(*result));
  return 0;
}

}  // namespace dots::dotsctl
