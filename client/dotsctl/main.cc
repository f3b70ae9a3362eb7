// dotsctl: the command-line tool of dots.
#include <cstdio>
#include <string>
#include <vector>

#include "client/dotsctl/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: dotsctl COMMAND [args] [flags]\n\n"
    "offline (no server needed):\n"
    "  estimate   predict every question's success rate offline from labeled outcomes: try an\n"
    "             adapter on your own data before a run\n"
    "  adapter train --questions Q.jsonl --labels L.jsonl --out A.safetensors\n"
    "             train the paper's difficulty adapter on labeled pass rates\n\n"
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
    "  pool import RUN --questions PATH       the same from files on the server\n\n"
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
    "Flags of every networked command (before or after the command):\n"
    "  --server HOST:PORT   dots-server address (default $DOTS_SERVER, else 127.0.0.1:50051)\n"
    "  --token TOKEN        bearer token (default $DOTS_TOKEN)\n"
    "  --tls                TLS with the system's CA roots\n"
    "  --ca_file FILE       TLS, trusting the PEM CA certificates in FILE (default $DOTS_CA_FILE)\n"
    "  --cert_file FILE     client certificate for mutual TLS (default $DOTS_CERT_FILE)\n"
    "  --key_file FILE      its private key (default $DOTS_KEY_FILE)\n"
    "  --timeout SECONDS    deadline of each call, retries included\n"
    "  --json               machine output (the shapes above; also the default)\n\n"
    "Exit status: 0 success; 1 failure, with the gRPC status code and message on stderr\n"
    "(e.g. `dotsctl: NOT_FOUND: ...`); 2 usage error.\n"
    "Run `dotsctl COMMAND --help` for a command's flags and output.\n";

}  // namespace

int main(int argc, char** argv) {
  // Connection flags given before the command move behind it, where the command parses them.
  std::vector<char*> args = {argv[0]};
  std::vector<char*> globals;
  int i = 1;
  while (i < argc) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) break;
    const std::string name =
        arg.substr(2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2);
    if (!dots::dotsctl::IsConnectionFlag(name)) break;
    globals.push_back(argv[i++]);
    if (arg.find('=') == std::string::npos && !dots::dotsctl::IsBoolConnectionFlag(name) &&
        i < argc) {
      globals.push_back(argv[i++]);
    }
  }
  for (; i < argc; ++i) args.push_back(argv[i]);
  args.insert(args.end(), globals.begin(), globals.end());
  const int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  char** v = args.data();

  if (n < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = v[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "estimate") return dots::dotsctl::Estimate(n, v);
  if (command == "adapter") return dots::dotsctl::AdapterCommand(n, v);
  if (command == "run") return dots::dotsctl::RunCommand(n, v);
  if (command == "pool") return dots::dotsctl::PoolCommand(n, v);
  if (command == "next") return dots::dotsctl::NextCommand(n, v);
  if (command == "report") return dots::dotsctl::ReportCommand(n, v);
  if (command == "estimates") return dots::dotsctl::EstimatesCommand(n, v);
  if (command == "stats") return dots::dotsctl::StatsCommand(n, v);
  std::fprintf(stderr, "dotsctl: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
