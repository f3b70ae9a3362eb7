// dotsctl: the command-line tool of dots.
#include <cstdio>
#include <string>

#include "client/dotsctl/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: dotsctl COMMAND [flags]\n\n"
    "commands:\n"
    "  estimate   predict every question's success rate offline from labeled outcomes (no\n"
    "             server needed): try an adapter on your own data before a run\n\n"
    "Run `dotsctl COMMAND --help` for the flags of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "estimate") return dots::dotsctl::Estimate(argc, argv);
  std::fprintf(stderr, "dotsctl: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
