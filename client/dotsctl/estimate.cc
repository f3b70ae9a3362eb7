// dotsctl estimate --questions Q.jsonl [--embeddings E.npy] --labels L.jsonl
//                  [--adapter A.safetensors] [--mode paper|history|default] [--config run.json]
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "client/dotsctl/commands.h"
#include "core/estimation/estimator.h"
#include "core/estimation/estimator_config.h"
#include "core/formats/labels.h"
#include "core/formats/pool.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots::dotsctl {
namespace {

struct Label {
  int64_t question;
  double success_rate;
  int trials;
};

// Label lines (core/formats/labels.h): {"key": ..., "success_rate": r} (or "rate") with an
// optional "rollouts" (default: the group size), the number of rollouts behind r, which weighs it
// against the prior. Each question is labeled at most once, whatever its "source".
absl::StatusOr<std::vector<Label>> ReadLabels(const std::string& path, const Pool& pool,
                                              int group_size) {
  DOTS_ASSIGN_OR_RETURN(LabelFile file, LoadLabels(path, pool));
  std::vector<Label> labels;
  absl::flat_hash_map<int64_t, int64_t> line_of;
  for (const LabelRecord& l : file.labels) {
    if (auto [it, fresh] = line_of.try_emplace(l.question, l.line); !fresh) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: field \"key\": \"%s\" is labeled twice (first on line %d)", path,
                          l.line, pool.question(l.question).key, it->second));
    }
    labels.push_back({l.question, l.rate, l.rollouts.value_or(group_size)});
  }
  return labels;
}

struct EstimateArgs {
  std::string questions;   // --questions
  std::string embeddings;  // --embeddings
  std::string labels;      // --labels
  std::string adapter;     // --adapter
  std::string mode;        // --mode
  std::string config;      // --config
};

absl::Status Run(const EstimateArgs& args) {
  EstimatorConfig config;
  int group_size = 8;
  std::string config_text;
  if (!args.config.empty()) {
    DOTS_ASSIGN_OR_RETURN(config_text, ReadFile(args.config));
    absl::StatusOr<JsonValue> run = ParseJson(config_text);
    if (!run.ok() || !run->is_object()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: not a JSON object%s", args.config,
          run.ok() ? "" : absl::StrFormat(" (%s)", std::string(run.status().message()))));
    }
    if (const JsonValue* block = run->Find("estimator"); block != nullptr) {
      absl::Status s = ParseEstimatorConfig(*block, &config);
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %s", args.config, std::string(s.message())));
      }
    }
    if (const JsonValue* g = run->Find("group_size"); g != nullptr) {
      if (!g->is_number() || g->as_number() < 1 || g->as_number() > 1e6 ||
          std::floor(g->as_number()) != g->as_number()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: group_size: want an integer in [1, 1000000]", args.config));
      }
      group_size = static_cast<int>(g->as_number());
    }
  }
  if (!args.mode.empty()) {
    DOTS_ASSIGN_OR_RETURN(config.options.mode, ParseEstimatorMode(args.mode));
  }
  if (!args.adapter.empty()) config.adapter_path = args.adapter;

  DOTS_ASSIGN_OR_RETURN(Pool pool, LoadPool(args.questions, args.embeddings));
  std::shared_ptr<const Adapter> adapter;
  if (!config.adapter_path.empty()) {
    DOTS_ASSIGN_OR_RETURN(adapter, Adapter::Load(config.adapter_path));
  }
  if (config.options.mode != EstimatorMode::kHistory && !pool.has_embeddings()) {
    if (adapter != nullptr) {
      return absl::InvalidArgumentError(
          "--embeddings: an adapter needs the embeddings it was trained on; the pool has none");
    }
    std::fprintf(stderr, "dotsctl estimate: no embeddings given; embedding prompts as text\n");
    DOTS_RETURN_IF_ERROR(EnsureEmbeddings(&pool));
  }
  DOTS_ASSIGN_OR_RETURN(std::vector<Label> labels, ReadLabels(args.labels, pool, group_size));
  DOTS_ASSIGN_OR_RETURN(std::unique_ptr<Estimator> estimator,
                        Estimator::Create(pool, adapter, config.options));
  std::vector<int64_t> reference_set;
  for (const Label& l : labels) {
    DOTS_RETURN_IF_ERROR(
        estimator->Observe(l.question, l.success_rate * l.trials, l.trials, /*version=*/0));
    reference_set.push_back(l.question);
  }
  DOTS_ASSIGN_OR_RETURN(Estimates estimates, estimator->Estimate(0, reference_set));
  std::string out;
  for (int64_t q = 0; q < pool.size(); ++q) {
    out += "{\"key\": ";
    AppendJsonString(pool.question(q).key, &out);
    out += ", \"p_hat\": " + JsonFloat(estimates.p_hat[q]) + "}\n";
    if (out.size() > (1 << 20)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return absl::OkStatus();
}

}  // namespace

void AddEstimateCommand(CLI::App* app, cli::Action* action) {
  auto args = std::make_shared<EstimateArgs>();
  CLI::App* estimate = cli::AddCommand(
      app, "estimate", "predict every question's success rate offline from labeled outcomes",
      "Predicts the current policy's success rate of every question in Q.jsonl from the labeled "
      "outcomes in L.jsonl (lines {\"key\": ..., \"success_rate\": ...}, optionally "
      "\"rollouts\"), without a server. Prints {\"key\": ..., \"p_hat\": ...} per question, in "
      "pool order. In paper mode the labeled questions are the reference set of the released "
      "code path. Use it to check an adapter on your own data before a run.");
  estimate
      ->add_option("--questions", args->questions,
                   "question pool JSONL (key, prompt, metadata, prior, embedding)")
      ->required();
  estimate->add_option("--embeddings", args->embeddings,
                       ".npy float32/float16 matrix N x D in pool order");
  estimate->add_option("--labels", args->labels, "labeled outcomes JSONL")->required();
  estimate->add_option("--adapter", args->adapter,
                       "paper adapter .safetensors (default: identity projection)");
  estimate->add_option("--mode", args->mode,
                       "paper | history | default (default: the config's, else default)");
  estimate->add_option("--config", args->config,
                       "run config JSON; its `estimator` block and `group_size` are used");
  cli::RunsWhenSelected(estimate, action, [args] {
    absl::Status s = Run(*args);
    if (s.ok()) return 0;
    std::fprintf(stderr, "dotsctl estimate: %s\n", std::string(s.message()).c_str());
    return 1;
  });
}

}  // namespace dots::dotsctl
