#include "client/cli/flags.h"

#include <cstdio>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dots::cli {

FlagSet::FlagSet(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {}

void FlagSet::Add(const std::string& name, const std::string& help,
                  const std::string& default_value) {
  order_.push_back(name);
  flags_[name] = Flag{help, default_value, false};
}

void FlagSet::AddBool(const std::string& name, const std::string& help) {
  order_.push_back(name);
  flags_[name] = Flag{help, "", true};
}

absl::StatusOr<bool> FlagSet::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Help().c_str(), stdout);
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\" (see --help)"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (it->second.is_bool) {
      if (value.has_value() && *value != "true" && *value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, ": want true or false, got \"", *value, "\""));
      }
      values_[name] = value.value_or("true");
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    values_[name] = *value;
  }
  return true;
}

bool FlagSet::Has(const std::string& name) const { return !Get(name).empty(); }

std::string FlagSet::Get(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  if (auto it = flags_.find(name); it != flags_.end()) return it->second.default_value;
  return "";
}

bool FlagSet::GetBool(const std::string& name) const { return Get(name) == "true"; }

absl::StatusOr<int64_t> FlagSet::GetInt(const std::string& name) const {
  int64_t v = 0;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": \"", Get(name), "\" is not an integer"));
  }
  return v;
}

absl::StatusOr<double> FlagSet::GetDouble(const std::string& name) const {
  double v = 0;
  if (!absl::SimpleAtod(Get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": \"", Get(name), "\" is not a number"));
  }
  return v;
}

absl::StatusOr<std::string> FlagSet::Require(const std::string& name) const {
  if (!Has(name)) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return Get(name);
}

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("usage: ", usage_, "\n\n", description_, "\n\nflags:\n");
  for (const std::string& name : order_) {
    const Flag& f = flags_.at(name);
    std::string left = absl::StrCat("  --", name, f.is_bool ? "" : " VALUE");
    if (left.size() < 28) left.resize(28, ' ');
    absl::StrAppend(&out, left, " ", f.help);
    if (!f.default_value.empty()) absl::StrAppend(&out, " (default ", f.default_value, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace dots::cli
