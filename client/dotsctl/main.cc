// dotsctl: the command-line tool of dots (subcommands in commands.h, parsing by CLI11).
#include <memory>

#include "client/cli/cli.h"
#include "client/dotsctl/commands.h"

namespace {

// What each command prints: scripts rely on these shapes.
constexpr char kOverview[] =
    "Commands and what they print (one line of JSON unless said otherwise):\n\n"
    "offline (no server needed):\n"
    "  estimate --questions Q.jsonl --labels L.jsonl ...\n"
    "                                         JSON lines {\"key\", \"p_hat\"}: an adapter tried "
    "on your\n"
    "                                         own data before a run\n"
    "  adapter train --questions Q.jsonl --labels L.jsonl --out A.safetensors\n"
    "                                         JSON summary {\"out\", \"epochs\", \"train_loss\",\n"
    "                                         \"reports\", ...}; progress on stderr\n\n"
    "runs and pools:\n"
    "  run create RUN [--config FILE.json]    {\"run_id\", \"config\": {...}[, \"token\"]}\n"
    "  run get RUN                            {\"run_id\", \"config\", \"pool_size\", ...}\n"
    "  run list                               {\"runs\": [...]}\n"
    "  run delete RUN                         {\"run_id\", \"deleted\": true}\n"
    "  run export RUN --out FILE              {\"run_id\", \"file\", \"bytes\"}\n"
    "  run import FILE [--as RUN]             as run get\n"
    "  pool load RUN --questions F.jsonl [--embeddings F.npy]\n"
    "                                         {\"added\", \"updated\", \"rejected\": [{\"line\", "
    "\"error\"}]}\n"
    "  pool import RUN --questions PATH       {\"questions_read\", \"added\", \"updated\"}, from "
    "files\n"
    "                                         on the server\n\n"
    "training:\n"
    "  next RUN --step S [--rank R] [--world-size W] [--policy-version V]\n"
    "                                         {\"run_id\", \"step\", \"round\", \"items\", "
    "\"replay\", ...}\n"
    "  report RUN --step S --file F.jsonl     {\"accepted\", \"duplicates\", \"rejected\"}\n\n"
    "inspection:\n"
    "  estimates RUN [--keys k1,k2]           JSON lines {\"key\", \"p_hat\", \"observations\",\n"
    "                                         \"last_policy_version\"}\n"
    "  stats RUN                              {\"step\", \"round\", \"pool_size\", "
    "\"reported_groups\", ...}\n\n"
    "cluster (replicas behind the HAProxy router of deploy/haproxy):\n"
    "  cluster list --servers A,B,C           {\"runs\": [{\"run_id\", \"owner\", \"copies\"}], "
    "\"servers\", ...}\n"
    "  cluster rebalance --servers A,B,C,D    {\"moved\": [...], \"actions\", \"unchanged\", "
    "\"conflicts\"}\n\n"
    "Environment: DOTS_SERVER, DOTS_TOKEN, DOTS_CA_FILE, DOTS_CERT_FILE, DOTS_KEY_FILE are the\n"
    "defaults of --server, --token, --ca_file, --cert_file, --key_file.\n"
    "Exit status: 0 success; 1 failure, with the gRPC status code and message on stderr\n"
    "(e.g. `dotsctl: NOT_FOUND: ...`); 2 usage error.\n"
    "Run `dotsctl COMMAND --help` for a command's flags and output.";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dotsctl: drive and inspect runs of a dots-server from the shell.", "dotsctl");
  app.formatter(std::make_shared<dots::cli::Formatter>(dots::dotsctl::kConnectionGroup));
  app.footer(kOverview);
  app.require_subcommand(1);
  dots::cli::Action action;
  dots::dotsctl::Connection connection;
  dots::dotsctl::AddConnectionFlags(&app, &connection);
  dots::dotsctl::AddEstimateCommand(&app, &action);
  dots::dotsctl::AddAdapterCommands(&app, &action);
  dots::dotsctl::AddRunCommands(&app, &connection, &action);
  dots::dotsctl::AddPoolCommands(&app, &connection, &action);
  dots::dotsctl::AddTrainingCommands(&app, &connection, &action);
  dots::dotsctl::AddInspectionCommands(&app, &connection, &action);
  dots::dotsctl::AddClusterCommands(&app, &connection, &action);
  dots::cli::AddHelpCommand(&app, &action);
  return dots::cli::ParseAndRun(app, argc, argv, &action);
}
