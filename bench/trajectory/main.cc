// dots-bench: in-process benchmarks over core/.
//
//   dots-bench trajectory --data FILE [flags]   replay a recorded GRPO run (see trajectory.h)
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/durability/durability.h"
#include "bench/load/load.h"
#include "bench/soak/soak.h"
#include "bench/trajectory/trajectory.h"
#include "client/cli/flags.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots::bench {
namespace {

struct Summary {
  double effective_ratio = 0, pearson = 0, mae = 0;
  double replay_fraction = 0, replay_age = 0;
  int64_t rollouts = 0, fresh_rollouts = 0;
  std::vector<TrajectoryResult> per_seed;
};

absl::StatusOr<std::vector<uint64_t>> ParseSeeds(const std::string& seed,
                                                 const std::string& seeds) {
  std::vector<uint64_t> out;
  if (seeds.empty()) {
    uint64_t s = 0;
    if (!absl::SimpleAtoi(seed, &s)) {
      return absl::InvalidArgumentError(absl::StrCat("--seed: \"", seed, "\" is not an integer"));
    }
    return std::vector<uint64_t>{s};
  }
  for (absl::string_view part : absl::StrSplit(seeds, ',')) {
    std::vector<std::string> range = absl::StrSplit(part, '-');
    uint64_t lo = 0, hi = 0;
    if (range.size() > 2 || !absl::SimpleAtoi(range[0], &lo) ||
        !absl::SimpleAtoi(range.back(), &hi) || hi < lo || hi - lo > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("--seeds: \"", seeds, "\" is not a list of seeds or ranges like 1-5"));
    }
    for (uint64_t s = lo; s <= hi; ++s) out.push_back(s);
  }
  return out;
}

// `protocol` set: replay through core::Run with that run config (replay etc.); else direct.
absl::StatusOr<Summary> RunSeeds(const TrajectoryData& data,
                                 const std::shared_ptr<const Adapter>& adapter,
                                 TrajectoryConfig config, const std::vector<uint64_t>& seeds,
                                 const std::optional<RunConfig>& protocol) {
  Summary summary;
  for (uint64_t seed : seeds) {
    config.seed = seed;
    absl::StatusOr<TrajectoryResult> result = protocol.has_value()
                                                  ? RunTrajectoryProtocol(data, config, *protocol)
                                                  : RunTrajectory(data, adapter, config);
    DOTS_ASSIGN_OR_RETURN(TrajectoryResult r, std::move(result));
    summary.replay_fraction += r.replay_fraction / seeds.size();
    summary.replay_age += r.replay_age / seeds.size();
    summary.fresh_rollouts += r.fresh_rollouts;
    summary.effective_ratio += r.effective_ratio / seeds.size();
    summary.pearson += r.pearson / seeds.size();
    summary.mae += r.mae / seeds.size();
    summary.rollouts += r.rollouts;
    summary.per_seed.push_back(std::move(r));
  }
  summary.rollouts /= static_cast<int64_t>(seeds.size());
  summary.fresh_rollouts /= static_cast<int64_t>(seeds.size());
  return summary;
}

std::string MetricsJson(const Summary& s, bool protocol) {
  std::string out = absl::StrFormat(
      R"({"effective_ratio": %s, "pearson": %s, "mae": %s, "rollouts": %d)",
      JsonNumber(s.effective_ratio), JsonNumber(s.pearson), JsonNumber(s.mae), s.rollouts);
  if (protocol) {
    absl::StrAppend(
        &out,
        absl::StrFormat(R"(, "replay_fraction": %s, "replay_age": %s, "fresh_rollouts": %d)",
                        JsonNumber(s.replay_fraction), JsonNumber(s.replay_age), s.fresh_rollouts));
  }
  return out + "}";
}

int Trajectory(int argc, char** argv) {
  cli::FlagSet flags(
      "dots-bench trajectory --data FILE [flags]",
      "Replays a recorded GRPO run: at epoch t the true success rate of a question is its\n"
      "history[t]; every question handed out is reported back as round(G*rate) successes of G.\n"
      "Estimates are scored over the whole pool at the start of each epoch, before its reports.\n"
      "Prints the selection quality of the chosen configuration next to the uniform, history\n"
      "and paper baselines computed in the same run.");
  flags.Add("data", "question JSONL with a `history` array per line");
  flags.Add("embeddings",
            "N x D .npy of the questions' embeddings (default: the lines' own, "
            "else the built-in text embedder)");
  flags.Add("budget", "questions handed out per epoch (inline references included)", "256");
  flags.Add("ref-size", "reference questions per epoch (K)", "32");
  flags.Add("epochs", "epochs to replay; 0 = the shortest history", "0");
  flags.Add("group-size", "rollouts per question (G)", "8");
  flags.Add("estimator", "default | history | paper", "default");
  flags.Add("selector", "dots | uniform | greedy | band | thompson | posterior", "dots");
  flags.Add("alpha", "target success rate", "0.5");
  flags.Add("tau", "selection temperature", "0.001");
  flags.Add("reference-mode", "inline | paper | none", "inline");
  flags.Add("reference-sampling",
            "uniform | informative; default: informative for the default estimator, else "
            "uniform");
  flags.Add("reference-coverage", "informative sampling: fraction of K spent on the stalest",
            "0.25");
  flags.Add("reference-sharpness", "informative sampling: exponent of P(informative)", "5");
  flags.Add("adapter", "paper adapter (.safetensors); default: identity projection");
  flags.Add("decay", "history decay per policy version (lambda)", "0.95");
  flags.Add("prior-strength", "pseudo-count of the prior mean (n0)", "1");
  flags.Add("label-window", "policy versions a label stays in the labeled set; 0 = all", "0");
  flags.Add("attention-tau", "attention temperature (default: adapter's, 0.05 for identity)");
  flags.Add("top-k", "attend to the top-k labeled questions only; 0 = all (default: adapter's)");
  flags.AddBool("no-prior", "ignore the pool's `prior` field");
  flags.AddBool("no-model", "default estimator without the online model (probe) feature");
  flags.Add("seed", "random seed", "1");
  flags.Add("seeds", "several seeds, e.g. 1-5 or 1,3,7; metrics are averaged");
  flags.Add("protocol",
            "direct: estimator and selector called directly; run: through the service's run "
            "protocol (core::Run) with rollout replay, one epoch = one step = one round",
            "direct");
  flags.Add("fresh-fraction", "run protocol: fresh share of each batch (delta)", "0.5");
  flags.Add("replay-capacity", "run protocol: replay store capacity in groups (C)", "512");
  flags.Add("replay-strategy", "run protocol: uniform | targeted", "uniform");
  flags.AddBool("no-replay", "run protocol: disable rollout replay");
  flags.AddBool("no-baselines", "skip the uniform / history / paper baselines");
  flags.AddBool("json", "print one JSON object instead of a table");
  absl::StatusOr<bool> parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) {
    std::fprintf(stderr, "dots-bench trajectory: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (!*parsed) return 0;
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "dots-bench trajectory: %s\n", std::string(s.message()).c_str());
    return 1;
  };

  TrajectoryConfig config;
  absl::StatusOr<std::string> data_path = flags.Require("data");
  if (!data_path.ok()) return fail(data_path.status());
  absl::StatusOr<int64_t> budget = flags.GetInt("budget");
  absl::StatusOr<int64_t> ref_size = flags.GetInt("ref-size");
  absl::StatusOr<int64_t> epochs = flags.GetInt("epochs");
  absl::StatusOr<int64_t> group = flags.GetInt("group-size");
  absl::StatusOr<int64_t> window = flags.GetInt("label-window");
  absl::StatusOr<double> alpha = flags.GetDouble("alpha");
  absl::StatusOr<double> tau = flags.GetDouble("tau");
  absl::StatusOr<double> decay = flags.GetDouble("decay");
  absl::StatusOr<double> n0 = flags.GetDouble("prior-strength");
  absl::StatusOr<double> coverage = flags.GetDouble("reference-coverage");
  absl::StatusOr<double> sharpness = flags.GetDouble("reference-sharpness");
  absl::StatusOr<EstimatorMode> mode = ParseEstimatorMode(flags.Get("estimator"));
  absl::StatusOr<SelectorStrategy> strategy = ParseSelectorStrategy(flags.Get("selector"));
  absl::StatusOr<std::vector<uint64_t>> seeds = ParseSeeds(flags.Get("seed"), flags.Get("seeds"));
  for (const absl::Status& s : {budget.status(), ref_size.status(), epochs.status(), group.status(),
                                window.status(), alpha.status(), tau.status(), decay.status(),
                                n0.status(), mode.status(), strategy.status(), seeds.status()}) {
    if (!s.ok()) return fail(s);
  }
  config.budget = *budget;
  config.ref_size = *ref_size;
  config.epochs = *epochs;
  config.group_size = static_cast<int>(*group);
  config.selector.strategy = *strategy;
  config.selector.alpha = *alpha;
  config.selector.tau = *tau;
  config.estimator.mode = *mode;
  config.reference_coverage = *coverage;
  config.reference_sharpness = *sharpness;
  config.estimator.decay = *decay;
  config.estimator.prior_strength = *n0;
  config.estimator.label_window = *window;
  config.estimator.use_priors = !flags.GetBool("no-prior");
  config.estimator.model.enabled = !flags.GetBool("no-model");
  if (flags.Has("attention-tau")) {
    absl::StatusOr<double> v = flags.GetDouble("attention-tau");
    if (!v.ok()) return fail(v.status());
    config.estimator.attention_tau = static_cast<float>(*v);
  }
  if (flags.Has("top-k")) {
    absl::StatusOr<int64_t> v = flags.GetInt("top-k");
    if (!v.ok()) return fail(v.status());
    config.estimator.top_k = static_cast<int>(*v);
  }
  if (absl::Status s = config.estimator.Validate(); !s.ok()) return fail(s);
  const std::string ref_mode = flags.Get("reference-mode");
  if (ref_mode == "inline") {
    config.reference_mode = ReferenceMode::kInline;
  } else if (ref_mode == "paper") {
    config.reference_mode = ReferenceMode::kPaper;
  } else if (ref_mode == "none") {
    config.reference_mode = ReferenceMode::kNone;
  } else {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--reference-mode: \"", ref_mode, "\" (want inline, paper or none)")));
  }
  if (flags.Has("reference-sampling")) {
    absl::StatusOr<ReferenceSampling> sampling =
        ParseReferenceSampling(flags.Get("reference-sampling"));
    if (!sampling.ok()) return fail(sampling.status());
    config.reference_sampling = *sampling;
  } else {
    config.reference_sampling = *mode == EstimatorMode::kDefault ? ReferenceSampling::kInformative
                                                                 : ReferenceSampling::kUniform;
  }
  if (config.group_size < 1) {
    return fail(absl::InvalidArgumentError("--group-size: must be >= 1"));
  }

  std::optional<RunConfig> protocol;
  if (flags.Get("protocol") == "run") {
    RunConfig run_config;
    absl::StatusOr<double> delta = flags.GetDouble("fresh-fraction");
    absl::StatusOr<int64_t> capacity = flags.GetInt("replay-capacity");
    absl::StatusOr<ReplayStrategy> replay_strategy =
        ParseReplayStrategy(flags.Get("replay-strategy"));
    for (const absl::Status& s : {delta.status(), capacity.status(), replay_strategy.status()}) {
      if (!s.ok()) return fail(s);
    }
    run_config.fresh_fraction = *delta;
    run_config.replay.capacity_groups = *capacity;
    run_config.replay.strategy = *replay_strategy;
    run_config.replay_enabled = !flags.GetBool("no-replay");
    if (flags.Has("adapter")) run_config.estimator.adapter_path = flags.Get("adapter");
    protocol = run_config;
  } else if (flags.Get("protocol") != "direct") {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--protocol: \"", flags.Get("protocol"), "\" (want direct or run)")));
  }

  const absl::Time start = absl::Now();
  std::fprintf(stderr, "loading %s ...\n", data_path->c_str());
  absl::StatusOr<TrajectoryData> data =
      LoadTrajectoryData(*data_path, flags.Has("embeddings") ? flags.Get("embeddings") : "");
  if (!data.ok()) return fail(data.status());
  std::shared_ptr<const Adapter> adapter;
  if (flags.Has("adapter")) {
    absl::StatusOr<std::shared_ptr<const Adapter>> loaded = Adapter::Load(flags.Get("adapter"));
    if (!loaded.ok()) return fail(loaded.status());
    adapter = *loaded;
  }
  std::fprintf(stderr, "%d questions, shortest history %d epochs; running %d seed(s)\n",
               static_cast<int>(data->pool.size()), static_cast<int>(data->shortest_history),
               static_cast<int>(seeds->size()));

  absl::StatusOr<Summary> main_run = RunSeeds(*data, adapter, config, *seeds, protocol);
  if (!main_run.ok()) return fail(main_run.status());

  struct Baseline {
    const char* name;
    Summary summary;
  };
  std::vector<Baseline> baselines;
  if (!flags.GetBool("no-baselines")) {
    // Baselines draw uniform reference sets: the paper's protocol.
    auto variant = [&](SelectorStrategy selector, EstimatorMode mode) {
      TrajectoryConfig c = config;
      c.selector.strategy = selector;
      c.estimator.mode = mode;
      c.reference_sampling = ReferenceSampling::kUniform;
      return c;
    };
    const std::pair<const char*, TrajectoryConfig> variants[] = {
        {"uniform", variant(SelectorStrategy::kUniform, EstimatorMode::kHistory)},
        {"history", variant(config.selector.strategy, EstimatorMode::kHistory)},
        {"paper", variant(config.selector.strategy, EstimatorMode::kPaper)},
    };
    for (const auto& [name, baseline_config] : variants) {
      std::fprintf(stderr, "baseline %s ...\n", name);
      absl::StatusOr<Summary> s = RunSeeds(*data, adapter, baseline_config, *seeds, protocol);
      if (!s.ok()) return fail(s.status());
      baselines.push_back({name, *std::move(s)});
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  const int64_t epoch_count = main_run->per_seed.front().epochs;
  if (flags.GetBool("json")) {
    std::string out = absl::StrFormat(
        R"({"data": %s, "questions": %d, "epochs": %d, "budget": %d, "ref_size": %d, )"
        R"("estimator": "%s", "selector": "%s", "reference_mode": "%s", )"
        R"("reference_sampling": "%s", "prior": %s, "seeds": [)",
        JsonQuote(*data_path), data->pool.size(), epoch_count, config.budget, config.ref_size,
        std::string(EstimatorModeName(config.estimator.mode)),
        std::string(SelectorStrategyName(config.selector.strategy)), ref_mode,
        std::string(ReferenceSamplingName(config.reference_sampling)),
        config.estimator.use_priors ? "true" : "false");
    for (size_t i = 0; i < seeds->size(); ++i) {
      absl::StrAppend(&out, i ? ", " : "", (*seeds)[i]);
    }
    absl::StrAppend(&out, "], ");
    const std::string metrics = MetricsJson(*main_run, protocol.has_value());
    absl::StrAppend(&out, metrics.substr(1, metrics.size() - 2), ", \"per_seed\": [");
    for (size_t i = 0; i < main_run->per_seed.size(); ++i) {
      const TrajectoryResult& r = main_run->per_seed[i];
      absl::StrAppend(
          &out, i ? ", " : "",
          absl::StrFormat(
              R"({"seed": %d, "effective_ratio": %s, "pearson": %s, "pearson_epochs": %d, "mae": %s})",
              (*seeds)[i], JsonNumber(r.effective_ratio), JsonNumber(r.pearson), r.pearson_epochs,
              JsonNumber(r.mae)));
    }
    absl::StrAppend(&out, "], \"baselines\": {");
    for (size_t i = 0; i < baselines.size(); ++i) {
      absl::StrAppend(&out, i ? ", " : "", "\"", baselines[i].name,
                      "\": ", MetricsJson(baselines[i].summary, protocol.has_value()));
    }
    absl::StrAppend(&out, "}, \"seconds\": ", JsonNumber(seconds), "}\n");
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("trajectory replay of %s: %d questions, %d epochs, budget %d, K = %d (%s), %s\n",
              data_path->c_str(), static_cast<int>(data->pool.size()),
              static_cast<int>(epoch_count), static_cast<int>(config.budget),
              static_cast<int>(config.ref_size), ref_mode.c_str(),
              config.estimator.use_priors ? "priors on" : "priors off");
  const bool with_replay = protocol.has_value();
  std::printf("%-34s %10s %9s %7s %10s", "configuration", "effective", "pearson", "mae",
              "rollouts");
  if (with_replay) std::printf(" %10s %8s %10s", "generated", "replayed", "replay_age");
  std::printf("\n");
  auto row = [with_replay](const std::string& name, const Summary& s) {
    std::printf("%-34s %10.4f %9.4f %7.4f %10lld", name.c_str(), s.effective_ratio, s.pearson,
                s.mae, static_cast<long long>(s.rollouts));
    if (with_replay) {
      std::printf(" %10lld %8.3f %10.2f", static_cast<long long>(s.fresh_rollouts),
                  s.replay_fraction, s.replay_age);
    }
    std::printf("\n");
  };
  row(absl::StrFormat("%s + %s (%s refs)", std::string(EstimatorModeName(config.estimator.mode)),
                      std::string(SelectorStrategyName(config.selector.strategy)),
                      std::string(ReferenceSamplingName(config.reference_sampling))),
      *main_run);
  for (const Baseline& b : baselines) row(absl::StrCat("baseline: ", b.name), b.summary);
  std::printf("mean over %d seed(s); %.1f s\n", static_cast<int>(seeds->size()), seconds);
  return 0;
}

}  // namespace
}  // namespace dots::bench

int main(int argc, char** argv) {
  const std::string usage =
      "usage: dots-bench COMMAND [flags]\n\n"
      "commands:\n"
      "  trajectory   replay a recorded GRPO run's per-question success rates through the\n"
      "               estimator and selector (dots-bench trajectory --help)\n"
      "  load         NextBatch / ReportRollouts QPS and latency against an in-process server\n"
      "               and a bare gRPC baseline (dots-bench load --help)\n"
      "  ingest       durable report ingest next to raw RocksDB puts (dots-bench ingest --help)\n"
      "  restart      time to reopen a large durable run (dots-bench restart --help)\n"
      "  soak         long training load against dots-server: errors, memory, latency drift\n"
      "               (dots-bench soak --help)\n";
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(usage.c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "trajectory") return dots::bench::Trajectory(argc, argv);
  if (std::string(argv[1]) == "load") return dots::bench::Load(argc, argv);
  if (std::string(argv[1]) == "ingest") return dots::bench::Ingest(argc, argv);
  if (std::string(argv[1]) == "restart") return dots::bench::Restart(argc, argv);
  if (std::string(argv[1]) == "soak") return dots::bench::Soak(argc, argv);
  std::fprintf(stderr, "dots-bench: unknown command \"%s\"\n\n%s", argv[1], usage.c_str());
  return 2;
}
