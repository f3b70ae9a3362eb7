// A small command-line parser for dotsctl and dots-bench subcommands: `--name value`,
// `--name=value` and boolean `--name`, generated `--help`, and an error naming any unknown or
// malformed flag. (Abseil flags are process-global, which does not fit per-subcommand help.)
#ifndef DOTS_CLIENT_CLI_FLAGS_H_
#define DOTS_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dots::cli {

class FlagSet {
 public:
  // `usage` is the first help line, e.g. "dotsctl estimate --questions Q.jsonl ...".
  FlagSet(std::string usage, std::string description);

  // Declares a flag taking a value; `default_value` empty means "unset" unless given.
  void Add(const std::string& name, const std::string& help, const std::string& default_value = "");
  // Declares a boolean flag (present = true; also accepts --name=true|false).
  void AddBool(const std::string& name, const std::string& help);

  // Parses argv[first..argc). Returns false after printing help when --help/-h is present.
  // Errors: INVALID_ARGUMENT for an unknown flag, a missing value or a stray positional.
  absl::StatusOr<bool> Parse(int argc, char** argv, int first);

  bool Has(const std::string& name) const;  // given explicitly or with a default
  std::string Get(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  // Errors unless the flag has a non-empty value: "--name is required".
  absl::StatusOr<std::string> Require(const std::string& name) const;

  std::string Help() const;

 private:
  struct Flag {
    std::string help;
    std::string default_value;
    bool is_bool = false;
  };
  std::string usage_;
  std::string description_;
  std::vector<std::string> order_;
  std::map<std::string, Flag> flags_;
  std::map<std::string, std::string> values_;
};

}  // namespace dots::cli

#endif  // DOTS_CLIENT_CLI_FLAGS_H_
