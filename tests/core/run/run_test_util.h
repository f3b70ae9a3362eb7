// Shared helpers of the Run tests (unit and stress).
#ifndef DOTS_TESTS_CORE_RUN_TEST_UTIL_H_
#define DOTS_TESTS_CORE_RUN_TEST_UTIL_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/run/run.h"
#include "core/util/mutex.h"
#include "core/util/random.h"

namespace dots::testing {

// A pool of `n` questions with random `dim`-dimensional embeddings and priors.
inline void MakeQuestions(int64_t n, int dim, uint64_t seed, std::vector<Question>* questions,
                          FloatMatrix* embeddings) {
  Rng rng(seed);
  *embeddings = FloatMatrix(n, dim);
  for (int64_t i = 0; i < n; ++i) {
    Question q;
    q.key = absl::StrCat("q", i);
    q.prompt = absl::StrCat("What is ", i, " + ", i, "?");
    q.metadata_json = absl::StrCat("{\"answer\": ", 2 * i, "}");
    if (i % 4 != 0) q.prior = rng.UniformOpen();
    questions->push_back(std::move(q));
    for (int d = 0; d < dim; ++d) embeddings->row(i)[d] = static_cast<float>(rng.UniformOpen());
  }
}

// A manually advanced clock, safe to read from any thread.
class FakeClock {
 public:
  absl::Time Now() {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1700000000);
};

// Rewards of a question under a fixed synthetic "true" success rate derived from its index.
inline std::vector<float> SyntheticRewards(int64_t question_number, int64_t step, int group_size) {
  Rng rng(MixSeed(question_number, step, 77));
  const double p = static_cast<double>(question_number % 11) / 10.0;
  std::vector<float> r(static_cast<size_t>(group_size));
  for (float& v : r) v = rng.UniformOpen() < p ? 1.0f : 0.0f;
  return r;
}

inline int64_t QuestionNumber(const std::string& key) { return std::stoll(key.substr(1)); }

}  // namespace dots::testing

#endif  // DOTS_TESTS_CORE_RUN_TEST_UTIL_H_
