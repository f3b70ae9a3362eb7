// Fuzzes the .npy reader (core/formats/npy.h) on bytes in memory. For every input that parses: a
// 2-D matrix with rows, cols >= 1 and rows * cols values, which SerializeNpy -> ParseNpy gives back
// bit for bit (NaN payloads included). Every rejection is INVALID_ARGUMENT and names the file.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "core/formats/npy.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dots::FloatMatrix> m = dots::ParseNpy(bytes, "fuzz.npy");
  if (!m.ok()) {
    FUZZ_CHECK(m.status().code() == absl::StatusCode::kInvalidArgument, m.status().ToString());
    FUZZ_CHECK(std::string(m.status().message()).substr(0, 8) == "fuzz.npy",
               "the error does not name the file: " + m.status().ToString());
    return 0;
  }
  FUZZ_CHECK(m->rows >= 1 && m->cols >= 1, absl::StrCat(m->rows, " x ", m->cols));
  FUZZ_CHECK(m->data.size() == static_cast<size_t>(m->rows * m->cols),
             absl::StrCat(m->rows, " x ", m->cols, " holds ", m->data.size()));
  // float16 and float32 data both fit in at most 4 bytes a value.
  FUZZ_CHECK(m->data.size() <= size, "more values than input bytes");

  const std::string image = dots::SerializeNpy(*m);
  absl::StatusOr<dots::FloatMatrix> back = dots::ParseNpy(image, "round-trip.npy");
  FUZZ_CHECK(back.ok(), "SerializeNpy output does not parse: " + back.status().ToString());
  FUZZ_CHECK(back->rows == m->rows && back->cols == m->cols, "round trip changed the shape");
  FUZZ_CHECK(std::memcmp(back->data.data(), m->data.data(), m->data.size() * sizeof(float)) == 0,
             "round trip changed the values");
  return 0;
}
