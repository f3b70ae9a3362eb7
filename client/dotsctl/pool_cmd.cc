// dotsctl pool load|import: fill a run's question pool.
//
// `pool load` reads a local JSONL (+ optional .npy) and uploads it with UpsertQuestions. Lines are
// checked one by one: a malformed line is reported with its line number and skipped while the
// rest is uploaded, and the server's individual rejections are mapped back to lines too.
// `pool import` asks the server to import files on ITS filesystem (all or nothing).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/dotsctl/commands.h"
#include "core/formats/npy.h"
#include "core/formats/pool.h"
#include "core/util/file_util.h"
#include "core/util/json.h"

namespace dots::dotsctl {
namespace {

// Uploads of large pools take a while; one call covers the whole stream.
constexpr double kLoadTimeoutSeconds = 600;

struct LineError {
  int64_t line;  // 1-based
  std::string error;
};

// The questions of a JSONL file that passed the local checks, with their line numbers.
struct LocalPool {
  std::vector<Question> questions;
  std::vector<int64_t> lines;  // lines[i] = line of questions[i]
  FloatMatrix embeddings;      // 0 rows, or one row per question
  std::vector<LineError> rejected;
};

// Parses every non-blank line; see the file comment. Fails (nothing to upload) only for I/O
// errors and an .npy whose row count is not the number of question lines.
absl::StatusOr<LocalPool> ReadLocalPool(const std::string& jsonl_path,
                                        const std::string& npy_path) {
  absl::StatusOr<std::string> text = ReadFile(jsonl_path);
  if (!text.ok()) return text.status();
  struct Parsed {
    int64_t line;
    int64_t ordinal;  // index among question (non-blank) lines = .npy row
    ParsedQuestionLine q;
  };
  std::vector<Parsed> parsed;
  LocalPool pool;
  int64_t question_lines = 0;
  absl::flat_hash_map<std::string, int64_t> line_of_key;
  size_t start = 0;
  for (int64_t line_no = 1; start < text->size(); ++line_no) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    std::string_view line(text->data() + start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const int64_t ordinal = question_lines++;
    absl::StatusOr<ParsedQuestionLine> q = ParseQuestionLine(line);
    if (!q.ok()) {
      pool.rejected.push_back({line_no, std::string(q.status().message())});
      continue;
    }
    auto [it, inserted] = line_of_key.emplace(q->question.key, line_no);
    if (!inserted) {
      pool.rejected.push_back({line_no, absl::StrFormat("field \"key\": %s repeats line %d",
                                                        JsonQuote(q->question.key), it->second)});
      continue;
    }
    parsed.push_back({line_no, ordinal, std::move(*q)});
  }

  FloatMatrix npy;
  if (!npy_path.empty()) {
    absl::StatusOr<FloatMatrix> m = ReadNpy(npy_path);
    if (!m.ok()) return m.status();
    if (m->rows != question_lines) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d rows, but %s has %d question lines (one row per line)", npy_path,
                          m->rows, jsonl_path, question_lines));
    }
    npy = std::move(*m);
  }
  // Inline embeddings: the first embedded line fixes the dimension; the pool cannot mix
  // embedded and bare questions.
  const Parsed* first_embedded = nullptr;
  for (const Parsed& p : parsed) {
    if (!p.q.embedding.empty()) {
      first_embedded = &p;
      break;
    }
  }
  const int64_t dim = !npy_path.empty() ? npy.cols
                      : first_embedded != nullptr
                          ? static_cast<int64_t>(first_embedded->q.embedding.size())
                          : 0;
  if (dim > 0) pool.embeddings.cols = dim;
  for (Parsed& p : parsed) {
    const int64_t own = static_cast<int64_t>(p.q.embedding.size());
    if (!npy_path.empty() && own > 0) {
      pool.rejected.push_back(
          {p.line, "field \"embedding\": inline embeddings cannot be combined with --embeddings"});
      continue;
    }
    if (npy_path.empty() && first_embedded != nullptr && own != dim) {
      pool.rejected.push_back(
          {p.line, own == 0 ? absl::StrFormat("field \"embedding\": missing, but line %d has one "
                                              "(a pool cannot mix embedded and bare questions)",
                                              first_embedded->line)
                            : absl::StrFormat("field \"embedding\": %d values, but line %d has %d",
                                              own, first_embedded->line, dim)});
      continue;
    }
    if (dim > 0) {
      const float* row = !npy_path.empty() ? npy.row(p.ordinal) : p.q.embedding.data();
      pool.embeddings.data.insert(pool.embeddings.data.end(), row, row + dim);
      ++pool.embeddings.rows;
    }
    pool.questions.push_back(std::move(p.q.question));
    pool.lines.push_back(p.line);
  }
  return pool;
}

// Upload progress on stderr: a redrawn bar on a terminal, else a line every few seconds.
class ProgressReporter {
 public:
  ProgressReporter() : tty_(isatty(STDERR_FILENO) == 1) {}

  void Update(int64_t sent, int64_t total) {
    const absl::Time now = absl::Now();
    const bool last = sent >= total;
    if (!last && now - last_print_ < (tty_ ? absl::Milliseconds(100) : absl::Seconds(5))) return;
    last_print_ = now;
    const double fraction = total > 0 ? static_cast<double>(sent) / static_cast<double>(total) : 1;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::fprintf(stderr, "\rpool load [%s%s] %3d%% %lld/%lld questions%s",
                   std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                   static_cast<int>(fraction * 100), static_cast<long long>(sent),
                   static_cast<long long>(total), last ? "\n" : "");
    } else {
      std::fprintf(stderr, "dotsctl pool load: sent %lld/%lld questions (%d%%)\n",
                   static_cast<long long>(sent), static_cast<long long>(total),
                   static_cast<int>(fraction * 100));
    }
    std::fflush(stderr);
  }

 private:
  const bool tty_;
  absl::Time last_print_ = absl::InfinitePast();
};

// The arguments of the pool subcommands.
struct PoolArgs {
  std::string run_id;
  std::string questions;   // --questions
  std::string embeddings;  // --embeddings
};

int Load(const PoolArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("pool load", connection, kLoadTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<LocalPool> pool = ReadLocalPool(args.questions, args.embeddings);
  if (!pool.ok()) return Fail(pool.status());

  ProgressReporter progress;
  absl::StatusOr<UpsertResult> result = client->UpsertQuestions(
      args.run_id, pool->questions, pool->embeddings,
      [&progress](int64_t sent, int64_t total) { progress.Update(sent, total); });
  if (!result.ok()) return Fail(result.status());
  std::vector<LineError> rejected = std::move(pool->rejected);
  for (const RejectedQuestion& r : result->rejected) {
    const bool known = r.index >= 0 && r.index < static_cast<int64_t>(pool->lines.size());
    rejected.push_back({known ? pool->lines[static_cast<size_t>(r.index)] : -1, r.error});
  }
  std::stable_sort(rejected.begin(), rejected.end(),
                   [](const LineError& a, const LineError& b) { return a.line < b.line; });
  std::string out = absl::StrCat("{\"added\": ", result->added, ", \"updated\": ", result->updated,
                                 ", \"rejected\": [");
  for (size_t i = 0; i < rejected.size(); ++i) {
    absl::StrAppend(&out, i > 0 ? ", " : "", "{\"line\": ", rejected[i].line, ", \"error\": ");
    AppendJsonString(rejected[i].error, &out);
    out += "}";
  }
  out += "]}";
  PrintJson(out);
  return 0;
}

int Import(const PoolArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("pool import", connection, kLoadTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<ImportProgress> done =
      client->ImportPool(args.run_id, args.questions, args.embeddings, [](const ImportProgress& p) {
        if (!p.done) {
          std::fprintf(stderr, "dotsctl pool import: %lld questions read\n",
                       static_cast<long long>(p.questions_read));
        }
      });
  if (!done.ok()) return Fail(done.status());
  PrintJson(absl::StrCat("{\"questions_read\": ", done->questions_read,
                         ", \"added\": ", done->added, ", \"updated\": ", done->updated, "}"));
  return 0;
}

}  // namespace

void AddPoolCommands(CLI::App* app, const Connection* connection, cli::Action* action) {
  CLI::App* pool = app->add_subcommand("pool", "fill a run's question pool: load, import");
  pool->require_subcommand(1);
  pool->fallthrough();
  cli::AddHelpCommand(pool, action);
  auto args = std::make_shared<PoolArgs>();

  CLI::App* load = AddNetworkedCommand(
      pool, "load", "upload a local pool JSONL (and .npy) to a run",
      "Uploads a question pool to run RUN: questions whose key exists are replaced, others "
      "added. FILE.jsonl has one question per line: {\"key\", \"prompt\", \"metadata\", "
      "\"prior\", \"embedding\"} (core/formats/pool.h). FILE.npy is an N x D float32/float16 "
      "matrix with one row per question line. A malformed line is rejected with its line number "
      "and the rest is uploaded. Prints {\"added\": n, \"updated\": n, \"rejected\": "
      "[{\"line\": n, \"error\": \"...\"}]} (1-based lines; local and server-side "
      "rejections). Progress goes to stderr.",
      kLoadTimeoutSeconds);
  load->add_option("RUN", args->run_id, "run id")->required();
  load->add_option("--questions", args->questions, "pool JSONL file")->required();
  load->add_option("--embeddings", args->embeddings, ".npy embeddings, one row per question line");
  RunsWith(load, action, args, connection, Load);

  CLI::App* import = AddNetworkedCommand(
      pool, "import", "import a pool from files on the server, all or nothing",
      "Asks the server to import a pool JSONL (and .npy) from ITS filesystem, all or nothing: a "
      "malformed file changes nothing and the error names file:line and field. Prints "
      "{\"questions_read\": n, \"added\": n, \"updated\": n}.",
      kLoadTimeoutSeconds);
  import->add_option("RUN", args->run_id, "run id")->required();
  import->add_option("--questions", args->questions, "pool JSONL path on the server")->required();
  import->add_option("--embeddings", args->embeddings, ".npy path on the server");
  RunsWith(import, action, args, connection, Import);
}

}  // namespace dots::dotsctl
