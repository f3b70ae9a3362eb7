// NumPy .npy files holding one 2-D float matrix: the pool's precomputed embeddings (N x D).
//
// Format (numpy.lib.format): magic "\x93NUMPY", major/minor version bytes, a little-endian header
// length (u16 for 1.0, u32 for 2.0 and 3.0), then a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// padded with spaces and a '\n', then the raw array data. The dict is parsed by a small dedicated
// parser (it is Python syntax, not JSON).
#ifndef DOTS_CORE_FORMATS_NPY_H_
#define DOTS_CORE_FORMATS_NPY_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/types.h"

namespace dots {

// Reads a 2-D .npy file into a row-major float32 matrix. Accepts format versions 1.0, 2.0 and
// 3.0; dtype '<f4' (float32) or '<f2' (float16, converted exactly, including subnormals, inf and
// nan); fortran_order False; shape (N, D) with N >= 1 and D >= 1. Everything else is rejected:
// bad magic, unsupported version, a header that is not a dict, missing keys, other dtypes
// ("got '<f8', want '<f4' or '<f2'"; big-endian '>f4' too), Fortran order, shapes that are not
// 2-D or have a zero dimension, truncated data ("expected X bytes of data, file has Y") and
// trailing bytes. Errors are InvalidArgument (NotFound / Internal for I/O) and start with `path`.
// Cost: reads the whole file, O(N * D) time, N * D * 4 bytes of output. Blocks on file I/O.
absl::StatusOr<FloatMatrix> ReadNpy(const std::string& path);

// Same as ReadNpy, from bytes already in memory (for tests and fuzzing); `name_for_errors`
// prefixes every error message. Does not block.
absl::StatusOr<FloatMatrix> ParseNpy(std::string_view bytes, std::string_view name_for_errors);

// Serialises `m` as an .npy file image: version 1.0 (2.0 if the header would not fit in 64 KiB),
// '<f4', C order, shape (m.rows, m.cols). O(rows * cols).
std::string SerializeNpy(const FloatMatrix& m);

// Writes SerializeNpy(m) to `path` (replacing it). Blocks on file I/O. Errors name the path.
absl::Status WriteNpy(const std::string& path, const FloatMatrix& m);

// IEEE 754 binary16 -> binary32, exact for every input (subnormals, +-inf, nan keep their class;
// nan payload bits are preserved in the high mantissa bits). O(1).
float HalfToFloat(uint16_t h);

}  // namespace dots

#endif  // DOTS_CORE_FORMATS_NPY_H_
