// The question pool of the service and client tests, defined once: the server fixture
// (tests/server/test_server.h) sends it in its wire form, the client tests and the trainer
// program as core types. Depends on core/types.h and Abseil only, so a test that links nothing
// but the C++ client can use it.
#ifndef DOTS_TESTS_CLIENT_TEST_QUESTIONS_H_
#define DOTS_TESTS_CLIENT_TEST_QUESTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/types.h"

namespace dots::testing {

// `n` questions q{first}..q{first+n-1}: prompt "What is i + i?", metadata {"answer": 2i}, and a
// prior in (0, 1) for every question whose index i is not a multiple of 3.
inline std::vector<Question> MakeQuestions(int n, int first = 0) {
  std::vector<Question> questions;
  for (int i = first; i < first + n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrCat("What is ", i, " + ", i, "?");
    q.metadata_json = absl::StrCat("{\"answer\": ", 2 * i, "}");
    if (i % 3 != 0) q.prior = 0.1 + 0.8 * (i % 7) / 7.0;
    questions.push_back(std::move(q));
  }
  return questions;
}

// An n x dim embedding matrix of small integers, row i for question q{i}.
inline FloatMatrix MakeEmbeddings(int n, int dim) {
  FloatMatrix m(n, dim);
  for (int i = 0; i < n; ++i) {
    for (int d = 0; d < dim; ++d) m.row(i)[d] = static_cast<float>((i * 31 + d * 17) % 13) - 6;
  }
  return m;
}

}  // namespace dots::testing

#endif  // DOTS_TESTS_CLIENT_TEST_QUESTIONS_H_
