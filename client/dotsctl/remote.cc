// Connection flags, argument splitting and error reporting shared by dotsctl's networked
// subcommands.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/dotsctl/commands.h"
#include "core/util/file_util.h"

namespace dots::dotsctl {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::string(value) : fallback;
}

}  // namespace

bool IsConnectionFlag(std::string_view name) {
  return name == "server" || name == "token" || name == "json" || name == "timeout" ||
         name == "tls" || name == "ca_file" || name == "cert_file" || name == "key_file";
}

bool IsBoolConnectionFlag(std::string_view name) { return name == "json" || name == "tls"; }

void AddConnectionFlags(cli::FlagSet* flags, double default_timeout_seconds) {
  flags->Add("server", "dots-server address host:port (env DOTS_SERVER)",
             EnvOr("DOTS_SERVER", kDefaultServer));
  flags->Add("token", "bearer token sent with every call (env DOTS_TOKEN)");
  flags->AddBool("tls", "connect with TLS, trusting the system's CA roots (implied by --ca_file)");
  flags->Add("ca_file",
             "PEM CA certificates that sign the server's certificate: TLS (env "
             "DOTS_CA_FILE)");
  flags->Add("cert_file",
             "PEM client certificate for mutual TLS, with --key_file (env "
             "DOTS_CERT_FILE)");
  flags->Add("key_file", "PEM private key of --cert_file (env DOTS_KEY_FILE)");
  flags->AddBool("json", "machine output (the JSON shapes of `dotsctl --help`; the default too)");
  flags->Add("timeout", "deadline of each call in seconds, retries included",
             absl::StrCat(default_timeout_seconds));
}

absl::StatusOr<std::unique_ptr<Client>> ConnectFromFlags(const cli::FlagSet& flags) {
  Client::Options options;
  options.target = flags.Get("server");
  options.token = flags.Has("token") ? flags.Get("token") : EnvOr("DOTS_TOKEN", "");
  absl::StatusOr<double> timeout = flags.GetDouble("timeout");
  if (!timeout.ok()) return timeout.status();
  if (!(*timeout > 0) || !std::isfinite(*timeout)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout: ", *timeout, " must be a positive number of seconds"));
  }
  options.default_deadline = absl::Seconds(*timeout);
  auto flag_or_env = [&flags](const char* flag, const char* env) {
    return flags.Has(flag) ? flags.Get(flag) : EnvOr(env, "");
  };
  const std::string ca_file = flag_or_env("ca_file", "DOTS_CA_FILE");
  const std::string cert_file = flag_or_env("cert_file", "DOTS_CERT_FILE");
  const std::string key_file = flag_or_env("key_file", "DOTS_KEY_FILE");
  if (flags.GetBool("tls") || !ca_file.empty() || !cert_file.empty() || !key_file.empty()) {
    absl::Status loaded = Client::LoadTlsFiles(ca_file, cert_file, key_file, &options);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ca_file/--cert_file/--key_file: ", loaded.message()));
    }
  }
  return Client::Create(std::move(options));
}

std::unique_ptr<Client> Connect(const std::string& command, const cli::FlagSet& flags) {
  absl::StatusOr<std::unique_ptr<Client>> client = ConnectFromFlags(flags);
  if (!client.ok()) {
    UsageError(command, std::string(client.status().message()));
    return nullptr;
  }
  return std::move(*client);
}

SplitArgs SplitPositionals(int argc, char** argv, int first,
                           const std::vector<std::string>& bool_flags) {
  SplitArgs out;
  out.flag_argv.push_back(argv[0]);
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      out.flag_argv.push_back(argv[i]);
    } else if (arg.rfind("--", 0) == 0) {
      out.flag_argv.push_back(argv[i]);
      const std::string name = arg.substr(2);
      const bool is_bool =
          std::find(bool_flags.begin(), bool_flags.end(), name) != bool_flags.end() ||
          IsBoolConnectionFlag(name);
      if (name.find('=') == std::string::npos && !is_bool && i + 1 < argc) {
        out.flag_argv.push_back(argv[++i]);
      }
    } else {
      out.positionals.push_back(arg);
    }
  }
  return out;
}

std::optional<int> ParseCommandLine(const std::string& command, const SplitArgs& args,
                                    size_t positionals, cli::FlagSet* flags) {
  absl::StatusOr<bool> parsed =
      flags->Parse(static_cast<int>(args.flag_argv.size()),
                   const_cast<char**>(args.flag_argv.data()), /*first=*/1);
  if (!parsed.ok()) return UsageError(command, std::string(parsed.status().message()));
  if (!*parsed) return 0;
  if (args.positionals.size() != positionals) {
    if (args.positionals.size() < positionals) return UsageError(command, "missing RUN argument");
    return UsageError(command,
                      absl::StrCat("unexpected argument \"", args.positionals[positionals], "\""));
  }
  return std::nullopt;
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
