// A dots-server child process for the tests that kill, stop or starve the real binary (the
// dots-server built next to the test binary, or another one), and for the soak benchmark. The
// server picks its own ports (127.0.0.1:0) and reports them on stdout; nothing is reserved in
// advance, so concurrent tests cannot take each other's ports.
#ifndef DOTS_TESTS_SERVER_SERVER_PROCESS_H_
#define DOTS_TESTS_SERVER_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace dots::testing {

class ServerProcess {
 public:
  // Starts `BINARY --listen=127.0.0.1:0 --metrics_listen= <flags...>` (BINARY: `binary`, else
  // the dots-server next to this program) and reads what it prints once serving: address() from
  // "dots-server listening on HOST:PORT", and metrics_port() from "dots-server metrics on
  // HOST:PORT" when `flags` give a --metrics_listen of their own (127.0.0.1:0 picks a port).
  // address() is empty when the binary is missing or did not start. Blocks until then.
  explicit ServerProcess(const std::vector<std::string>& flags, std::string binary = "") {
    if (binary.empty()) {
      binary =
          (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "dots-server").string();
    }
    bool metrics = false;
    for (const std::string& flag : flags) {
      if (absl::StartsWith(flag, "--metrics_listen=")) metrics = flag != "--metrics_listen=";
    }
    std::vector<std::string> args = {binary, "--listen=127.0.0.1:0", "--metrics_listen="};
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
    address_ = ReadAddress(stdout_of_server, "dots-server listening on ");
    if (metrics && !address_.empty()) {
      const std::string at = ReadAddress(stdout_of_server, "dots-server metrics on ");
      if (const size_t colon = at.rfind(':'); colon != std::string::npos) {
        metrics_port_ = std::atoi(at.c_str() + colon + 1);
      }
    }
    fclose(stdout_of_server);
  }
  ~ServerProcess() { Kill(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  const std::string& address() const { return address_; }
  // The /metrics port, 0 unless the flags asked for metrics and the server reported the port.
  int metrics_port() const { return metrics_port_; }
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
  // The rest of the next line of `in` when it starts with `prefix`, else "".
  static std::string ReadAddress(FILE* in, const std::string& prefix) {
    char line[256] = {0};
    if (fgets(line, sizeof(line), in) == nullptr || !absl::StartsWith(line, prefix)) return "";
    std::string address = std::string(line).substr(prefix.size());
    address.erase(address.find_last_not_of("\r\n") + 1);
    return address;
  }

  pid_t pid_ = -1;
  int exit_status_ = 0;
  int metrics_port_ = 0;
  std::string address_;
};

}  // namespace dots::testing

#endif  // DOTS_TESTS_SERVER_SERVER_PROCESS_H_
