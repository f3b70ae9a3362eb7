// Deterministic binary payloads for the client tests (every byte value occurs, NULs included).
#ifndef DOTS_TESTS_CLIENT_TEST_PAYLOAD_H_
#define DOTS_TESTS_CLIENT_TEST_PAYLOAD_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace dots {

// `n` pseudo-random bytes from a xorshift32 stream seeded by `seed`.
inline std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x & 0xff);
  }
  return s;
}

}  // namespace dots

#endif  // DOTS_TESTS_CLIENT_TEST_PAYLOAD_H_
