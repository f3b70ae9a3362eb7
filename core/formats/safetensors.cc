#include "core/formats/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/formats/npy.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and copied directly");

const SafeTensor* SafeTensorsFile::Find(std::string_view name) const {
  auto it = tensors.find(std::string(name));
  return it == tensors.end() ? nullptr : &it->second;
}

namespace {

enum class DType { kF32, kF16, kBF16, kF64 };

std::optional<DType> ParseDType(std::string_view s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "F64") return DType::kF64;
  return std::nullopt;
}

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF64:
      return 8;
  }
  return 0;
}

// Largest integer a JSON number may carry here: shapes and offsets beyond 2^53 cannot be exact
// doubles, and no real file has them.
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

bool AsNonNegativeInteger(const JsonValue& v, uint64_t* out) {
  if (!v.is_number()) return false;
  const double d = v.as_number();
  if (!(d >= 0.0 && d <= kMaxExactInteger) || std::floor(d) != d) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

void ConvertValues(DType dtype, const char* src, size_t count, float* dst) {
  if (count == 0) return;  // dst may be null for zero-sized tensors; memcpy forbids that
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      return;
    case DType::kBF16:
      // bfloat16 is the top half of a float32, so widening is a shift.
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
      }
      return;
    case DType::kF64:
      for (size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
  }
}

}  // namespace

absl::StatusOr<SafeTensorsFile> ParseSafeTensors(std::string_view bytes, std::string_view name) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(name), ": ", what));
  };
  if (bytes.size() < 8) {
    return error(absl::StrCat("truncated header: file has ", bytes.size(),
                              " bytes, need at least 8 for the header length"));
  }
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) {
    header_len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  if (header_len > kSafeTensorsMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                              kSafeTensorsMaxHeaderBytes, " bytes"));
  }
  if (header_len > bytes.size() - 8) {
    return error(absl::StrCat("truncated header: declares ", header_len, " bytes, file has ",
                              bytes.size() - 8, " after the length"));
  }
  const std::string_view header = bytes.substr(8, header_len);
  const std::string_view buffer = bytes.substr(8 + header_len);

  auto json_or = ParseJson(header);
  if (!json_or.ok()) return error(absl::StrCat("header JSON: ", json_or.status().message()));
  const JsonValue& root = *json_or;
  if (!root.is_object()) {
    return error(
        absl::StrCat("header is ", JsonValue::DescribeType(root.type()), ", want a JSON object"));
  }

  SafeTensorsFile file;
  struct Range {
    uint64_t begin, end;
    const std::string* tensor;
  };
  std::vector<Range> ranges;
  for (const auto& [tensor_name, entry] : root.members()) {
    if (tensor_name == "__metadata__") {
      if (!entry.is_object()) return error("\"__metadata__\" is not an object");
      for (const auto& [key, value] : entry.members()) {
        if (!value.is_string()) {
          return error(absl::StrCat("\"__metadata__\" field ", JsonQuote(key), " is ",
                                    JsonValue::DescribeType(value.type()), ", want a string"));
        }
        file.metadata[key] = value.as_string();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor ", JsonQuote(tensor_name));
    if (!entry.is_object()) return error(absl::StrCat(where, ": entry is not an object"));
    const JsonValue* dtype_json = entry.Find("dtype");
    const JsonValue* shape_json = entry.Find("shape");
    const JsonValue* offsets_json = entry.Find("data_offsets");
    if (dtype_json == nullptr || !dtype_json->is_string()) {
      return error(absl::StrCat(where, ": field \"dtype\" missing or not a string"));
    }
    const std::optional<DType> dtype = ParseDType(dtype_json->as_string());
    if (!dtype.has_value()) {
      return error(absl::StrCat(where, ": unknown dtype ", JsonQuote(dtype_json->as_string()),
                                " (supported: F32, F16, BF16, F64)"));
    }
    if (shape_json == nullptr || !shape_json->is_array()) {
      return error(absl::StrCat(where, ": field \"shape\" missing or not an array"));
    }
    SafeTensor tensor;
    // Element count, saturated just above what the buffer could hold so it cannot overflow.
    const unsigned __int128 limit = static_cast<unsigned __int128>(buffer.size()) + 1;
    unsigned __int128 count = 1;
    for (const JsonValue& d : shape_json->items()) {
      uint64_t dim;
      if (!AsNonNegativeInteger(d, &dim)) {
        return error(absl::StrCat(where, ": field \"shape\" holds ", ToAbsl(d.raw()),
                                  ", want a non-negative integer"));
      }
      tensor.shape.push_back(static_cast<int64_t>(dim));
      count *= dim;
      count = std::min(count, limit);
    }
    uint64_t begin = 0, end = 0;
    if (offsets_json == nullptr || !offsets_json->is_array() || offsets_json->items().size() != 2 ||
        !AsNonNegativeInteger(offsets_json->items()[0], &begin) ||
        !AsNonNegativeInteger(offsets_json->items()[1], &end)) {
      return error(
          absl::StrCat(where, ": field \"data_offsets\" missing or not [begin, end] integers"));
    }
    if (begin > end || end > buffer.size()) {
      return error(absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                "] out of range for a data buffer of ", buffer.size(), " bytes"));
    }
    const unsigned __int128 want = count * DTypeSize(*dtype);
    if (want != end - begin) {
      const std::string needs = count == limit
                                    ? absl::StrCat("more than the ", buffer.size(), " buffer bytes")
                                    : absl::StrCat(static_cast<uint64_t>(want), " bytes");
      return error(absl::StrCat(where, ": data_offsets span ", end - begin, " bytes but shape ",
                                ToAbsl(shape_json->raw()), " of ", dtype_json->as_string(),
                                " needs ", needs));
    }
    const size_t n = static_cast<size_t>(count);
    tensor.values.resize(n);
    ConvertValues(*dtype, buffer.data() + begin, n, tensor.values.data());
    auto [it, inserted] = file.tensors.emplace(tensor_name, std::move(tensor));
    ranges.push_back({begin, end, &it->first});
  }

  // The format requires the tensors to tile the buffer exactly: no overlaps, no holes.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  for (const Range& r : ranges) {
    if (r.begin < covered) {
      return error(absl::StrCat("tensor ", JsonQuote(*r.tensor), ": data_offsets [", r.begin, ", ",
                                r.end, "] overlap another tensor's data"));
    }
    if (r.begin > covered) {
      return error(
          absl::StrCat("data buffer bytes [", covered, ", ", r.begin, ") belong to no tensor"));
    }
    covered = r.end;
  }
  if (covered != buffer.size()) {
    return error(absl::StrCat("data buffer has ", buffer.size(), " bytes but tensors cover ",
                              covered, " (trailing bytes)"));
  }
  return file;
}

absl::StatusOr<SafeTensorsFile> ReadSafeTensors(const std::string& path) {
  DOTS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseSafeTensors(bytes, path);
}

absl::StatusOr<std::string> SerializeSafeTensors(const SafeTensorsFile& f) {
  std::string header = "{";
  bool first = true;
  if (!f.metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : f.metadata) {
      if (!first) header += ",";
      first = false;
      AppendJsonString(key, &header);
      header += ":";
      AppendJsonString(value, &header);
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : f.tensors) {
    if (name == "__metadata__") {
      return absl::InvalidArgumentError("tensor name \"__metadata__\" is reserved");
    }
    uint64_t count = 1;
    for (int64_t d : tensor.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", JsonQuote(name), ": negative dimension ", d));
      }
      count *= static_cast<uint64_t>(d);
    }
    if (count != tensor.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", JsonQuote(name), ": shape has ",
                                                     count, " elements but values has ",
                                                     tensor.values.size()));
    }
    if (header.size() > 1) header += ",";
    AppendJsonString(name, &header);
    header += ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < tensor.shape.size(); ++i) {
      absl::StrAppend(&header, i ? "," : "", tensor.shape[i]);
    }
    absl::StrAppend(&header, "],\"data_offsets\":[", offset, ",", offset + 4 * count, "]}");
    offset += 4 * count;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  out += header;
  for (const auto& [name, tensor] : f.tensors) {
    if (tensor.values.empty()) continue;
    out.append(reinterpret_cast<const char*>(tensor.values.data()), tensor.values.size() * 4);
  }
  return out;
}

absl::Status WriteSafeTensors(const std::string& path, const SafeTensorsFile& f) {
  auto bytes_or = SerializeSafeTensors(f);
  if (!bytes_or.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes_or.status().message()));
  }
  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  const bool wrote = std::fwrite(bytes_or->data(), 1, bytes_or->size(), out) == bytes_or->size();
  const bool closed = std::fclose(out) == 0;
  if (!wrote || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace dots
