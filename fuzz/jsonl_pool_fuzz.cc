// Fuzzes the pool loader (core/formats/pool.h LoadPool) through real files, as ImportPool uses it.
// The input is the JSONL file; if it contains the .npy magic "\x93NUMPY", everything from the
// magic on is written as the embeddings .npy instead (so the corpus can hold pairs).
// For every pool that loads: one question per non-blank line, each line accepted by
// ParseQuestionLine on its own, keys non-empty and unique (IndexOf finds each at its index),
// priors in [0, 1], an N x D embedding matrix of finite values (or none), progress reports
// non-decreasing and at most N. Every rejection names one of the two files.
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "core/formats/pool.h"
#include "fuzz/fuzz_check.h"

namespace {

// A private directory for the two files, removed at exit.
const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/dots-jsonl-fuzz.XXXXXX");
    FUZZ_CHECK(mkdtemp(pattern.data()) != nullptr, "mkdtemp " + pattern);
    auto* d = new std::string(pattern);
    std::atexit([] {
      unlink((ScratchDir() + "/questions.jsonl").c_str());
      unlink((ScratchDir() + "/embeddings.npy").c_str());
      rmdir(ScratchDir().c_str());
    });
    return d;
  }();
  return *dir;
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot create " + path);
  FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), "write " + path);
  FUZZ_CHECK(std::fclose(f) == 0, "close " + path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t magic = input.find("\x93NUMPY");
  const std::string_view jsonl = input.substr(0, magic);
  const std::string jsonl_path = ScratchDir() + "/questions.jsonl";
  std::string npy_path;
  WriteFile(jsonl_path, jsonl);
  if (magic != std::string_view::npos) {
    npy_path = ScratchDir() + "/embeddings.npy";
    WriteFile(npy_path, input.substr(magic));
  }

  int64_t last_progress = 0;
  absl::StatusOr<dots::Pool> pool =
      dots::LoadPool(jsonl_path, npy_path, [&last_progress](int64_t read) {
        FUZZ_CHECK(read >= last_progress, absl::StrCat("progress went back to ", read));
        last_progress = read;
      });
  if (!pool.ok()) {
    const std::string message(pool.status().message());
    FUZZ_CHECK(pool.status().code() == absl::StatusCode::kInvalidArgument,
               pool.status().ToString());
    FUZZ_CHECK(message.substr(0, jsonl_path.size()) == jsonl_path ||
                   (!npy_path.empty() && message.substr(0, npy_path.size()) == npy_path),
               "the error names neither file: " + pool.status().ToString());
    return 0;
  }

  // Every non-blank line is one question, in order.
  int64_t lines = 0;
  size_t start = 0;
  while (start < jsonl.size()) {
    size_t end = jsonl.find('\n', start);
    if (end == std::string_view::npos) end = jsonl.size();
    const std::string_view line = jsonl.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    absl::StatusOr<dots::ParsedQuestionLine> parsed = dots::ParseQuestionLine(line);
    FUZZ_CHECK(parsed.ok(),
               "LoadPool accepted a line ParseQuestionLine rejects: " + parsed.status().ToString());
    FUZZ_CHECK(lines < pool->size() && pool->question(lines).key == parsed->question.key,
               absl::StrCat("question ", lines, " is not the line's key"));
    ++lines;
  }
  FUZZ_CHECK(lines == pool->size() && lines >= 1,
             absl::StrCat(lines, " non-blank lines, pool of ", pool->size()));
  FUZZ_CHECK(last_progress <= pool->size(), absl::StrCat("progress ", last_progress));

  for (int64_t i = 0; i < pool->size(); ++i) {
    const dots::Question& q = pool->question(i);
    FUZZ_CHECK(!q.key.empty() && q.key.size() <= dots::kMaxKeyBytes, "bad key length");
    FUZZ_CHECK(pool->IndexOf(q.key) == i, absl::StrCat("IndexOf(question ", i, ")"));
    FUZZ_CHECK(!q.prior.has_value() || (*q.prior >= 0 && *q.prior <= 1), "prior outside [0, 1]");
  }
  const dots::FloatMatrix& e = pool->embeddings();
  if (pool->has_embeddings()) {
    FUZZ_CHECK(e.rows == pool->size() && e.cols == pool->dim() && pool->dim() >= 1 &&
                   pool->dim() <= dots::kMaxEmbeddingDim &&
                   e.data.size() == static_cast<size_t>(e.rows * e.cols),
               absl::StrCat("embeddings ", e.rows, " x ", e.cols, " for ", pool->size()));
    for (float v : e.data) FUZZ_CHECK(std::isfinite(v), "a non-finite embedding value");
  } else {
    FUZZ_CHECK(e.rows == 0 && e.data.empty() && npy_path.empty(), "embeddings without a dim");
  }
  return 0;
}
