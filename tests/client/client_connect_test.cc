// dots::Client over a connection whose handshake is slow (a loaded machine, a long link): it
// must wait for the connection, however short its own retry backoff. A TCP proxy on loopback
// holds every new connection for a while before it forwards it to a real in-process server.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cpp/client.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"

namespace dots {
namespace {

// A socket connected to (or, with listen, listening on) 127.0.0.1:`port`; -1 on failure.
int LoopbackSocket(int port, bool listen_on_it) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = listen_on_it ? bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                                     listen(fd, 16) == 0
                               : connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (!ok) {
    close(fd);
    return -1;
  }
  return fd;
}

// Forwards each connection to 127.0.0.1:`target_port` after holding it for `delay`: the
// client's HTTP/2 handshake cannot complete before then.
class SlowProxy {
 public:
  SlowProxy(int target_port, absl::Duration delay) : target_port_(target_port), delay_(delay) {
    listener_ = LoopbackSocket(0, /*listen_on_it=*/true);
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~SlowProxy() {
    stop_ = true;
    shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    for (std::thread& t : pipes_) t.join();
    close(listener_);
  }
  int port() const { return port_; }

 private:
  void Accept() {
    while (!stop_) {
      const int client = accept(listener_, nullptr, nullptr);
      if (client < 0) return;
      pipes_.emplace_back([this, client] { Pipe(client); });
    }
  }
  // Holds, then copies bytes both ways until either side closes or the proxy stops.
  void Pipe(int client) {
    absl::SleepFor(delay_);
    const int server = LoopbackSocket(target_port_, /*listen_on_it=*/false);
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    char buffer[65536];
    while (server >= 0 && !stop_ && poll(fds, 2, 100) >= 0) {
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
        closed = n <= 0 || write(fds[1 - i].fd, buffer, static_cast<size_t>(n)) != n;
      }
      if (closed) break;
    }
    if (server >= 0) close(server);
    close(client);
  }

  const int target_port_;
  const absl::Duration delay_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> pipes_;  // only the acceptor adds; joined after it
};

TEST(ClientConnectTest, WaitsForASlowHandshakeWhateverItsBackoff) {
  std::unique_ptr<Server> server = testing::StartTestServer(testing::TestOptions());
  ASSERT_NE(server, nullptr);
  SlowProxy proxy(server->port(), absl::Milliseconds(600));
  // Backoff far shorter than the handshake: each attempt must still give the connection time.
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = absl::StrCat("127.0.0.1:", proxy.port()),
                      .default_deadline = absl::Seconds(20),
                      .max_attempts = 3,
                      .initial_backoff = absl::Milliseconds(10),
                      .max_backoff = absl::Milliseconds(40)});
  ASSERT_TRUE(client.ok()) << client.status();
  int attempts = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<RunInfo>> runs = (*client)->ListRuns({.attempts = &attempts});
  EXPECT_TRUE(runs.ok()) << runs.status() << " after " << attempts << " attempts";
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(550));  // it did go through the proxy
  client->reset();
  server->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace dots
