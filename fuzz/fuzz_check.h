// What the fuzz targets share: FUZZ_CHECK, an invariant that must hold for every input. A
// violation prints what broke and aborts, which libFuzzer reports as a crash and saves the input.
#ifndef DOTS_FUZZ_FUZZ_CHECK_H_
#define DOTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(condition, what)                                                     \
  do {                                                                                  \
    if (!(condition)) {                                                                 \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n  %s\n", __FILE__, __LINE__, \
                   #condition, std::string(what).c_str());                              \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

#endif  // DOTS_FUZZ_FUZZ_CHECK_H_
