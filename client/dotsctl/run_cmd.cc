// dotsctl run create|get|list|delete|export|import: the runs of a dots-server.
#include <cstdio>
#include <filesystem>
#include <string>

#include "client/cpp/json_format.h"
#include "client/dotsctl/commands.h"
#include "core/util/file_util.h"
#include "core/util/json.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 30;

constexpr char kRunUsage[] =
    "usage: dotsctl run SUBCOMMAND RUN [flags]\n\n"
    "subcommands:\n"
    "  create RUN [--config FILE.json]   create a run; prints {\"run_id\", \"config\"} (and\n"
    "                                    \"token\" when the server has access control)\n"
    "  get RUN                           prints {\"run_id\", \"config\", \"pool_size\",\n"
    "                                    \"created_unix_seconds\"}\n"
    "  list                              prints {\"runs\": [ ...as get... ]}\n"
    "  delete RUN                        prints {\"run_id\", \"deleted\": true}\n"
    "  export RUN --out FILE             writes the run's archive; prints {\"run_id\", \"file\",\n"
    "                                    \"bytes\"}\n"
    "  import FILE [--as RUN]            creates a run from an archive; prints as get\n\n"
    "Run `dotsctl run SUBCOMMAND --help` for the flags.\n";

// `json` (an object) with "token": `token` added last, when the server sent one.
std::string WithToken(std::string json, const std::string& token) {
  if (token.empty() || json.empty() || json.back() != '}') return json;
  json.pop_back();
  json += ", \"token\": ";
  AppendJsonString(token, &json);
  json += "}";
  return json;
}

int Create(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run create RUN [--config FILE.json]",
                     "Creates run RUN (1-128 characters of [A-Za-z0-9._-]) from a JSON config; "
                     "absent keys\nkeep the paper's defaults, unknown keys are errors. Prints "
                     "{\"run_id\": ..., \"config\": {...}}\nwith the canonical config (every key "
                     "with its effective value). On a server with access\ncontrol, also "
                     "\"token\": the run's bearer token, shown this once: keep it for the run's\n"
                     "trainers (--token or $DOTS_TOKEN).");
  flags.Add("config", "run config JSON file (default: {} = the paper's defaults)");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run create", args, 1, &flags)) return *exit;
  std::string config = "{}";
  if (flags.Has("config")) {
    absl::StatusOr<std::string> text = ReadFile(flags.Get("config"));
    if (!text.ok()) return Fail(text.status());
    config = std::move(*text);
  }
  std::unique_ptr<Client> client = Connect("run create", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run = client->CreateRun(args.positionals[0], config);
  if (!run.ok()) return Fail(run.status());
  PrintJson(WithToken(RunInfoToJson(*run, /*details=*/false), run->token));
  return 0;
}

int Get(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run get RUN",
                     "Prints {\"run_id\", \"config\": {...}, \"pool_size\", "
                     "\"created_unix_seconds\"} of run RUN.");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run get", args, 1, &flags)) return *exit;
  std::unique_ptr<Client> client = Connect("run get", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run = client->GetRun(args.positionals[0]);
  if (!run.ok()) return Fail(run.status());
  PrintJson(RunInfoToJson(*run, /*details=*/true));
  return 0;
}

int List(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run list",
                     "Prints {\"runs\": [...]}: every run of the server, ordered by id, each as "
                     "`run get` prints it.");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run list", args, 0, &flags)) return *exit;
  std::unique_ptr<Client> client = Connect("run list", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<std::vector<RunInfo>> runs = client->ListRuns();
  if (!runs.ok()) return Fail(runs.status());
  std::string out = "{\"runs\": [";
  for (size_t i = 0; i < runs->size(); ++i) {
    if (i > 0) out += ", ";
    out += RunInfoToJson((*runs)[i], /*details=*/true);
  }
  out += "]}";
  PrintJson(out);
  return 0;
}

int Delete(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run delete RUN",
                     "Deletes run RUN and everything of it (pool, estimates, replay store). "
                     "Prints\n{\"run_id\": ..., \"deleted\": true}. Not retried: a repeat of a "
                     "delete whose answer was\nlost reports NOT_FOUND.");
  AddConnectionFlags(&flags, kTimeoutSeconds);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run delete", args, 1, &flags)) return *exit;
  std::unique_ptr<Client> client = Connect("run delete", flags);
  if (client == nullptr) return 2;
  absl::Status deleted = client->DeleteRun(args.positionals[0]);
  if (!deleted.ok()) return Fail(deleted);
  std::string out = "{\"run_id\": ";
  AppendJsonString(args.positionals[0], &out);
  out += ", \"deleted\": true}";
  PrintJson(out);
  return 0;
}

int Export(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run export RUN --out FILE",
                     "Writes run RUN as a portable, versioned, checksummed archive to FILE (via "
                     "FILE.partial,\nrenamed when complete): the run as of one moment, to move "
                     "it to another server or keep\nbeside a trainer checkpoint. Prints "
                     "{\"run_id\", \"file\", \"bytes\"}.");
  flags.Add("out", "archive file to write (required)");
  AddConnectionFlags(&flags, /*default_timeout_seconds=*/3600);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run export", args, 1, &flags)) return *exit;
  if (!flags.Has("out")) return UsageError("run export", "--out FILE is required");
  std::unique_ptr<Client> client = Connect("run export", flags);
  if (client == nullptr) return 2;
  const std::string out_path = flags.Get("out");
  absl::Status exported = client->ExportRun(args.positionals[0], out_path);
  if (!exported.ok()) return Fail(exported);
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(out_path, ec);
  std::string out = "{\"run_id\": ";
  AppendJsonString(args.positionals[0], &out);
  out += ", \"file\": ";
  AppendJsonString(out_path, &out);
  out += ", \"bytes\": " + std::to_string(ec ? 0 : bytes) + "}";
  PrintJson(out);
  return 0;
}

int Import(int argc, char** argv) {
  cli::FlagSet flags("dotsctl run import FILE [--as RUN]",
                     "Creates a run from an archive written by `dotsctl run export`, under its "
                     "original id or\n--as RUN. The server verifies the whole archive first: a "
                     "corrupted or truncated file\nis rejected and creates nothing. The run "
                     "continues exactly where the exported one was.\nPrints the run as `run get` "
                     "does.");
  flags.Add("as", "id of the new run (default: the archived run's id)");
  AddConnectionFlags(&flags, /*default_timeout_seconds=*/3600);
  const SplitArgs args = SplitPositionals(argc, argv, 3, {});
  if (std::optional<int> exit = ParseCommandLine("run import", args, 1, &flags)) return *exit;
  std::unique_ptr<Client> client = Connect("run import", flags);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run =
      client->ImportRun(args.positionals[0], flags.Has("as") ? flags.Get("as") : "");
  if (!run.ok()) return Fail(run.status());
  PrintJson(WithToken(RunInfoToJson(*run, /*details=*/true), run->token));
  return 0;
}

}  // namespace

int RunCommand(int argc, char** argv) {
  if (argc < 3) {
    std::fputs(kRunUsage, stderr);
    return 2;
  }
  const std::string sub = argv[2];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kRunUsage, stdout);
    return 0;
  }
  if (sub == "create") return Create(argc, argv);
  if (sub == "get") return Get(argc, argv);
  if (sub == "list") return List(argc, argv);
  if (sub == "delete") return Delete(argc, argv);
  if (sub == "export") return Export(argc, argv);
  if (sub == "import") return Import(argc, argv);
  std::fprintf(stderr, "dotsctl run: unknown subcommand \"%s\"\n\n%s", sub.c_str(), kRunUsage);
  return 2;
}

}  // namespace dots::dotsctl
