// dotsctl subcommands. Each takes the full argv (argv[1] is the subcommand) and returns the
// process exit code: 0 success, 1 failure (message on stderr), 2 usage error.
#ifndef DOTS_CLIENT_DOTSCTL_COMMANDS_H_
#define DOTS_CLIENT_DOTSCTL_COMMANDS_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli/flags.h"
#include "client/cpp/client.h"

namespace dots::dotsctl {

// `dotsctl estimate`: offline p_hat for every pool question from labeled outcomes.
int Estimate(int argc, char** argv);
// `dotsctl adapter train`: offline training of the paper adapter (adapter_cmd.cc).
int AdapterCommand(int argc, char** argv);

// Networked subcommands (talk to a dots-server through dots::Client).
int RunCommand(int argc, char** argv);        // run create|get|list|delete (run_cmd.cc)
int PoolCommand(int argc, char** argv);       // pool load|import (pool_cmd.cc)
int NextCommand(int argc, char** argv);       // next (train_cmd.cc)
int ReportCommand(int argc, char** argv);     // report (train_cmd.cc)
int EstimatesCommand(int argc, char** argv);  // estimates (inspect_cmd.cc)
int StatsCommand(int argc, char** argv);      // stats (inspect_cmd.cc)

// ---- shared by the networked subcommands (remote.cc) ----

// Names of the flags every networked command accepts, for main.cc to move them from before the
// command to after it ("dotsctl --server X run list" == "dotsctl run list --server X").
bool IsConnectionFlag(std::string_view name);
bool IsBoolConnectionFlag(std::string_view name);

// Declares --server (default $DOTS_SERVER, else 127.0.0.1:50051), --token (default $DOTS_TOKEN),
// --json and --timeout (seconds per call, `default_timeout_seconds` unless given).
void AddConnectionFlags(cli::FlagSet* flags, double default_timeout_seconds);

// A client for the flags of AddConnectionFlags. INVALID_ARGUMENT for a bad --timeout.
absl::StatusOr<std::unique_ptr<Client>> ConnectFromFlags(const cli::FlagSet& flags);
// The same, or nullptr after printing a usage error naming `command` (then exit with 2).
std::unique_ptr<Client> Connect(const std::string& command, const cli::FlagSet& flags);

// Parsed command line of a subcommand with positional arguments: argv[first..) minus the
// positionals, which FlagSet does not take. A `--name` without '=' that is not a boolean flag
// consumes the next argument as its value.
struct SplitArgs {
  std::vector<std::string> positionals;
  std::vector<char*>
      flag_argv;  // argv[0] followed by the flag arguments, for FlagSet::Parse(.., 1)
};
SplitArgs SplitPositionals(int argc, char** argv, int first,
                           const std::vector<std::string>& bool_flags);

// Parses `args` into `flags` and checks that there are exactly `positionals` positionals.
// Returns nullopt to go on, or the exit code to return now: 0 after printing --help, 2 after
// printing a usage error naming `command` (e.g. "run create").
std::optional<int> ParseCommandLine(const std::string& command, const SplitArgs& args,
                                    size_t positionals, cli::FlagSet* flags);

// Prints "dotsctl: CODE: message" to stderr (CODE as in NOT_FOUND) and returns 1.
int Fail(const absl::Status& status);
// Prints "dotsctl COMMAND: message" and a hint to stderr and returns 2.
int UsageError(const std::string& command, std::string_view message);
// Writes `json` and a newline to stdout.
void PrintJson(const std::string& json);

}  // namespace dots::dotsctl

#endif  // DOTS_CLIENT_DOTSCTL_COMMANDS_H_
