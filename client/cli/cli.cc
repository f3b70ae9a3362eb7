#include "client/cli/cli.h"

#include <cstdio>
#include <string>
#include <vector>

namespace dots::cli {
namespace {

// The deepest selected subcommand (the app itself when none was selected).
const CLI::App* Selected(const CLI::App& app) {
  const CLI::App* current = &app;
  while (!current->get_subcommands().empty()) current = current->get_subcommands().front();
  return current;
}

// "dotsctl run create": the names from the root down to `app`.
std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* p = app->get_parent(); p != nullptr; p = p->get_parent()) {
    path = p->get_name() + " " + path;
  }
  return path;
}

// The help of `app` alone (CLI::App::help would descend into a selected subcommand).
std::string HelpOf(const CLI::App* app) {
  return app->get_formatter()->make_help(app, CommandPath(app), CLI::AppFormatMode::Normal);
}

}  // namespace

std::string Formatter::make_footer(const CLI::App* app) const {
  const std::string footer = CLI::Formatter::make_footer(app);
  if (app->get_parent() == nullptr || !app->get_fallthrough() ||
      !app->get_subcommands({}).empty()) {
    return footer;
  }
  // A leaf that falls through to the root: the root's shared options apply to it too.
  const CLI::App* root = app;
  while (root->get_parent() != nullptr) root = root->get_parent();
  const std::vector<const CLI::Option*> shared = root->get_options(
      [this](const CLI::Option* option) { return option->get_group() == shared_group_; });
  if (shared.empty()) return footer;
  return make_group(shared_group_, false, shared) + (footer.empty() ? "" : "\n" + footer);
}

CLI::App* AddCommand(CLI::App* parent, const std::string& name, const std::string& summary,
                     const std::string& details) {
  CLI::App* command = parent->add_subcommand(name, summary);
  if (!details.empty()) command->footer(details);
  return command;
}

void RunsWhenSelected(CLI::App* command, Action* action, Action run) {
  command->callback([action, run = std::move(run)] { *action = run; });
}

void AddHelpCommand(CLI::App* parent, Action* action) {
  CLI::App* help = parent->add_subcommand("help", "print this help")->group("");
  RunsWhenSelected(help, action, [parent] {
    std::fputs(HelpOf(parent).c_str(), stdout);
    return 0;
  });
}

int ParseAndRun(CLI::App& app, int argc, char** argv, const Action* action) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    const CLI::App* selected = Selected(app);
    const std::string path = CommandPath(selected);
    const bool no_subcommand =
        selected->get_require_subcommand_min() > 0 && selected->get_subcommands().empty();
    // CLI11 says "A subcommand is required" also when the word given is not a known command.
    const std::vector<std::string> unparsed = app.remaining(/*recurse=*/true);
    const std::string what = no_subcommand && !unparsed.empty()
                                 ? "unknown command \"" + unparsed.front() + "\""
                                 : std::string(e.what());
    std::fprintf(stderr, "%s: %s (see %s --help)\n", path.c_str(), what.c_str(), path.c_str());
    if (no_subcommand) std::fputs(("\n" + HelpOf(selected)).c_str(), stderr);
    return 2;
  }
  if (!*action) {
    std::fputs(HelpOf(Selected(app)).c_str(), stderr);
    return 2;
  }
  return (*action)();
}

}  // namespace dots::cli
