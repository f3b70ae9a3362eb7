// Reader (and a small F32 writer) for the safetensors format, used for the difficulty adapter's
// weights (tensor names = the PyTorch state_dict of the paper's FewShotRegressor).
//
// Format: 8-byte little-endian u64 header length N, then N bytes of a JSON object
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data buffer; data_offsets are byte offsets relative to the start of that buffer.
#ifndef DOTS_CORE_FORMATS_SAFETENSORS_H_
#define DOTS_CORE_FORMATS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dots {

// Largest header accepted by the reader: larger declared lengths are treated as corrupt.
inline constexpr uint64_t kSafeTensorsMaxHeaderBytes = 100ull << 20;  // 100 MB

struct SafeTensor {
  std::vector<int64_t> shape;  // empty for a scalar (then values has one element)
  std::vector<float> values;   // product(shape) values, row-major, converted to float32
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__" (string values only)

  // The tensor named `name`, or nullptr. O(log tensors).
  const SafeTensor* Find(std::string_view name) const;
};

// Reads a whole safetensors file. Accepts dtypes F32, F16, BF16 and F64 (all converted to float;
// F64 values outside float range become +-inf). Validates: header length <= file size - 8 and
// <= kSafeTensorsMaxHeaderBytes; the header is a JSON object whose entries are objects with a
// known "dtype", a "shape" of non-negative integers and "data_offsets" [begin, end] of integers
// with begin <= end <= buffer size and end - begin == product(shape) * dtype size; tensors'
// byte ranges do not overlap; "__metadata__" is an object of strings. Errors are
// InvalidArgument (NotFound / Internal for I/O), prefixed by the path and naming the tensor and
// field, e.g. "w.safetensors: tensor \"head.weight\": unknown dtype \"I8\"". Cost: O(file size);
// blocks on file I/O.
absl::StatusOr<SafeTensorsFile> ReadSafeTensors(const std::string& path);

// Same as ReadSafeTensors, from bytes in memory; `name_for_errors` prefixes messages.
absl::StatusOr<SafeTensorsFile> ParseSafeTensors(std::string_view bytes,
                                                 std::string_view name_for_errors);

// Serialises `f` as F32 tensors (in name order, contiguous) plus its metadata. Fails with
// InvalidArgument if a tensor's values.size() != product(shape) or a dimension is negative.
absl::StatusOr<std::string> SerializeSafeTensors(const SafeTensorsFile& f);

// Writes SerializeSafeTensors(f) to `path`. Blocks on file I/O. Errors name the path.
absl::Status WriteSafeTensors(const std::string& path, const SafeTensorsFile& f);

}  // namespace dots

#endif  // DOTS_CORE_FORMATS_SAFETENSORS_H_
