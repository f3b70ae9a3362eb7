#include "core/formats/npy.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace dots {

static_assert(std::endian::native == std::endian::little,
              "the .npy and safetensors readers copy little-endian data directly");

namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
// Limits that keep N * D * 4 far from overflowing and refuse absurd headers early.
constexpr int64_t kMaxDimension = int64_t{1} << 40;
constexpr size_t kMaxHeaderBytes = size_t{1} << 20;

// A value of the Python literal subset that .npy headers use.
struct PyValue {
  enum class Kind { kString, kBool, kNone, kInt, kTuple } kind = Kind::kNone;
  std::string str;
  bool boolean = false;
  int64_t integer = 0;
  std::vector<PyValue> items;
};

// Parser for the header dict: {'key': value, ...} where value is a quoted string, True, False,
// None, a non-negative integer, or a tuple/list of values. Trailing commas are allowed (numpy
// writes one). Errors are plain descriptions; the caller prefixes the file name.
class PyDictParser {
 public:
  explicit PyDictParser(std::string_view text) : text_(text) {}

  absl::StatusOr<std::vector<std::pair<std::string, PyValue>>> Parse() {
    std::vector<std::pair<std::string, PyValue>> entries;
    SkipSpace();
    if (!Consume('{')) return Error("header is not a dict literal (expected '{')");
    SkipSpace();
    while (!Consume('}')) {
      PyValue key;
      DOTS_RETURN_IF_ERROR(ParseValue(&key, 0));
      if (key.kind != PyValue::Kind::kString) return Error("header dict key is not a string");
      SkipSpace();
      if (!Consume(':')) return Error("expected ':' in header dict");
      SkipSpace();
      PyValue value;
      DOTS_RETURN_IF_ERROR(ParseValue(&value, 0));
      for (const auto& e : entries) {
        if (e.first == key.str) return Error(absl::StrCat("duplicate header key '", key.str, "'"));
      }
      entries.emplace_back(std::move(key.str), std::move(value));
      SkipSpace();
      if (Consume(',')) {
        SkipSpace();
      } else if (Peek() != '}') {
        return Error("expected ',' or '}' in header dict");
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the header dict");
    return entries;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at header byte ", pos_));
  }
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r'))
      ++pos_;
  }
  bool ConsumeWord(std::string_view w) {
    if (text_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }

  absl::Status ParseValue(PyValue* out, int depth) {
    if (depth > 8) return Error("header values nested too deeply");
    const char c = Peek();
    if (c == '\'' || c == '"') {
      ++pos_;
      const size_t end = text_.find(c, pos_);
      if (end == std::string_view::npos) return Error("unterminated string in header");
      out->kind = PyValue::Kind::kString;
      out->str = std::string(text_.substr(pos_, end - pos_));
      if (out->str.find('\\') != std::string::npos) return Error("escapes in header strings");
      pos_ = end + 1;
      return absl::OkStatus();
    }
    if (ConsumeWord("True")) {
      out->kind = PyValue::Kind::kBool;
      out->boolean = true;
      return absl::OkStatus();
    }
    if (ConsumeWord("False")) {
      out->kind = PyValue::Kind::kBool;
      return absl::OkStatus();
    }
    if (ConsumeWord("None")) {
      out->kind = PyValue::Kind::kNone;
      return absl::OkStatus();
    }
    if (c >= '0' && c <= '9') {
      out->kind = PyValue::Kind::kInt;
      int64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        v = v * 10 + (text_[pos_++] - '0');
        if (v > kMaxDimension) return Error("integer in header too large");
      }
      if (Peek() == 'L') ++pos_;  // Python 2 long suffix, written by very old numpy
      out->integer = v;
      return absl::OkStatus();
    }
    if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      ++pos_;
      out->kind = PyValue::Kind::kTuple;
      SkipSpace();
      while (!Consume(close)) {
        out->items.emplace_back();
        DOTS_RETURN_IF_ERROR(ParseValue(&out->items.back(), depth + 1));
        SkipSpace();
        if (Consume(',')) {
          SkipSpace();
        } else if (Peek() != close) {
          return Error(absl::StrCat("expected ',' or '", std::string(1, close), "' in header"));
        }
      }
      return absl::OkStatus();
    }
    return Error("unsupported value in header");
  }

  std::string_view text_;
  size_t pos_ = 0;
};

std::string ShapeToString(const PyValue& shape) {
  std::vector<std::string> parts;
  for (const PyValue& d : shape.items) {
    parts.push_back(d.kind == PyValue::Kind::kInt ? absl::StrCat(d.integer) : "?");
  }
  if (parts.size() == 1) return absl::StrCat("(", parts[0], ",)");
  return absl::StrCat("(", absl::StrJoin(parts, ", "), ")");
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf or nan (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal half: value = mantissa * 2^-24. Normalise into a float32 normal number.
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400) == 0);
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3FF) << 13);
  }
  return std::bit_cast<float>(bits);
}

absl::StatusOr<FloatMatrix> ParseNpy(std::string_view bytes, std::string_view name) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(ToAbsl(name), ": ", what));
  };
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    return error("not a .npy file (bad magic; expected \\x93NUMPY)");
  }
  if (bytes.size() < 8) return error("truncated .npy header (no version bytes)");
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    return error(absl::StrCat("unsupported .npy format version ", major, ".", minor,
                              " (want 1.0, 2.0 or 3.0)"));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = 8 + length_bytes;
  if (bytes.size() < prefix) return error("truncated .npy header (no header length)");
  size_t header_len = 0;
  for (size_t i = 0; i < length_bytes; ++i) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  }
  if (header_len > kMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_len, " is implausibly large"));
  }
  if (bytes.size() < prefix + header_len) {
    return error(absl::StrCat("truncated .npy header: declares ", header_len, " bytes, file has ",
                              bytes.size() - prefix));
  }
  const std::string_view header = bytes.substr(prefix, header_len);

  auto entries_or = PyDictParser(header).Parse();
  if (!entries_or.ok()) return error(entries_or.status().message());
  const PyValue* descr = nullptr;
  const PyValue* fortran = nullptr;
  const PyValue* shape = nullptr;
  for (const auto& [key, value] : *entries_or) {
    if (key == "descr") {
      descr = &value;
    } else if (key == "fortran_order") {
      fortran = &value;
    } else if (key == "shape") {
      shape = &value;
    } else {
      return error(absl::StrCat("unexpected header key '", key, "'"));
    }
  }
  if (descr == nullptr) return error("header is missing key 'descr'");
  if (fortran == nullptr) return error("header is missing key 'fortran_order'");
  if (shape == nullptr) return error("header is missing key 'shape'");

  if (descr->kind != PyValue::Kind::kString) {
    return error("unsupported dtype (structured 'descr'), want '<f4' or '<f2'");
  }
  size_t item_size;
  if (descr->str == "<f4") {
    item_size = 4;
  } else if (descr->str == "<f2") {
    item_size = 2;
  } else {
    return error(absl::StrCat("unsupported dtype: got '", descr->str, "', want '<f4' or '<f2'"));
  }
  if (fortran->kind != PyValue::Kind::kBool) return error("'fortran_order' is not True/False");
  if (fortran->boolean) {
    return error("fortran_order True is not supported (save a C-order array)");
  }
  if (shape->kind != PyValue::Kind::kTuple) return error("'shape' is not a tuple");
  for (const PyValue& d : shape->items) {
    if (d.kind != PyValue::Kind::kInt) return error("'shape' holds a non-integer");
  }
  if (shape->items.size() != 2) {
    return error(absl::StrCat("shape ", ShapeToString(*shape), " is not 2-D (want (N, D))"));
  }
  const int64_t rows = shape->items[0].integer;
  const int64_t cols = shape->items[1].integer;
  if (rows == 0 || cols == 0) {
    return error(absl::StrCat("shape ", ShapeToString(*shape), " is empty (want N >= 1, D >= 1)"));
  }
  // Both are <= 2^40, so the product fits in unsigned 128 but maybe not 64 bits.
  const unsigned __int128 want128 =
      static_cast<unsigned __int128>(rows) * static_cast<unsigned __int128>(cols) * item_size;
  const size_t have = bytes.size() - prefix - header_len;
  if (want128 > have) {
    return error(absl::StrCat("truncated data: expected ", static_cast<uint64_t>(want128),
                              " bytes of data, file has ", have));
  }
  const size_t want = static_cast<size_t>(want128);
  if (want < have) {
    return error(
        absl::StrCat("trailing bytes: expected ", want, " bytes of data, file has ", have));
  }
  const char* data = bytes.data() + prefix + header_len;
  FloatMatrix m(rows, cols);
  if (item_size == 4) {
    std::memcpy(m.data.data(), data, want);
  } else {
    const size_t count = m.data.size();
    for (size_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, data + 2 * i, 2);
      m.data[i] = HalfToFloat(h);
    }
  }
  return m;
}

absl::StatusOr<FloatMatrix> ReadNpy(const std::string& path) {
  DOTS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseNpy(bytes, path);
}

std::string SerializeNpy(const FloatMatrix& m) {
  std::string dict = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", m.rows,
                                  ", ", m.cols, "), }");
  // Pad so that magic + version + length + header is a multiple of 64 and ends in '\n', as
  // numpy does (keeps the data aligned for memory mapping).
  auto padded = [&](size_t prefix) {
    std::string h = dict;
    const size_t total = prefix + h.size() + 1;
    h.append((64 - total % 64) % 64, ' ');
    h.push_back('\n');
    return h;
  };
  std::string header = padded(10);
  int major = 1;
  if (header.size() > 0xFFFF) {
    major = 2;
    header = padded(12);
  }
  std::string out(kMagic);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const size_t length_bytes = major == 1 ? 2 : 4;
  for (size_t i = 0; i < length_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  }
  out += header;
  const size_t data_bytes = m.data.size() * sizeof(float);
  const size_t offset = out.size();
  out.resize(offset + data_bytes);
  if (data_bytes > 0) std::memcpy(out.data() + offset, m.data.data(), data_bytes);
  return out;
}

absl::Status WriteNpy(const std::string& path, const FloatMatrix& m) {
  if (m.rows < 0 || m.cols < 0 || m.data.size() != static_cast<size_t>(m.rows * m.cols)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": matrix is ", m.rows, " x ", m.cols,
                                                   " but holds ", m.data.size(), " values"));
  }
  const std::string bytes = SerializeNpy(m);
  // Write to a temporary name and rename, so readers never see a half-written file.
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  const bool wrote = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace dots
