#include "core/formats/pool.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/formats/npy.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots {

namespace {

// Keys are echoed in messages; a 4 KB key would drown the message, so show a prefix.
std::string QuoteKeyForMessage(std::string_view key) {
  constexpr size_t kShown = 80;
  if (key.size() <= kShown) return JsonQuote(key);
  // Cut at a UTF-8 character boundary so the message stays valid UTF-8.
  size_t cut = kShown;
  while (cut > 0 && (static_cast<unsigned char>(key[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(JsonQuote(key.substr(0, cut)), "...");
}

// Checks everything about a question that does not depend on the rest of the pool.
absl::Status ValidateQuestion(const Question& q) {
  if (q.key.empty()) return absl::InvalidArgumentError("field \"key\": is empty");
  if (q.key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("field \"key\": ", q.key.size(),
                                                   " bytes exceeds the limit of ", kMaxKeyBytes));
  }
  if (q.prior.has_value()) {
    const double p = *q.prior;
    if (!std::isfinite(p)) {
      return absl::InvalidArgumentError(absl::StrCat("field \"prior\": ", p, " is not finite"));
    }
    if (p < 0.0 || p > 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"prior\": ", JsonNumber(p), " is outside [0, 1]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateEmbedding(absl::Span<const float> embedding) {
  if (embedding.size() > static_cast<size_t>(kMaxEmbeddingDim)) {
    return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": dimension ",
                                                   embedding.size(), " exceeds the limit of ",
                                                   kMaxEmbeddingDim));
  }
  for (size_t i = 0; i < embedding.size(); ++i) {
    if (!std::isfinite(embedding[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"embedding\": value ", i, " is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status FieldTypeError(absl::string_view field, const JsonValue& v, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat(
      "field \"", field, "\": is ", JsonValue::DescribeType(v.type()), ", want ", want));
}

}  // namespace

std::optional<int64_t> Pool::IndexOf(std::string_view key) const {
  auto it = index_.find(ToAbsl(key));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

void Pool::Reserve(int64_t n) {
  questions_.reserve(static_cast<size_t>(n));
  index_.reserve(static_cast<size_t>(n));
  reserved_ = std::max(reserved_, n);
  if (dim_ > 0) embeddings_.data.reserve(static_cast<size_t>(n) * static_cast<size_t>(dim_));
}

absl::Status Pool::Add(Question q, absl::Span<const float> embedding) {
  DOTS_RETURN_IF_ERROR(ValidateQuestion(q));
  DOTS_RETURN_IF_ERROR(ValidateEmbedding(embedding));
  if (index_.contains(q.key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"key\": duplicate key ", QuoteKeyForMessage(q.key)));
  }
  const bool pool_is_new = questions_.empty() && dim_ == 0;
  if (!pool_is_new) {
    if (dim_ == 0 && !embedding.empty()) {
      return absl::InvalidArgumentError(
          "field \"embedding\": the pool's earlier questions have no embedding");
    }
    if (dim_ > 0 && embedding.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field \"embedding\": missing, but the pool's questions have ", dim_, "-d embeddings"));
    }
    if (dim_ > 0 && embedding.size() != static_cast<size_t>(dim_)) {
      return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": has ", embedding.size(),
                                                     " values, the pool's dimension is ", dim_));
    }
  }
  // All checks passed: mutate.
  if (!embedding.empty()) {
    if (dim_ == 0) {
      dim_ = static_cast<int>(embedding.size());
      embeddings_ = FloatMatrix();
      embeddings_.cols = dim_;
      // The hint of Reserve, now that the row width is known: no reallocation while loading.
      embeddings_.data.reserve(static_cast<size_t>(reserved_) * static_cast<size_t>(dim_));
    }
    embeddings_.data.insert(embeddings_.data.end(), embedding.begin(), embedding.end());
    ++embeddings_.rows;
  }
  index_.emplace(q.key, size());
  questions_.push_back(std::move(q));
  return absl::OkStatus();
}

absl::Status Pool::Replace(int64_t i, Question q, absl::Span<const float> embedding) {
  if (i < 0 || i >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("question index ", i, " is outside the pool of ", size()));
  }
  DOTS_RETURN_IF_ERROR(ValidateQuestion(q));
  DOTS_RETURN_IF_ERROR(ValidateEmbedding(embedding));
  if (q.key != questions_[static_cast<size_t>(i)].key) {
    return absl::InvalidArgumentError(absl::StrCat("field \"key\": ", QuoteKeyForMessage(q.key),
                                                   " does not match the replaced question"));
  }
  if (dim_ > 0 && embedding.size() != static_cast<size_t>(dim_)) {
    return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": has ", embedding.size(),
                                                   " values, the pool's dimension is ", dim_));
  }
  if (dim_ == 0 && !embedding.empty()) {
    return absl::InvalidArgumentError(
        "field \"embedding\": the pool's questions have no embeddings");
  }
  if (dim_ > 0) std::copy(embedding.begin(), embedding.end(), embeddings_.row(i));
  questions_[static_cast<size_t>(i)] = std::move(q);
  return absl::OkStatus();
}

absl::Status Pool::SetEmbeddings(FloatMatrix m) {
  if (m.rows != size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("embeddings have ", m.rows, " rows but the pool has ", size(), " questions"));
  }
  if (m.cols < 1 || m.cols > kMaxEmbeddingDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedding dimension ", m.cols, " is outside [1, ", kMaxEmbeddingDim, "]"));
  }
  if (m.data.size() != static_cast<size_t>(m.rows * m.cols)) {
    return absl::InvalidArgumentError(absl::StrCat("embedding matrix is ", m.rows, " x ", m.cols,
                                                   " but holds ", m.data.size(), " values"));
  }
  for (size_t i = 0; i < m.data.size(); ++i) {
    if (!std::isfinite(m.data[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding row ", i / static_cast<size_t>(m.cols), " column ",
                       i % static_cast<size_t>(m.cols), " is not finite"));
    }
  }
  dim_ = static_cast<int>(m.cols);
  embeddings_ = std::move(m);
  return absl::OkStatus();
}

absl::StatusOr<ParsedQuestionLine> ParseQuestionLine(std::string_view line) {
  auto json_or = ParseJson(line);
  if (!json_or.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON ", json_or.status().message()));
  }
  const JsonValue& obj = *json_or;
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("line is ", JsonValue::DescribeType(obj.type()), ", want a JSON object"));
  }
  ParsedQuestionLine out;
  Question& q = out.question;

  const JsonValue* key = obj.Find("key");
  if (key == nullptr) return absl::InvalidArgumentError("field \"key\": missing");
  if (!key->is_string()) return FieldTypeError("key", *key, "a string");
  q.key = key->as_string();

  const JsonValue* prompt = obj.Find("prompt");
  if (prompt == nullptr) return absl::InvalidArgumentError("field \"prompt\": missing");
  if (!prompt->is_string()) return FieldTypeError("prompt", *prompt, "a string");
  q.prompt = prompt->as_string();

  if (const JsonValue* metadata = obj.Find("metadata"); metadata != nullptr) {
    q.metadata_json = std::string(metadata->raw());
  } else {
    q.metadata_json = "{}";
  }

  if (const JsonValue* prior = obj.Find("prior"); prior != nullptr && !prior->is_null()) {
    if (!prior->is_number()) return FieldTypeError("prior", *prior, "a number in [0, 1] or null");
    const double p = prior->as_number();
    if (!std::isfinite(p)) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"prior\": ", ToAbsl(prior->raw()), " is not a finite double"));
    }
    if (p < 0.0 || p > 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"prior\": ", ToAbsl(prior->raw()), " is outside [0, 1]"));
    }
    q.prior = p;
  }

  if (const JsonValue* emb = obj.Find("embedding"); emb != nullptr && !emb->is_null()) {
    if (!emb->is_array()) return FieldTypeError("embedding", *emb, "an array of numbers");
    const auto& items = emb->items();
    if (items.empty()) return absl::InvalidArgumentError("field \"embedding\": is empty");
    if (items.size() > static_cast<size_t>(kMaxEmbeddingDim)) {
      return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": dimension ",
                                                     items.size(), " exceeds the limit of ",
                                                     kMaxEmbeddingDim));
    }
    out.embedding.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": element ", i, " is ",
                                                       JsonValue::DescribeType(items[i].type()),
                                                       ", want a number"));
      }
      const float v = static_cast<float>(items[i].as_number());
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat("field \"embedding\": element ", i, " (",
                                                       ToAbsl(items[i].raw()),
                                                       ") is not a finite float"));
      }
      out.embedding.push_back(v);
    }
  }
  DOTS_RETURN_IF_ERROR(ValidateQuestion(q));
  return out;
}

absl::StatusOr<Pool> LoadPool(const std::string& jsonl_path, const std::string& npy_path,
                              const std::function<void(int64_t)>& progress) {
  DOTS_ASSIGN_OR_RETURN(const std::string text, ReadFile(jsonl_path));
  auto line_error = [&](int64_t line_no, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(jsonl_path, ":", line_no, ": ", what));
  };

  int64_t newlines = 0;
  for (char c : text) newlines += c == '\n';
  Pool pool;
  pool.Reserve(newlines + 1);
  std::vector<int64_t> line_of_question;  // for "first seen on line N" in duplicate errors
  line_of_question.reserve(static_cast<size_t>(newlines + 1));

  const std::string_view all(text);
  size_t start = 0;
  int64_t line_no = 0;
  // Progress about every tenth of the file, by lines.
  const int64_t progress_every = std::max<int64_t>(1, (newlines + 1) / 10);
  while (start < all.size()) {
    if (progress && line_no > 0 && line_no % progress_every == 0) progress(pool.size());
    size_t end = all.find('\n', start);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view line = all.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line

    auto parsed_or = ParseQuestionLine(line);
    if (!parsed_or.ok()) return line_error(line_no, parsed_or.status().message());
    ParsedQuestionLine& parsed = *parsed_or;
    if (!npy_path.empty() && !parsed.embedding.empty()) {
      return line_error(line_no,
                        absl::StrCat("field \"embedding\": inline embeddings are not allowed when "
                                     "embeddings come from ",
                                     npy_path));
    }
    if (auto previous = pool.IndexOf(parsed.question.key); previous.has_value()) {
      return line_error(
          line_no,
          absl::StrCat("field \"key\": duplicate key ", QuoteKeyForMessage(parsed.question.key),
                       " (first on line ", line_of_question[static_cast<size_t>(*previous)], ")"));
    }
    const absl::Status added = pool.Add(std::move(parsed.question), parsed.embedding);
    if (!added.ok()) return line_error(line_no, added.message());
    line_of_question.push_back(line_no);
  }
  if (pool.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(jsonl_path, ": contains no questions"));
  }

  if (!npy_path.empty()) {
    DOTS_ASSIGN_OR_RETURN(FloatMatrix m, ReadNpy(npy_path));
    if (m.rows != pool.size()) {
      return absl::InvalidArgumentError(absl::StrCat(npy_path, ": has ", m.rows, " rows but ",
                                                     jsonl_path, " has ", pool.size(),
                                                     " questions"));
    }
    const absl::Status set = pool.SetEmbeddings(std::move(m));
    if (!set.ok()) return absl::InvalidArgumentError(absl::StrCat(npy_path, ": ", set.message()));
  }
  return pool;
}

}  // namespace dots
