// Observing a server from outside, for the tests and the soak benchmark: a plain HTTP/1.0 GET of
// its /metrics and one value from it, and polling for a state the test is not notified of.
#ifndef DOTS_TESTS_SERVER_OBSERVE_H_
#define DOTS_TESTS_SERVER_OBSERVE_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <sstream>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dots::testing {

// GET http://127.0.0.1:port/path (default /metrics) over HTTP/1.0 (the server closes the
// connection, so the body is everything after the headers). Empty on any socket error.
inline std::string HttpGet(int port, const std::string& path = "/metrics") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

// Checks `condition` every 5 ms until it holds or `timeout` passed; whether it held. Blocks.
inline bool PollUntil(const std::function<bool()>& condition,
                      absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// The value of the unlabelled metric `name` on the /metrics of 127.0.0.1:`port`; nullopt when
// the scrape fails or does not have it.
inline std::optional<double> ScrapeValue(int port, const std::string& name) {
  std::istringstream body(HttpGet(port));
  const std::string prefix = name + " ";
  for (std::string line; std::getline(body, line);) {
    if (line.compare(0, prefix.size(), prefix) == 0) return std::atof(line.c_str() + prefix.size());
  }
  return std::nullopt;
}

}  // namespace dots::testing

#endif  // DOTS_TESTS_SERVER_OBSERVE_H_
