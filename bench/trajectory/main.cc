// dots-bench: the benchmarks, one subcommand each (`dots-bench --help`, `dots-bench CMD --help`):
//
//   trajectory   replay a recorded GRPO run's per-question success rates through the estimator
//                and selector (trajectory.h)
//   load         NextBatch / ReportRollouts QPS and latency against an in-process server and a
//                bare gRPC baseline (bench/load/load.h)
//   ingest       durable report ingest next to raw RocksDB puts (bench/durability/durability.h)
//   restart      time to reopen a large durable run (bench/durability/durability.h)
//   soak         long training load against dots-server: errors, memory, latency drift
//                (bench/soak/soak.h)
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
#include "client/cli/cli.h"
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

// The flags of `dots-bench trajectory`, as given.
struct TrajectoryArgs {
  std::string data;
  std::string embeddings;
  int64_t budget = 256;
  int64_t ref_size = 32;
  int64_t epochs = 0;
  int64_t group_size = 8;
  std::string estimator = "default";
  std::string selector = "dots";
  double alpha = 0.5;
  double tau = 0.001;
  std::string reference_mode = "inline";
  std::string reference_sampling;
  double reference_coverage = 0.25;
  double reference_sharpness = 5;
  std::string adapter;
  double decay = 0.95;
  double prior_strength = 1;
  int64_t label_window = 0;
  std::optional<double> attention_tau;
  std::optional<int64_t> top_k;
  bool no_prior = false;
  bool no_model = false;
  std::string adapter_training = "off";
  int adapter_training_epochs = 2;
  double adapter_training_lr = 1e-3;
  std::string seed = "1";
  std::string seeds;
  std::string protocol = "direct";
  double fresh_fraction = 0.5;
  int64_t replay_capacity = 512;
  std::string replay_strategy = "uniform";
  bool no_replay = false;
  bool no_baselines = false;
  bool json = false;
};

int RunTrajectoryCommand(const TrajectoryArgs& args) {
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "dots-bench trajectory: %s\n", std::string(s.message()).c_str());
    return 1;
  };

  TrajectoryConfig config;
  absl::StatusOr<EstimatorMode> mode = ParseEstimatorMode(args.estimator);
  absl::StatusOr<SelectorStrategy> strategy = ParseSelectorStrategy(args.selector);
  absl::StatusOr<std::vector<uint64_t>> seeds = ParseSeeds(args.seed, args.seeds);
  for (const absl::Status& s : {mode.status(), strategy.status(), seeds.status()}) {
    if (!s.ok()) return fail(s);
  }
  config.budget = args.budget;
  config.ref_size = args.ref_size;
  config.epochs = args.epochs;
  config.group_size = static_cast<int>(args.group_size);
  config.selector.strategy = *strategy;
  config.selector.alpha = args.alpha;
  config.selector.tau = args.tau;
  config.estimator.mode = *mode;
  config.reference_coverage = args.reference_coverage;
  config.reference_sharpness = args.reference_sharpness;
  config.estimator.decay = args.decay;
  config.estimator.prior_strength = args.prior_strength;
  config.estimator.label_window = args.label_window;
  config.estimator.use_priors = !args.no_prior;
  config.estimator.model.enabled = !args.no_model;
  if (args.adapter_training != "off" && args.adapter_training != "online") {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--adapter-training: \"", args.adapter_training, "\" (want off or online)")));
  }
  config.estimator.adapter_training.enabled = args.adapter_training == "online";
  config.estimator.adapter_training.epochs = args.adapter_training_epochs;
  config.estimator.adapter_training.learning_rate = args.adapter_training_lr;
  if (config.estimator.adapter_training.enabled && args.protocol != "run") {
    return fail(absl::InvalidArgumentError(
        "--adapter-training online: runs train the adapter, so it needs --protocol run"));
  }
  if (args.attention_tau.has_value()) {
    config.estimator.attention_tau = static_cast<float>(*args.attention_tau);
  }
  if (args.top_k.has_value()) config.estimator.top_k = static_cast<int>(*args.top_k);
  if (absl::Status s = config.estimator.Validate(); !s.ok()) return fail(s);
  const std::string& ref_mode = args.reference_mode;
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
  if (!args.reference_sampling.empty()) {
    absl::StatusOr<ReferenceSampling> sampling = ParseReferenceSampling(args.reference_sampling);
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
  if (args.protocol == "run") {
    RunConfig run_config;
    absl::StatusOr<ReplayStrategy> replay_strategy = ParseReplayStrategy(args.replay_strategy);
    if (!replay_strategy.ok()) return fail(replay_strategy.status());
    run_config.fresh_fraction = args.fresh_fraction;
    run_config.replay.capacity_groups = args.replay_capacity;
    run_config.replay.strategy = *replay_strategy;
    run_config.replay_enabled = !args.no_replay;
    if (!args.adapter.empty()) run_config.estimator.adapter_path = args.adapter;
    protocol = run_config;
  } else if (args.protocol != "direct") {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--protocol: \"", args.protocol, "\" (want direct or run)")));
  }

  const absl::Time start = absl::Now();
  std::fprintf(stderr, "loading %s ...\n", args.data.c_str());
  absl::StatusOr<TrajectoryData> data = LoadTrajectoryData(args.data, args.embeddings);
  if (!data.ok()) return fail(data.status());
  std::shared_ptr<const Adapter> adapter;
  if (!args.adapter.empty()) {
    absl::StatusOr<std::shared_ptr<const Adapter>> loaded = Adapter::Load(args.adapter);
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
  if (!args.no_baselines) {
    // Baselines draw uniform reference sets: the paper's protocol.
    auto variant = [&](SelectorStrategy selector, EstimatorMode mode) {
      TrajectoryConfig c = config;
      c.selector.strategy = selector;
      c.estimator.mode = mode;
      c.estimator.adapter_training.enabled = false;  // the baselines as released
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
  if (args.json) {
    std::string out = absl::StrFormat(
        R"({"data": %s, "questions": %d, "epochs": %d, "budget": %d, "ref_size": %d, )"
        R"("estimator": "%s", "selector": "%s", "reference_mode": "%s", )"
        R"("reference_sampling": "%s", "prior": %s, "seeds": [)",
        JsonQuote(args.data), data->pool.size(), epoch_count, config.budget, config.ref_size,
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
              args.data.c_str(), static_cast<int>(data->pool.size()), static_cast<int>(epoch_count),
              static_cast<int>(config.budget), static_cast<int>(config.ref_size), ref_mode.c_str(),
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

void AddTrajectoryCommand(CLI::App* app, cli::Action* action) {
  auto args = std::make_shared<TrajectoryArgs>();
  CLI::App* t = cli::AddCommand(
      app, "trajectory",
      "replay a recorded GRPO run's per-question success rates through the estimator and "
      "selector",
      "Replays a recorded GRPO run: at epoch t the true success rate of a question is its "
      "history[t]; every question handed out is reported back as round(G*rate) successes of G. "
      "Estimates are scored over the whole pool at the start of each epoch, before its reports. "
      "Prints the selection quality of the chosen configuration next to the uniform, history "
      "and paper baselines computed in the same run.");
  t->add_option("--data", args->data, "question JSONL with a `history` array per line")->required();
  t->add_option("--embeddings", args->embeddings,
                "N x D .npy of the questions' embeddings (default: the lines' own, else the "
                "built-in text embedder)");
  auto option = [t](const std::string& name, auto* value, const std::string& help) {
    return t->add_option(name, *value, help)->capture_default_str();
  };
  option("--budget", &args->budget, "questions handed out per epoch (inline references included)");
  option("--ref-size", &args->ref_size, "reference questions per epoch (K)");
  option("--epochs", &args->epochs, "epochs to replay; 0 = the shortest history");
  option("--group-size", &args->group_size, "rollouts per question (G)");
  option("--estimator", &args->estimator, "default | history | paper");
  option("--selector", &args->selector, "dots | uniform | greedy | band | thompson | posterior");
  option("--alpha", &args->alpha, "target success rate");
  option("--tau", &args->tau, "selection temperature");
  option("--reference-mode", &args->reference_mode, "inline | paper | none");
  t->add_option("--reference-sampling", args->reference_sampling,
                "uniform | informative; default: informative for the default estimator, else "
                "uniform");
  option("--reference-coverage", &args->reference_coverage,
         "informative sampling: fraction of K spent on the stalest");
  option("--reference-sharpness", &args->reference_sharpness,
         "informative sampling: exponent of P(informative)");
  t->add_option("--adapter", args->adapter,
                "paper adapter (.safetensors); default: identity projection");
  option("--decay", &args->decay, "history decay per policy version (lambda)");
  option("--prior-strength", &args->prior_strength, "pseudo-count of the prior mean (n0)");
  option("--label-window", &args->label_window,
         "policy versions a label stays in the labeled set; 0 = all");
  t->add_option("--attention-tau", args->attention_tau,
                "attention temperature (default: adapter's, 0.05 for identity)");
  t->add_option("--top-k", args->top_k,
                "attend to the top-k labeled questions only; 0 = all (default: adapter's)");
  t->add_flag("--no-prior", args->no_prior, "ignore the pool's `prior` field");
  t->add_flag("--no-model", args->no_model,
              "default estimator without the online model (probe) feature");
  option("--adapter-training", &args->adapter_training,
         "off | online: paper estimator, run protocol: fine-tune the adapter (or fresh weights "
         "without --adapter) on the run's outcomes before each round");
  option("--adapter-training-epochs", &args->adapter_training_epochs,
         "epochs of each online pass over the run's labels");
  option("--adapter-training-lr", &args->adapter_training_lr,
         "peak learning rate of each online pass (Adam, warm-up and linear decay)");
  option("--seed", &args->seed, "random seed");
  t->add_option("--seeds", args->seeds, "several seeds, e.g. 1-5 or 1,3,7; metrics are averaged");
  option("--protocol", &args->protocol,
         "direct: estimator and selector called directly; run: through the service's run "
         "protocol (core::Run) with rollout replay, one epoch = one step = one round");
  option("--fresh-fraction", &args->fresh_fraction,
         "run protocol: fresh share of each batch (delta)");
  option("--replay-capacity", &args->replay_capacity,
         "run protocol: replay store capacity in groups (C)");
  option("--replay-strategy", &args->replay_strategy, "run protocol: uniform | targeted");
  t->add_flag("--no-replay", args->no_replay, "run protocol: disable rollout replay");
  t->add_flag("--no-baselines", args->no_baselines, "skip the uniform / history / paper baselines");
  t->add_flag("--json", args->json, "print one JSON object instead of a table");
  cli::RunsWhenSelected(t, action, [args] { return RunTrajectoryCommand(*args); });
}

}  // namespace dots::bench

int main(int argc, char** argv) {
  CLI::App app("dots-bench: benchmarks of dots, each measured against a baseline in the same run.",
               "dots-bench");
  app.require_subcommand(1);
  dots::cli::Action action;
  dots::bench::AddTrajectoryCommand(&app, &action);
  dots::bench::AddLoadCommand(&app, &action);
  dots::bench::AddDurabilityCommands(&app, &action);
  dots::bench::AddSoakCommand(&app, &action);
  dots::cli::AddHelpCommand(&app, &action);
  return dots::cli::ParseAndRun(app, argc, argv, &action);
}
