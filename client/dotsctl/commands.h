// dotsctl subcommands. Each takes the full argv (argv[1] is the subcommand) and returns the
// process exit code: 0 success, 1 failure (message on stderr), 2 usage error.
#ifndef DOTS_CLIENT_DOTSCTL_COMMANDS_H_
#define DOTS_CLIENT_DOTSCTL_COMMANDS_H_

namespace dots::dotsctl {

// `dotsctl estimate`: offline p_hat for every pool question from labeled outcomes.
int Estimate(int argc, char** argv);

}  // namespace dots::dotsctl

#endif  // DOTS_CLIENT_DOTSCTL_COMMANDS_H_
