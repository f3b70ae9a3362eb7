// The golden streams of the payload codec (tests/proto/golden): the cases of cases.json as core
// values, and each case's messages as the C++ encoders write them, one lowercase hex line per
// serialized message in <name>.hex. Read by payload_codec_test.cc (C++), by payload_golden.cc
// (which writes the .hex files) and, independently, by tests/python/test_payload_golden.py.
#ifndef DOTS_TESTS_PROTO_GOLDEN_CASES_H_
#define DOTS_TESTS_PROTO_GOLDEN_CASES_H_

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/types.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"
#include "proto/payload_codec.h"
#include "tests/client/test_payload.h"

namespace dots::testing {

struct ReportCase {
  std::string name;
  std::string run_id;
  int64_t step = 0;
  ReportEncoderOptions options;
  std::vector<RolloutReport> groups;
};

struct BatchCase {
  std::string name;
  int64_t max_chunk_bytes = 0;
  BatchSlice slice;
};

struct GoldenCases {
  std::vector<ReportCase> report;
  std::vector<BatchCase> batch;
};

namespace golden_internal {

inline absl::StatusOr<const JsonValue*> Field(const JsonValue& object, std::string_view name) {
  const JsonValue* v = object.Find(name);
  if (v == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("missing field ", std::string(name)));
  return v;
}

inline absl::StatusOr<int64_t> Int(const JsonValue& object, std::string_view name) {
  DOTS_ASSIGN_OR_RETURN(const JsonValue* v, Field(object, name));
  return static_cast<int64_t>(v->as_number());
}

inline absl::StatusOr<std::string> String(const JsonValue& object, std::string_view name) {
  DOTS_ASSIGN_OR_RETURN(const JsonValue* v, Field(object, name));
  return v->as_string();
}

inline absl::StatusOr<std::vector<float>> Floats(const JsonValue& object, std::string_view name) {
  DOTS_ASSIGN_OR_RETURN(const JsonValue* v, Field(object, name));
  std::vector<float> out;
  for (const JsonValue& x : v->items()) out.push_back(static_cast<float>(x.as_number()));
  return out;
}

// "payload_bytes" bytes of Pattern(n, "payload_seed") (tests/client/test_payload.h).
inline absl::StatusOr<std::string> Payload(const JsonValue& object) {
  DOTS_ASSIGN_OR_RETURN(int64_t bytes, Int(object, "payload_bytes"));
  DOTS_ASSIGN_OR_RETURN(int64_t seed, Int(object, "payload_seed"));
  return Pattern(static_cast<size_t>(bytes), static_cast<uint32_t>(seed));
}

inline absl::StatusOr<BatchItem> Item(const JsonValue& j) {
  BatchItem item;
  DOTS_ASSIGN_OR_RETURN(item.key, String(j, "key"));
  DOTS_ASSIGN_OR_RETURN(std::string role, String(j, "role"));
  item.role = role == "reference" ? ItemRole::kReference : ItemRole::kFresh;
  // "prompt_bytes": n stands for a prompt of n 'x' characters.
  if (j.Find("prompt_bytes") != nullptr) {
    DOTS_ASSIGN_OR_RETURN(int64_t n, Int(j, "prompt_bytes"));
    item.prompt = std::string(static_cast<size_t>(n), 'x');
  } else {
    DOTS_ASSIGN_OR_RETURN(item.prompt, String(j, "prompt"));
  }
  DOTS_ASSIGN_OR_RETURN(item.metadata_json, String(j, "metadata_json"));
  return item;
}

inline absl::StatusOr<ReportCase> Report(const JsonValue& j) {
  ReportCase c;
  DOTS_ASSIGN_OR_RETURN(c.name, String(j, "name"));
  DOTS_ASSIGN_OR_RETURN(c.run_id, String(j, "run_id"));
  DOTS_ASSIGN_OR_RETURN(c.step, Int(j, "step"));
  DOTS_ASSIGN_OR_RETURN(c.options.max_message_bytes, Int(j, "max_message_bytes"));
  DOTS_ASSIGN_OR_RETURN(c.options.max_fragment_bytes, Int(j, "max_fragment_bytes"));
  DOTS_ASSIGN_OR_RETURN(const JsonValue* groups, Field(j, "groups"));
  for (const JsonValue& g : groups->items()) {
    RolloutReport r;
    DOTS_ASSIGN_OR_RETURN(r.key, String(g, "key"));
    DOTS_ASSIGN_OR_RETURN(r.rewards, Floats(g, "rewards"));
    DOTS_ASSIGN_OR_RETURN(r.policy_version, Int(g, "policy_version"));
    DOTS_ASSIGN_OR_RETURN(r.payload, Payload(g));
    c.groups.push_back(std::move(r));
  }
  return c;
}

inline absl::StatusOr<BatchCase> Batch(const JsonValue& j) {
  BatchCase c;
  DOTS_ASSIGN_OR_RETURN(c.name, String(j, "name"));
  DOTS_ASSIGN_OR_RETURN(c.max_chunk_bytes, Int(j, "max_chunk_bytes"));
  DOTS_ASSIGN_OR_RETURN(c.slice.step, Int(j, "step"));
  DOTS_ASSIGN_OR_RETURN(c.slice.round, Int(j, "round"));
  DOTS_ASSIGN_OR_RETURN(const JsonValue* reference, Field(j, "reference_batch"));
  c.slice.reference_batch = reference->as_bool();
  DOTS_ASSIGN_OR_RETURN(c.slice.batch_size, Int(j, "batch_size"));
  DOTS_ASSIGN_OR_RETURN(const JsonValue* items, Field(j, "items"));
  for (const JsonValue& i : items->items()) {
    DOTS_ASSIGN_OR_RETURN(BatchItem item, Item(i));
    c.slice.items.push_back(std::move(item));
  }
  DOTS_ASSIGN_OR_RETURN(const JsonValue* replay, Field(j, "replay"));
  for (const JsonValue& g : replay->items()) {
    ReplayGroup group;
    DOTS_ASSIGN_OR_RETURN(group.key, String(g, "key"));
    DOTS_ASSIGN_OR_RETURN(group.step, Int(g, "step"));
    DOTS_ASSIGN_OR_RETURN(group.policy_version, Int(g, "policy_version"));
    DOTS_ASSIGN_OR_RETURN(group.rewards, Floats(g, "rewards"));
    DOTS_ASSIGN_OR_RETURN(group.payload, Payload(g));
    c.slice.replay.push_back(std::move(group));
  }
  return c;
}

}  // namespace golden_internal

// The cases of `dir`/cases.json. Errors name the file and the missing field. Blocks on I/O.
inline absl::StatusOr<GoldenCases> LoadGoldenCases(const std::string& dir) {
  const std::string path = dir + "/cases.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string json = text.str();  // ParseJson's values view into it
  absl::StatusOr<JsonValue> root = ParseJson(json);
  if (!root.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", root.status().message()));
  GoldenCases cases;
  DOTS_ASSIGN_OR_RETURN(const JsonValue* report, golden_internal::Field(*root, "report"));
  for (const JsonValue& c : report->items()) {
    DOTS_ASSIGN_OR_RETURN(ReportCase parsed, golden_internal::Report(c));
    cases.report.push_back(std::move(parsed));
  }
  DOTS_ASSIGN_OR_RETURN(const JsonValue* batch, golden_internal::Field(*root, "batch"));
  for (const JsonValue& c : batch->items()) {
    DOTS_ASSIGN_OR_RETURN(BatchCase parsed, golden_internal::Batch(c));
    cases.batch.push_back(std::move(parsed));
  }
  return cases;
}

// The serialized messages of a case, as the C++ encoders write them.
inline std::vector<std::string> EncodeGolden(const ReportCase& c) {
  std::vector<std::string> out;
  ReportEncoder encoder(c.run_id, c.step, c.groups, c.options);
  v1::ReportRolloutsRequest request;
  while (encoder.Next(&request)) out.push_back(request.SerializeAsString());
  return out;
}

inline absl::StatusOr<std::vector<std::string>> EncodeGolden(const BatchCase& c) {
  std::vector<std::string> out;
  DOTS_ASSIGN_OR_RETURN(BatchEncoder encoder,
                        BatchEncoder::Create(c.slice, c.max_chunk_bytes, 4 << 20));
  v1::NextBatchChunk chunk;
  while (encoder.Next(&chunk)) out.push_back(chunk.SerializeAsString());
  return out;
}

// A .hex file: one message per line. ReadHexLines: NOT_FOUND naming the file.
inline std::string ToHexLines(const std::vector<std::string>& messages) {
  std::string out;
  for (const std::string& m : messages) absl::StrAppend(&out, absl::BytesToHexString(m), "\n");
  return out;
}

inline absl::StatusOr<std::vector<std::string>> ReadHexLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(absl::HexStringToBytes(line));
  return out;
}

}  // namespace dots::testing

#endif  // DOTS_TESTS_PROTO_GOLDEN_CASES_H_
