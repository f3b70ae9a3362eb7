// dotsctl's subcommands, registered on the CLI11 app of main.cc:
//
//   estimate                                   offline estimation (estimate.cc)
//   run create | get | list | delete | export | import    (run_cmd.cc)
//   pool load | import                                     (pool_cmd.cc)
//   next, report                                           (train_cmd.cc)
//   estimates, stats                                       (inspect_cmd.cc)
//   cluster list | rebalance                               (cluster_cmd.cc, placement.h)
//
// Every networked command talks to a dots-server through dots::Client with the connection flags
// of the root app (given before or after the command). Exit codes: 0 success, 1 failure (the
// gRPC code and message on stderr), 2 usage error (client/cli/cli.h).
#ifndef DOTS_CLIENT_DOTSCTL_COMMANDS_H_
#define DOTS_CLIENT_DOTSCTL_COMMANDS_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "client/cli/cli.h"
#include "client/cpp/client.h"

namespace dots::dotsctl {

// The help group of the connection flags (cli::Formatter shows it under every networked command).
inline constexpr char kConnectionGroup[] = "Connection flags (before or after the command)";

// The connection flags, filled by parsing.
struct Connection {
  std::string server;                        // --server, else $DOTS_SERVER, else 127.0.0.1:50051
  std::string token;                         // --token, else $DOTS_TOKEN
  bool tls = false;                          // --tls
  std::string ca_file, cert_file, key_file;  // --ca_file etc., else $DOTS_CA_FILE etc.
  bool json = false;                         // --json (machine output: always)
  double timeout_seconds = 0;                // --timeout; 0 = the command's default
};

// Declares the connection flags on the root app.
void AddConnectionFlags(CLI::App* app, Connection* connection);

// A networked subcommand of `parent` (cli::AddCommand): it falls through to the root for the
// connection flags, and its help states `default_timeout_seconds` after `details`.
CLI::App* AddNetworkedCommand(CLI::App* parent, const std::string& name, const std::string& summary,
                              const std::string& details, double default_timeout_seconds);

void AddEstimateCommand(CLI::App* app, cli::Action* action);
// `dotsctl adapter train` (adapter_cmd.cc): offline training of the paper adapter.
void AddAdapterCommands(CLI::App* app, cli::Action* action);
void AddRunCommands(CLI::App* app, const Connection* connection, cli::Action* action);
void AddPoolCommands(CLI::App* app, const Connection* connection, cli::Action* action);
void AddTrainingCommands(CLI::App* app, const Connection* connection, cli::Action* action);
void AddInspectionCommands(CLI::App* app, const Connection* connection, cli::Action* action);
// `dotsctl cluster list|rebalance` (cluster_cmd.cc): runs across the replicas of a cluster.
void AddClusterCommands(CLI::App* app, const Connection* connection, cli::Action* action);

// Makes `command`, when the command line selects it, store in *action a call of
// run(*args, *connection) (run after parsing, with every flag in place).
template <typename Args>
void RunsWith(CLI::App* command, cli::Action* action, std::shared_ptr<Args> args,
              const Connection* connection, int (*run)(const Args&, const Connection&)) {
  cli::RunsWhenSelected(command, action,
                        [args, connection, run] { return run(*args, *connection); });
}

// A client for `connection`, with `default_timeout_seconds` unless --timeout was given; nullptr
// after printing a usage error naming `command` (then exit with 2): an unreadable TLS file.
std::unique_ptr<Client> Connect(const std::string& command, const Connection& connection,
                                double default_timeout_seconds);

// Prints "dotsctl: CODE: message" to stderr (CODE as in NOT_FOUND) and returns 1.
int Fail(const absl::Status& status);
// Prints "dotsctl COMMAND: message (see dotsctl COMMAND --help)" to stderr and returns 2.
int UsageError(const std::string& command, std::string_view message);
// Writes `json` and a newline to stdout.
void PrintJson(const std::string& json);

}  // namespace dots::dotsctl

#endif  // DOTS_CLIENT_DOTSCTL_COMMANDS_H_
