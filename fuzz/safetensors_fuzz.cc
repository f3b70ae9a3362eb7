// Fuzzes the safetensors reader (core/formats/safetensors.h) on bytes in memory. For every input
// that parses: each tensor has product(shape) values and non-negative dimensions, and
// SerializeSafeTensors -> ParseSafeTensors gives back the same names, shapes, values (bit for
// bit) and metadata. Every rejection is INVALID_ARGUMENT and names the file.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "core/formats/safetensors.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dots::SafeTensorsFile> file = dots::ParseSafeTensors(bytes, "fuzz.safetensors");
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kInvalidArgument,
               file.status().ToString());
    FUZZ_CHECK(std::string(file.status().message()).substr(0, 16) == "fuzz.safetensors",
               "the error does not name the file: " + file.status().ToString());
    return 0;
  }
  for (const auto& [name, tensor] : file->tensors) {
    uint64_t count = 1;
    for (int64_t d : tensor.shape) {
      FUZZ_CHECK(d >= 0, absl::StrCat("tensor ", name, ": negative dimension ", d));
      count *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(
        tensor.values.size() == count,
        absl::StrCat("tensor ", name, ": ", tensor.values.size(), " values for shape of ", count));
    FUZZ_CHECK(file->Find(name) == &tensor, "Find does not return the tensor " + name);
  }

  absl::StatusOr<std::string> image = dots::SerializeSafeTensors(*file);
  FUZZ_CHECK(image.ok(), "a parsed file does not serialise: " + image.status().ToString());
  absl::StatusOr<dots::SafeTensorsFile> back = dots::ParseSafeTensors(*image, "round-trip");
  FUZZ_CHECK(back.ok(), "SerializeSafeTensors output does not parse: " + back.status().ToString());
  FUZZ_CHECK(back->metadata == file->metadata, "round trip changed the metadata");
  FUZZ_CHECK(back->tensors.size() == file->tensors.size(), "round trip changed the tensor count");
  for (const auto& [name, tensor] : file->tensors) {
    const dots::SafeTensor* t = back->Find(name);
    FUZZ_CHECK(t != nullptr, "round trip lost tensor " + name);
    FUZZ_CHECK(t->shape == tensor.shape, "round trip changed the shape of " + name);
    FUZZ_CHECK(
        t->values.size() == tensor.values.size() &&
            (tensor.values.empty() || std::memcmp(t->values.data(), tensor.values.data(),
                                                  tensor.values.size() * sizeof(float)) == 0),
        "round trip changed the values of " + name);
  }
  return 0;
}
