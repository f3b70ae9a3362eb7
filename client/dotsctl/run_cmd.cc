// dotsctl run create|get|list|delete|export|import: the runs of a dots-server.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "client/dotsctl/commands.h"
#include "client/dotsctl/json_format.h"
#include "core/util/file_util.h"
#include "core/util/json.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 30;
// Archives of large runs take a while to move.
constexpr double kArchiveTimeoutSeconds = 3600;

// `json` (an object) with "token": `token` added last, when the server sent one.
std::string WithToken(std::string json, const std::string& token) {
  if (token.empty() || json.empty() || json.back() != '}') return json;
  json.pop_back();
  json += ", \"token\": ";
  AppendJsonString(token, &json);
  json += "}";
  return json;
}

// The arguments of the run subcommands.
struct RunArgs {
  std::string run_id;     // RUN
  std::string config;     // create --config
  std::string out;        // export --out
  std::string archive;    // import FILE
  std::string as_run_id;  // import --as
};

int Create(const RunArgs& args, const Connection& connection) {
  std::string config = "{}";
  if (!args.config.empty()) {
    absl::StatusOr<std::string> text = ReadFile(args.config);
    if (!text.ok()) return Fail(text.status());
    config = std::move(*text);
  }
  std::unique_ptr<Client> client = Connect("run create", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run = client->CreateRun(args.run_id, config);
  if (!run.ok()) return Fail(run.status());
  PrintJson(WithToken(RunInfoToJson(*run, /*details=*/false), run->token));
  return 0;
}

int Get(const RunArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("run get", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run = client->GetRun(args.run_id);
  if (!run.ok()) return Fail(run.status());
  PrintJson(RunInfoToJson(*run, /*details=*/true));
  return 0;
}

int List(const Connection& connection) {
  std::unique_ptr<Client> client = Connect("run list", connection, kTimeoutSeconds);
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

int Delete(const RunArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("run delete", connection, kTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::Status deleted = client->DeleteRun(args.run_id);
  if (!deleted.ok()) return Fail(deleted);
  std::string out = "{\"run_id\": ";
  AppendJsonString(args.run_id, &out);
  out += ", \"deleted\": true}";
  PrintJson(out);
  return 0;
}

int Export(const RunArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("run export", connection, kArchiveTimeoutSeconds);
  if (client == nullptr) return 2;
  const std::string& out_path = args.out;
  absl::Status exported = client->ExportRun(args.run_id, out_path);
  if (!exported.ok()) return Fail(exported);
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(out_path, ec);
  std::string out = "{\"run_id\": ";
  AppendJsonString(args.run_id, &out);
  out += ", \"file\": ";
  AppendJsonString(out_path, &out);
  out += ", \"bytes\": " + std::to_string(ec ? 0 : bytes) + "}";
  PrintJson(out);
  return 0;
}

int Import(const RunArgs& args, const Connection& connection) {
  std::unique_ptr<Client> client = Connect("run import", connection, kArchiveTimeoutSeconds);
  if (client == nullptr) return 2;
  absl::StatusOr<RunInfo> run = client->ImportRun(args.archive, args.as_run_id);
  if (!run.ok()) return Fail(run.status());
  PrintJson(WithToken(RunInfoToJson(*run, /*details=*/true), run->token));
  return 0;
}

}  // namespace

void AddRunCommands(CLI::App* app, const Connection* connection, cli::Action* action) {
  CLI::App* run =
      app->add_subcommand("run", "the runs of a server: create, get, list, delete, export, import");
  run->require_subcommand(1);
  run->fallthrough();
  cli::AddHelpCommand(run, action);
  auto args = std::make_shared<RunArgs>();
  auto run_id = [&args](CLI::App* command) {
    command->add_option("RUN", args->run_id, "run id: 1-128 characters of [A-Za-z0-9._-]")
        ->required();
  };
  auto on = [action, args, connection](CLI::App* command,
                                       int (*run)(const RunArgs&, const Connection&)) {
    RunsWith(command, action, args, connection, run);
  };

  CLI::App* create = AddNetworkedCommand(
      run, "create", "create a run from a JSON config",
      "Creates run RUN from a JSON config; absent keys keep the paper's defaults, unknown keys "
      "are errors. Prints {\"run_id\": ..., \"config\": {...}} with the canonical config "
      "(every key with its effective value). On a server with access control, also \"token\": "
      "the run's bearer token, shown this once: keep it for the run's trainers (--token or "
      "$DOTS_TOKEN).",
      kTimeoutSeconds);
  run_id(create);
  create->add_option("--config", args->config,
                     "run config JSON file (default: {} = the paper's defaults)");
  on(create, Create);

  CLI::App* get = AddNetworkedCommand(
      run, "get", "print a run's config and sizes",
      "Prints {\"run_id\", \"config\": {...}, \"pool_size\", \"created_unix_seconds\"} of "
      "run RUN.",
      kTimeoutSeconds);
  run_id(get);
  on(get, Get);

  CLI::App* list = AddNetworkedCommand(
      run, "list", "print every run of the server",
      "Prints {\"runs\": [...]}: every run of the server, ordered by id, each as `run get` "
      "prints it.",
      kTimeoutSeconds);
  on(list, [](const RunArgs&, const Connection& c) { return List(c); });

  CLI::App* remove = AddNetworkedCommand(
      run, "delete", "delete a run and everything of it",
      "Deletes run RUN and everything of it (pool, estimates, replay store). Prints "
      "{\"run_id\": ..., \"deleted\": true}. Not retried: a repeat of a delete whose answer was "
      "lost reports NOT_FOUND.",
      kTimeoutSeconds);
  run_id(remove);
  on(remove, Delete);

  CLI::App* export_run = AddNetworkedCommand(
      run, "export", "write a run's archive to a file",
      "Writes run RUN as a portable, versioned, checksummed archive to FILE (via FILE.partial, "
      "renamed when complete): the run as of one moment, to move it to another server or keep "
      "beside a trainer checkpoint. Prints {\"run_id\", \"file\", \"bytes\"}.",
      kArchiveTimeoutSeconds);
  run_id(export_run);
  export_run->add_option("--out", args->out, "archive file to write")->required();
  on(export_run, Export);

  CLI::App* import_run = AddNetworkedCommand(
      run, "import", "create a run from an archive",
      "Creates a run from an archive written by `dotsctl run export`, under its original id or "
      "--as RUN. The server verifies the whole archive first: a corrupted or truncated file is "
      "rejected and creates nothing. The run continues exactly where the exported one was. "
      "Prints the run as `run get` does.",
      kArchiveTimeoutSeconds);
  import_run->add_option("FILE", args->archive, "archive written by `dotsctl run export`")
      ->required();
  import_run->add_option("--as", args->as_run_id,
                         "id of the new run (default: the archived run's id)");
  on(import_run, Import);
}

}  // namespace dots::dotsctl
