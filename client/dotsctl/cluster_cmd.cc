// dotsctl cluster list|rebalance: the runs of a cluster of dots-server replicas behind the
// HAProxy router of deploy/haproxy (placement.h says where the router sends each run).
//
// How a move stays safe when interrupted at any point. A run is "live" on a replica when it is
// there and not sealed; sealed copies (SealRun) refuse every change. A move of run R from replica
// S to its owner T: (1) seal R on S, durably, after every change S acknowledged is durable;
// (2) export R from S to a local file; (3) import it on T (the server verifies the whole archive
// before writing, and an import is atomic; it imports unsealed); (4) check that T's copy has the
// same sizes and counters as S's; (5) delete R on S. At every point there is at most one live
// copy, and every sealed copy holds exactly what its run acknowledged before the seal. A rerun
// decides from what it finds, per run: a live copy makes every sealed copy elsewhere stale
// (deleted); a live copy not on the owner is sealed and moved; a single sealed copy is moved to
// the owner, or unsealed when it is on the owner. Two live copies are never created by this
// protocol; if found (made by hand), the run is left alone and reported as a conflict.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/dotsctl/commands.h"
#include "client/dotsctl/json_format.h"
#include "client/dotsctl/placement.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots::dotsctl {
namespace {

constexpr double kTimeoutSeconds = 30;
constexpr double kArchiveTimeoutSeconds = 3600;
// Deadline of each control call (list, seal, compare, delete) unless --timeout is shorter: a
// replica that is down fails the command within this, naming it, not within the archive timeout.
constexpr double kControlSeconds = 20;

CallOptions ControlCall(const Connection& connection) {
  const double seconds = connection.timeout_seconds > 0
                             ? std::min(connection.timeout_seconds, kControlSeconds)
                             : kControlSeconds;
  return CallOptions{absl::Seconds(seconds)};
}

struct ClusterArgs {
  std::string servers;               // --servers A,B,C
  std::string work_dir;              // rebalance --work-dir
  bool dry_run = false;              // rebalance --dry-run
  bool keep_sealed_sources = false;  // rebalance --keep-sealed-sources
};

// One replica: its address, a client to it and the options of its control calls.
struct Replica {
  std::string address;
  std::unique_ptr<Client> client;
  CallOptions control;
};

// A copy of a run on a replica.
struct Copy {
  int replica;
  RunInfo info;
};

absl::Status Annotate(const absl::Status& status, const std::string& what) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

// Clients to every address of --servers; a usage error (exit 2) for an empty or repeated one.
int ConnectAll(const std::string& command, const ClusterArgs& args, const Connection& connection,
               double timeout, std::vector<Replica>* replicas) {
  std::vector<std::string> addresses = absl::StrSplit(args.servers, ',', absl::SkipWhitespace());
  if (addresses.empty()) return UsageError(command, "--servers: no replica address given");
  for (size_t i = 0; i < addresses.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (addresses[i] == addresses[j]) {
        return UsageError(command, absl::StrCat("--servers: ", addresses[i], " is given twice"));
      }
    }
    Connection one = connection;
    one.server = addresses[i];
    std::unique_ptr<Client> client = Connect(command, one, timeout);
    if (client == nullptr) return 2;
    replicas->push_back({addresses[i], std::move(client), ControlCall(connection)});
  }
  return 0;
}

// Every run of every replica, by id. Fails naming the first replica that does not answer:
// nothing is decided from a partial view.
absl::Status ListAll(std::vector<Replica>& replicas,
                     std::map<std::string, std::vector<Copy>>* out) {
  for (size_t r = 0; r < replicas.size(); ++r) {
    absl::StatusOr<std::vector<RunInfo>> runs = replicas[r].client->ListRuns(replicas[r].control);
    if (!runs.ok()) {
      return Annotate(runs.status(), absl::StrCat("replica ", replicas[r].address));
    }
    for (RunInfo& run : *runs) {
      std::string id = run.run_id;
      (*out)[id].push_back({static_cast<int>(r), std::move(run)});
    }
  }
  return absl::OkStatus();
}

std::string RunLocationJson(const std::string& id, const std::vector<Copy>& copies, int owner,
                            const std::vector<Replica>& replicas) {
  std::string out = "{\"run_id\": ";
  AppendJsonString(id, &out);
  out += ", \"owner\": ";
  AppendJsonString(replicas[owner].address, &out);
  out += ", \"copies\": [";
  for (size_t i = 0; i < copies.size(); ++i) {
    if (i > 0) out += ", ";
    out += "{\"server\": ";
    AppendJsonString(replicas[copies[i].replica].address, &out);
    out += absl::StrCat(", \"sealed\": ", copies[i].info.sealed ? "true" : "false",
                        ", \"pool_size\": ", copies[i].info.pool_size, "}");
  }
  out += "]}";
  return out;
}

int List(const ClusterArgs& args, const Connection& connection) {
  std::vector<Replica> replicas;
  if (int code = ConnectAll("cluster list", args, connection, kTimeoutSeconds, &replicas)) {
    return code;
  }
  std::map<std::string, std::vector<Copy>> runs;
  if (absl::Status s = ListAll(replicas, &runs); !s.ok()) return Fail(s);
  const Placement placement(static_cast<int>(replicas.size()));
  std::vector<int64_t> per_replica(replicas.size(), 0);
  int64_t misplaced = 0;
  std::string out = "{\"runs\": [";
  bool first = true;
  for (const auto& [id, copies] : runs) {
    const int owner = placement.Owner(id);
    bool on_owner = false;
    for (const Copy& c : copies) {
      ++per_replica[c.replica];
      on_owner = on_owner || (c.replica == owner && !c.info.sealed);
    }
    if (!on_owner || copies.size() > 1) ++misplaced;
    if (!first) out += ", ";
    first = false;
    out += RunLocationJson(id, copies, owner, replicas);
  }
  out += "], \"servers\": [";
  for (size_t r = 0; r < replicas.size(); ++r) {
    if (r > 0) out += ", ";
    out += "{\"server\": ";
    AppendJsonString(replicas[r].address, &out);
    out += absl::StrCat(", \"runs\": ", per_replica[r], "}");
  }
  out += absl::StrCat("], \"misplaced\": ", misplaced, "}");
  PrintJson(out);
  return 0;
}

// The counters a whole copy of a run must share with its source.
absl::Status CheckSameRun(const std::string& id, Replica& from, Replica& to) {
  absl::StatusOr<RunStats> a = from.client->GetRunStats(id, from.control);
  if (!a.ok()) return Annotate(a.status(), absl::StrCat("run ", id, " on ", from.address));
  absl::StatusOr<RunStats> b = to.client->GetRunStats(id, to.control);
  if (!b.ok()) return Annotate(b.status(), absl::StrCat("run ", id, " on ", to.address));
  if (a->step != b->step || a->round != b->round || a->pool_size != b->pool_size ||
      a->reported_groups != b->reported_groups || a->duplicate_reports != b->duplicate_reports ||
      a->effective_groups != b->effective_groups || a->replay_groups != b->replay_groups) {
    return absl::DataLossError(
        absl::StrCat("run ", id, ": the copy imported on ", to.address, " differs from the one on ",
                     from.address, " (step ", b->step, " vs ", a->step, ", reported groups ",
                     b->reported_groups, " vs ", a->reported_groups, ", pool ", b->pool_size,
                     " vs ", a->pool_size, "); the sealed source is kept"));
  }
  return absl::OkStatus();
}

// Moves the sealed copy of run `id` from replica `from` to `to` (steps 2-5 of the header).
absl::Status Move(const std::string& id, Replica& from, Replica& to, const std::string& dir,
                  bool keep_source, int64_t* bytes) {
  const std::string file = (std::filesystem::path(dir) / (id + ".dotsrun")).string();
  if (absl::Status s = from.client->ExportRun(id, file); !s.ok()) {
    return Annotate(s, absl::StrCat("export of run ", id, " from ", from.address));
  }
  std::error_code ec;
  *bytes = static_cast<int64_t>(std::filesystem::file_size(file, ec));
  absl::StatusOr<RunInfo> imported = to.client->ImportRun(file);
  std::filesystem::remove(file, ec);
  if (!imported.ok()) {
    return Annotate(imported.status(), absl::StrCat("import of run ", id, " on ", to.address));
  }
  DOTS_RETURN_IF_ERROR(CheckSameRun(id, from, to));
  if (keep_source) return absl::OkStatus();  // a later rebalance deletes the sealed source
  if (absl::Status s = from.client->DeleteRun(id, from.control); !s.ok()) {
    return Annotate(s, absl::StrCat("delete of the moved run ", id, " on ", from.address));
  }
  return absl::OkStatus();
}

void Progress(const std::string& message) {
  std::fprintf(stderr, "dotsctl cluster rebalance: %s\n", message.c_str());
}

int Rebalance(const ClusterArgs& args, const Connection& connection) {
  std::vector<Replica> replicas;
  if (int code =
          ConnectAll("cluster rebalance", args, connection, kArchiveTimeoutSeconds, &replicas)) {
    return code;
  }
  std::map<std::string, std::vector<Copy>> runs;
  if (absl::Status s = ListAll(replicas, &runs); !s.ok()) {
    Progress("nothing was moved");
    return Fail(s);
  }
  std::string dir = args.work_dir;
  bool own_dir = false;
  if (dir.empty() && !args.dry_run) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "dotsctl-rebalance-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return Fail(absl::InternalError(absl::StrCat("cannot create a directory like ", pattern)));
    }
    dir = pattern;
    own_dir = true;
  }
  const Placement placement(static_cast<int>(replicas.size()));
  std::string moved = "[", actions = "[", conflicts = "[";
  int64_t unchanged = 0;
  absl::Status failure;
  auto note = [](std::string* list, const std::string& item) {
    if (list->size() > 1) *list += ", ";
    *list += item;
  };
  auto action = [&](const std::string& id, const std::string& what, int replica) {
    std::string item = "{\"run_id\": ";
    AppendJsonString(id, &item);
    item += ", \"action\": ";
    AppendJsonString(what, &item);
    item += ", \"server\": ";
    AppendJsonString(replicas[replica].address, &item);
    item += "}";
    note(&actions, item);
    Progress(absl::StrCat(what, " run ", id, " on ", replicas[replica].address));
  };
  for (auto& [id, copies] : runs) {
    const int owner = placement.Owner(id);
    std::vector<const Copy*> live, sealed;
    for (const Copy& c : copies) (c.info.sealed ? sealed : live).push_back(&c);
    if (live.size() > 1) {
      std::string item = RunLocationJson(id, copies, owner, replicas);
      note(&conflicts, item);
      Progress(absl::StrCat("CONFLICT: run ", id,
                            " is live on more than one replica; left alone: delete the stale copy "
                            "by hand (dotsctl run delete)"));
      continue;
    }
    if (live.empty() && sealed.size() > 1) {
      note(&conflicts, RunLocationJson(id, copies, owner, replicas));
      Progress(absl::StrCat("CONFLICT: run ", id, " has several sealed copies and no live one"));
      continue;
    }
    if (live.size() == 1 && live[0]->replica == owner && sealed.empty()) {
      ++unchanged;
      continue;
    }
    if (args.dry_run) {
      note(&actions, RunLocationJson(id, copies, owner, replicas));
      continue;
    }
    absl::Status s;
    int source = -1;  // the replica holding the one copy to move or unseal
    if (live.size() == 1) {
      source = live[0]->replica;
      for (const Copy* c : sealed) {  // stale: the live copy is the run
        s = replicas[c->replica].client->DeleteRun(id, replicas[c->replica].control);
        if (!s.ok() && s.code() != absl::StatusCode::kNotFound) break;
        s = absl::OkStatus();
        action(id, "deleted the stale sealed copy of", c->replica);
      }
      if (s.ok() && source != owner) {
        absl::StatusOr<RunInfo> info =
            replicas[source].client->SealRun(id, true, replicas[source].control);
        s = info.status();
        if (s.ok()) action(id, "sealed", source);
      }
    } else {
      source = sealed[0]->replica;
    }
    if (s.ok() && source == owner) {
      if (!live.empty()) continue;  // it was live on its owner: only stale copies were removed
      absl::StatusOr<RunInfo> info =
          replicas[owner].client->SealRun(id, false, replicas[owner].control);
      s = info.status();
      if (s.ok()) action(id, "unsealed", owner);
    } else if (s.ok()) {
      Progress(absl::StrCat("moving run ", id, " from ", replicas[source].address, " to ",
                            replicas[owner].address));
      int64_t bytes = 0;
      s = Move(id, replicas[source], replicas[owner], dir, args.keep_sealed_sources, &bytes);
      if (s.ok()) {
        std::string item = "{\"run_id\": ";
        AppendJsonString(id, &item);
        item += ", \"from\": ";
        AppendJsonString(replicas[source].address, &item);
        item += ", \"to\": ";
        AppendJsonString(replicas[owner].address, &item);
        item += absl::StrCat(", \"bytes\": ", bytes, "}");
        note(&moved, item);
      }
    }
    if (!s.ok()) {
      failure = s;
      Progress(absl::StrCat("stopped at run ", id,
                            ": rerun when the replica is back; every run is intact (at most one "
                            "live copy, sealed copies refuse changes)"));
      break;
    }
  }
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  if (!failure.ok()) return Fail(failure);
  PrintJson(absl::StrCat("{\"dry_run\": ", args.dry_run ? "true" : "false", ", \"moved\": ", moved,
                         "], \"actions\": ", actions, "], \"unchanged\": ", unchanged,
                         ", \"conflicts\": ", conflicts, "]}"));
  return conflicts.size() > 1 ? 1 : 0;
}

}  // namespace

void AddClusterCommands(CLI::App* app, const Connection* connection, cli::Action* action) {
  CLI::App* cluster = app->add_subcommand(
      "cluster", "the runs of a cluster of replicas behind the HAProxy router: list, rebalance");
  cluster->require_subcommand(1);
  cluster->fallthrough();
  cli::AddHelpCommand(cluster, action);
  auto args = std::make_shared<ClusterArgs>();
  auto servers = [&args](CLI::App* command) {
    command
        ->add_option("--servers", args->servers,
                     "every replica, host:port comma-separated, in the order of the router's "
                     "config (deploy/haproxy/make-config.sh): position i is replica id i+1")
        ->required();
  };

  CLI::App* list = AddNetworkedCommand(
      cluster, "list", "print every run with its replica and owner",
      "Lists the runs of every replica of --servers. Prints {\"runs\": [{\"run_id\", \"owner\", "
      "\"copies\": [{\"server\", \"sealed\", \"pool_size\"}]}], \"servers\": [{\"server\", "
      "\"runs\"}], \"misplaced\"}: \"owner\" is the replica the router sends the run's calls to; "
      "a run is misplaced when it is not live on its owner alone (`cluster rebalance` fixes "
      "that). With --token: the admin token (the same for every replica).",
      kTimeoutSeconds);
  servers(list);
  RunsWith(list, action, args, connection, List);

  CLI::App* rebalance = AddNetworkedCommand(
      cluster, "rebalance", "move every run to the replica that owns it",
      "Moves each run that is not on its owner (after replicas were added or removed) from its "
      "replica to its owner: seal at the source, export, import on the owner (verified whole), "
      "compare, delete at the source. Interrupted at any point and rerun, it finishes the job: "
      "no run is lost or left live on two replicas (see the top of cluster_cmd.cc). Run it "
      "BEFORE the router is given the new replica list, so that calls keep reaching the copy "
      "that serves them (sealed runs answer UNAVAILABLE, which clients retry, until the router "
      "sends their calls to the new owner). Progress on stderr. Prints {\"dry_run\", "
      "\"moved\": [{\"run_id\", \"from\", \"to\", \"bytes\"}], \"actions\": [...], "
      "\"unchanged\", \"conflicts\": [...]}. Exit 1 when a replica fails (naming it and the run; "
      "rerun once it is back) or a conflict is found.",
      kArchiveTimeoutSeconds);
  servers(rebalance);
  rebalance->add_option("--work-dir", args->work_dir,
                        "directory for the archives in transit (default: a fresh temporary one)");
  rebalance->add_flag("--dry-run", args->dry_run,
                      "print what would change (the misplaced runs), change nothing");
  rebalance->add_flag(
      "--keep-sealed-sources", args->keep_sealed_sources,
      "leave each moved run's sealed source in place: until the router has the new list, calls "
      "that still reach the old replica get UNAVAILABLE (retried) rather than NOT_FOUND; a "
      "rebalance run after the router update deletes the sealed sources");
  RunsWith(rebalance, action, args, connection, Rebalance);
}

}  // namespace dots::dotsctl
