// The connection flags and error reporting shared by dotsctl's networked subcommands.
#include <cmath>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/dotsctl/commands.h"

namespace dots::dotsctl {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

}  // namespace

void AddConnectionFlags(CLI::App* app, Connection* connection) {
  connection->server = kDefaultServer;
  app->add_option("--server", connection->server, "dots-server address host:port")
      ->envname("DOTS_SERVER")
      ->capture_default_str()
      ->group(kConnectionGroup);
  app->add_option("--token", connection->token, "bearer token sent with every call")
      ->envname("DOTS_TOKEN")
      ->group(kConnectionGroup);
  app->add_flag("--tls", connection->tls,
                "connect with TLS, trusting the system's CA roots (implied by --ca_file)")
      ->group(kConnectionGroup);
  app->add_option("--ca_file", connection->ca_file,
                  "PEM CA certificates that sign the server's certificate: TLS")
      ->envname("DOTS_CA_FILE")
      ->group(kConnectionGroup);
  app->add_option("--cert_file", connection->cert_file,
                  "PEM client certificate for mutual TLS, with --key_file")
      ->envname("DOTS_CERT_FILE")
      ->group(kConnectionGroup);
  app->add_option("--key_file", connection->key_file, "PEM private key of --cert_file")
      ->envname("DOTS_KEY_FILE")
      ->group(kConnectionGroup);
  app->add_flag("--json", connection->json,
                "machine output (the JSON shapes of `dotsctl --help`; the default too)")
      ->group(kConnectionGroup);
  app->add_option("--timeout", connection->timeout_seconds,
                  "deadline of each call in seconds, retries included (default: the command's)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            double v = 0;
            const bool number = CLI::detail::lexical_cast(text, v);
            return number && v > 0 && std::isfinite(v) ? ""
                                                       : "must be a positive number of seconds";
          },
          "SECONDS>0"))
      ->group(kConnectionGroup);
}

CLI::App* AddNetworkedCommand(CLI::App* parent, const std::string& name, const std::string& summary,
                              const std::string& details, double default_timeout_seconds) {
  CLI::App* command =
      cli::AddCommand(parent, name, summary,
                      absl::StrCat(details, "\n--timeout defaults to ", default_timeout_seconds,
                                   " seconds for this command."));
  command->fallthrough();
  return command;
}

std::unique_ptr<Client> Connect(const std::string& command, const Connection& connection,
                                double default_timeout_seconds) {
  Client::Options options;
  options.target = connection.server;
  options.token = connection.token;
  options.default_deadline = absl::Seconds(
      connection.timeout_seconds > 0 ? connection.timeout_seconds : default_timeout_seconds);
  if (connection.tls || !connection.ca_file.empty() || !connection.cert_file.empty() ||
      !connection.key_file.empty()) {
    absl::Status loaded = Client::LoadTlsFiles(connection.ca_file, connection.cert_file,
                                               connection.key_file, &options);
    if (!loaded.ok()) {
      UsageError(command, absl::StrCat("--ca_file/--cert_file/--key_file: ", loaded.message()));
      return nullptr;
    }
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  if (!client.ok()) {
    UsageError(command, std::string(client.status().message()));
    return nullptr;
  }
  return std::move(*client);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "dotsctl: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

int UsageError(const std::string& command, std::string_view message) {
  std::fprintf(stderr, "dotsctl %s: %.*s (see dotsctl %s --help)\n", command.c_str(),
               static_cast<int>(message.size()), message.data(), command.c_str());
  return 2;
}

void PrintJson(const std::string& json) {
  std::fwrite(json.data(), 1, json.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace dots::dotsctl
