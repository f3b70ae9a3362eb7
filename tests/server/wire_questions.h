// The test pool of tests/client/test_questions.h in its wire form, for the tests and fuzz targets
// that speak dots.proto directly.
#ifndef DOTS_TESTS_SERVER_WIRE_QUESTIONS_H_
#define DOTS_TESTS_SERVER_WIRE_QUESTIONS_H_

#include <vector>

#include "dots/v1/dots.pb.h"
#include "proto/convert.h"
#include "tests/client/test_questions.h"

namespace dots::testing {

// `n` questions with `dim`-dimensional embeddings (none for dim 0).
inline std::vector<v1::Question> WireQuestions(int n, int dim) {
  const std::vector<Question> questions = MakeQuestions(n);
  const FloatMatrix embeddings = MakeEmbeddings(n, dim);
  std::vector<v1::Question> out(questions.size());
  for (int i = 0; i < n; ++i) {
    ToProto(questions[i], dim > 0 ? embeddings.row(i) : nullptr, dim, &out[i]);
  }
  return out;
}

}  // namespace dots::testing

#endif  // DOTS_TESTS_SERVER_WIRE_QUESTIONS_H_
