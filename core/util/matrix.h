// Dense row-major float32 matrix: the one in-memory layout for embeddings, projections and
// adapter weights across core/. Element (r, c) lives at data[r * cols + c].
#ifndef DOTS_CORE_UTIL_MATRIX_H_
#define DOTS_CORE_UTIL_MATRIX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dots {

struct FloatMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  // rows * cols values, row-major.

  FloatMatrix() = default;
  FloatMatrix(int64_t r, int64_t c) : rows(r), cols(c), data(static_cast<size_t>(r * c)) {}

  float* row(int64_t r) { return data.data() + r * cols; }
  const float* row(int64_t r) const { return data.data() + r * cols; }
  bool empty() const { return rows == 0; }
};

}  // namespace dots

#endif  // DOTS_CORE_UTIL_MATRIX_H_
