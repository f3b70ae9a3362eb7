// The command-line conventions of dotsctl and dots-bench on top of CLI11 (Debian libcli11-dev):
// subcommands, `--help` per command, usage errors and exit codes.
//
//   exit 0   the command succeeded, or --help (of any command, or `help`) printed its help
//   exit 1   the command failed (the command prints why)
//   exit 2   a usage error: "PROGRAM COMMAND: message (see PROGRAM COMMAND --help)" on stderr;
//            a command that needs a subcommand and got none also prints its help there
#ifndef DOTS_CLIENT_CLI_CLI_H_
#define DOTS_CLIENT_CLI_CLI_H_

#include <functional>
#include <string>

#include "CLI/CLI.hpp"

namespace dots::cli {

// What a parsed command line runs: a subcommand's callback stores it; it returns the exit code.
using Action = std::function<int()>;

// Formats help as CLI11 does, and shows the root's options of group `shared_group` in the help
// of every leaf subcommand that falls through to the root (they may be given before or after
// the command there). Install with app.formatter(...) before adding subcommands: they inherit it.
class Formatter : public CLI::Formatter {
 public:
  explicit Formatter(std::string shared_group) : shared_group_(std::move(shared_group)) {}
  std::string make_footer(const CLI::App* app) const override;

 private:
  const std::string shared_group_;
};

// A subcommand of `parent`, listed in the parent's help with its one-line `summary`; its own help
// (`PROGRAM ... NAME --help`) shows the summary, its flags and then `details`.
CLI::App* AddCommand(CLI::App* parent, const std::string& name, const std::string& summary,
                     const std::string& details = "");

// Makes `command`, when the command line selects it, store `run` in *action (main runs it once
// parsing succeeded, with every flag in place).
void RunsWhenSelected(CLI::App* command, Action* action, Action run);

// Adds a hidden `help` subcommand to `parent` that prints the parent's help (`dotsctl help`,
// `dotsctl run help`); it sets *action.
void AddHelpCommand(CLI::App* parent, Action* action);

// Parses argv with `app`, then runs *action (set by the callback of the selected subcommand).
// Help and usage errors as in the file comment; a selected subcommand that set no action prints
// its help on stderr and exits 2. Blocks for as long as the action runs.
int ParseAndRun(CLI::App& app, int argc, char** argv, const Action* action);

}  // namespace dots::cli

#endif  // DOTS_CLIENT_CLI_CLI_H_
