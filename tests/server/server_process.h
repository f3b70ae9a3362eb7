// A dots-server child process for the tests that kill, stop or starve the real binary (the
// dots-server built next to the test binary).
#ifndef DOTS_TESTS_SERVER_SERVER_PROCESS_H_
#define DOTS_TESTS_SERVER_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace dots::testing {

class ServerProcess {
 public:
  // Starts `dots-server --listen=127.0.0.1:0 --metrics_listen= <flags...>` and reads its first
  // line of stdout. address() is empty when the binary is missing or did not print
  // "dots-server listening on HOST:PORT". Blocks until then (the server's start-up).
  explicit ServerProcess(const std::vector<std::string>& flags) {
    const std::filesystem::path binary =
        std::filesystem::read_symlink("/proc/self/exe").parent_path() / "dots-server";
    std::vector<std::string> args = {binary.string(), "--listen=127.0.0.1:0", "--metrics_listen="};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* stdout_of_server = fdopen(out[0], "r");
    char line[256] = {0};
    const std::string prefix = "dots-server listening on ";
    if (fgets(line, sizeof(line), stdout_of_server) != nullptr && absl::StartsWith(line, prefix)) {
      address_ = std::string(line).substr(prefix.size());
      address_.erase(address_.find_last_not_of("\r\n") + 1);
    }
    fclose(stdout_of_server);
  }
  ~ServerProcess() { Kill(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

  // True while the process has not exited. Never blocks.
  bool Alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t reaped = waitpid(pid_, &status, WNOHANG);
    if (reaped == 0) return true;
    pid_ = -1;
    exit_status_ = status;
    return false;
  }
  // SIGKILL and reap. Returns true if the signal killed it (it was still running).
  bool Kill() {
    if (pid_ <= 0) return false;
    kill(pid_, SIGKILL);
    return WIFSIGNALED(Wait()) && WTERMSIG(exit_status_) == SIGKILL;
  }
  // Sends `signal` and returns at once.
  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }
  // Blocks until the process exits; returns its waitpid status (also after an earlier reap).
  int Wait() {
    if (pid_ > 0) {
      waitpid(pid_, &exit_status_, 0);
      pid_ = -1;
    }
    return exit_status_;
  }

 private:
  pid_t pid_ = -1;
  int exit_status_ = 0;
  std::string address_;
};

}  // namespace dots::testing

#endif  // DOTS_TESTS_SERVER_SERVER_PROCESS_H_
