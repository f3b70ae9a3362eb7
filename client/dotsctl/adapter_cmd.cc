// dotsctl adapter train: the paper adapter's offline training (core/estimation/adapter_offline.h)
// behind command-line flags, with a progress bar on stderr and a JSON summary on stdout.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli.h"
#include "client/dotsctl/commands.h"
#include "core/estimation/adapter_offline.h"
#include "core/estimation/estimator.h"
#include "core/formats/labels.h"
#include "core/formats/npy.h"
#include "core/formats/pool.h"
#include "core/formats/safetensors.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots::dotsctl {
namespace {

constexpr char kTrainDescription[] =
    "Trains the paper's difficulty adapter (Sun et al. 2025: two 3-layer GELU projections of\n"
    "width 896 with LayerNorms, attention over reference questions, the group_logit_temp\n"
    "calibration head) with the released recipe: BCE on soft labels, Adam, lr 1e-3 with\n"
    "warm-up and linear decay, batches of 256 questions sharing 256 references, each question\n"
    "taking its references' labels from its own source. Writes an adapter file that\n"
    "dots-server (estimator.adapter_path), `dotsctl estimate --adapter` and\n"
    "`dots-bench trajectory --adapter` load.\n\n"
    "Inputs:\n"
    "  Q.jsonl   the question pool (the pool format: key, prompt, ...). Without --embeddings\n"
    "            and without inline embeddings, prompts are embedded with the built-in text\n"
    "            embedder (fitted on this pool's prompts, so use the same pool, or\n"
    "            --embeddings-out, wherever the adapter is used).\n"
    "  L.jsonl   labels, one per line: {\"key\": ..., \"source\": ..., \"rate\": ...} with the\n"
    "            success rate in [0, 1] of question `key` under labelling model `source`\n"
    "            (optional \"weight\" >= 0). Bad lines (NaN, a rate outside [0, 1], an unknown\n"
    "            key, a missing field, a (key, source) given twice) stop with file:line.\n\n"
    "Held-out evaluation (the released code's protocol): for each held-out set and 5 seeds,\n"
    "256 of its questions serve as labeled references and the rest are predicted as `paper`\n"
    "mode does (attention, head, OLS on the references). Reported before training (identity\n"
    "projection, start adapter) and every --eval-every epochs: Pearson, MAE and interval\n"
    "precision (of the min(1024, n/2) predictions closest to 0.5, the fraction whose true rate\n"
    "is in [0.125, 0.875]; `base` is that fraction over all questions).\n"
    "  --holdout F          keeps a fraction F of the labeled questions out of training; every\n"
    "                       source is evaluated on them\n"
    "  --holdout-source S   keeps source S out of training; evaluated on the held-out\n"
    "                       questions (all its questions when --holdout is 0)\n\n"
    "Output: the adapter file (--out), progress on stderr, and one JSON object on stdout:\n"
    "{\"out\", \"epochs\", \"steps\", \"train_loss\", \"labels\": {\"train\", \"heldout\", "
    "\"skipped\"},\n \"reports\": [{\"model\", \"epoch\", \"train_loss\", \"questions\": "
    "{metrics}, \"source\": {metrics}}]}.";

std::string MetricsJson(const PredictionMetrics& m) {
  return absl::StrFormat(
      R"({"count": %d, "pearson": %s, "mae": %s, "interval_precision": %s, "interval_base": %s})",
      m.count, JsonNumber(m.pearson), JsonNumber(m.mae), JsonNumber(m.interval_precision),
      JsonNumber(m.interval_base_rate));
}

std::string MetricsText(const PredictionMetrics& m) {
  return absl::StrFormat("pearson %.3f  mae %.3f  interval precision %.3f (base %.3f)", m.pearson,
                         m.mae, m.interval_precision, m.interval_base_rate);
}

// The flags of `dotsctl adapter train`, as given (ranges are checked by Train).
struct TrainArgs {
  std::string questions, embeddings, labels, out;
  int64_t epochs = 20;
  double lr = 1e-3;
  int64_t batch_size = 256;
  int64_t ref_size = 256;
  int64_t seed = 1;
  std::optional<int64_t> hidden, layers, top_k;
  double dropout = 0.1;
  std::optional<double> tau;
  std::string warm_start;
  double holdout = 0.1;
  std::string holdout_source;
  int64_t eval_every = 1;
  int64_t eval_ref_size = 256;
  int64_t text_dim = 256;
  std::string embeddings_out;
  int64_t threads = 0;
  bool quiet = false;
};

absl::StatusOr<int64_t> InRange(const std::string& name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": ", v, " is outside [", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<double> Positive(const std::string& name, double v) {
  if (!(v > 0) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", v, " is not > 0"));
  }
  return v;
}

// The progress line: redrawn in place on a terminal, one line per epoch otherwise.
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet), tty_(isatty(STDERR_FILENO) == 1) {}

  bool Step(const AdapterTrainingProgress& p) {
    if (quiet_) return true;
    const int64_t per_epoch = p.total_steps / p.epochs;
    const int64_t in_epoch = p.step - static_cast<int64_t>(p.epoch - 1) * per_epoch;
    const auto now = std::chrono::steady_clock::now();
    const bool epoch_end = in_epoch == per_epoch;
    if (tty_ && (epoch_end || now - last_ > std::chrono::milliseconds(100))) {
      last_ = now;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(kWidth * in_epoch / std::max<int64_t>(1, per_epoch));
      std::fprintf(stderr, "\repoch %d/%d [%s%s] %lld/%lld  loss %.4f  lr %.2e ", p.epoch, p.epochs,
                   std::string(filled, '=').c_str(), std::string(kWidth - filled, ' ').c_str(),
                   static_cast<long long>(in_epoch), static_cast<long long>(per_epoch),
                   p.epoch_mean_loss, p.learning_rate);
      if (epoch_end) std::fputc('\n', stderr);
    } else if (!tty_ && epoch_end) {
      std::fprintf(stderr, "epoch %d/%d: %lld steps, loss %.4f\n", p.epoch, p.epochs,
                   static_cast<long long>(per_epoch), p.epoch_mean_loss);
    }
    return true;
  }

  void Report(const EvaluationReport& r) {
    if (quiet_) return;
    std::string line = absl::StrFormat("held-out, %s:", r.model);
    if (!r.question_sets.empty()) {
      absl::StrAppend(&line,
                      absl::StrFormat("\n  questions (%d sources)  %s", r.question_sets.size(),
                                      MetricsText(r.questions_mean)));
    }
    if (r.source.has_value()) {
      absl::StrAppend(&line, absl::StrFormat("\n  source %s  %s", r.source->name,
                                             MetricsText(r.source->metrics)));
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

 private:
  bool quiet_;
  bool tty_;
  std::chrono::steady_clock::time_point last_{};
};

absl::Status Train(const TrainArgs& args) {
  const std::string& questions = args.questions;
  const std::string& labels_path = args.labels;
  const std::string& out_path = args.out;

  OfflineTrainingConfig config;
  AdapterTrainingOptions& t = config.training;
  DOTS_ASSIGN_OR_RETURN(t.epochs, InRange("epochs", args.epochs, 1, 100000));
  DOTS_ASSIGN_OR_RETURN(t.learning_rate, Positive("lr", args.lr));
  DOTS_ASSIGN_OR_RETURN(t.batch_size, InRange("batch-size", args.batch_size, 1, 1 << 20));
  DOTS_ASSIGN_OR_RETURN(t.ref_size, InRange("ref-size", args.ref_size, 2, 1 << 20));
  DOTS_ASSIGN_OR_RETURN(int64_t seed,
                        InRange("seed", args.seed, 0, std::numeric_limits<int64_t>::max()));
  config.seed = static_cast<uint64_t>(seed);
  const double dropout = args.dropout;
  if (!(dropout >= 0 && dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--dropout: ", dropout, " is not in [0, 1)"));
  }
  t.dropout = static_cast<float>(dropout);
  if (args.hidden.has_value()) {
    DOTS_ASSIGN_OR_RETURN(t.hidden_size, InRange("hidden", *args.hidden, 1, 65536));
  }
  if (args.layers.has_value()) {
    DOTS_ASSIGN_OR_RETURN(t.num_layers, InRange("layers", *args.layers, 1, 64));
  }
  if (args.tau.has_value()) {
    DOTS_ASSIGN_OR_RETURN(const double tau, Positive("tau", *args.tau));
    t.tau = static_cast<float>(tau);
  }
  if (args.top_k.has_value()) {
    DOTS_ASSIGN_OR_RETURN(t.top_k, InRange("top-k", *args.top_k, 0, 1 << 20));
  }
  DOTS_ASSIGN_OR_RETURN(t.threads, InRange("threads", args.threads, 0, 1024));
  config.holdout_fraction = args.holdout;
  if (!(config.holdout_fraction >= 0 && config.holdout_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--holdout: ", config.holdout_fraction, " is not in [0, 1)"));
  }
  config.holdout_source = args.holdout_source;
  DOTS_ASSIGN_OR_RETURN(config.eval_every, InRange("eval-every", args.eval_every, 0, 100000));
  DOTS_ASSIGN_OR_RETURN(config.eval.ref_size,
                        InRange("eval-ref-size", args.eval_ref_size, 2, 1 << 20));
  DOTS_ASSIGN_OR_RETURN(const int64_t text_dim,
                        InRange("text-dim", args.text_dim, 1, kMaxEmbeddingDim));
  const bool quiet = args.quiet;

  DOTS_ASSIGN_OR_RETURN(Pool pool, LoadPool(questions, args.embeddings));
  std::map<std::string, std::string> metadata = {{"trained_by", "dotsctl adapter train"},
                                                 {"seed", absl::StrCat(config.seed)},
                                                 {"epochs", absl::StrCat(t.epochs)}};
  if (!pool.has_embeddings()) {
    if (!quiet) {
      std::fprintf(stderr,
                   "dotsctl adapter train: no embeddings given; embedding prompts as text "
                   "(dimension %lld)\n",
                   static_cast<long long>(text_dim));
    }
    DOTS_RETURN_IF_ERROR(EnsureEmbeddings(&pool, static_cast<int>(text_dim)));
    metadata["embeddings"] =
        absl::StrCat("dots text embedder, dimension ", text_dim, ", fitted on ", questions);
  } else {
    metadata["embeddings"] = !args.embeddings.empty() ? args.embeddings : questions;
  }
  if (!args.embeddings_out.empty()) {
    DOTS_RETURN_IF_ERROR(WriteNpy(args.embeddings_out, pool.embeddings()));
  }
  DOTS_ASSIGN_OR_RETURN(LabelFile labels, LoadLabels(labels_path, pool));
  std::shared_ptr<const Adapter> start;
  if (!args.warm_start.empty()) {
    DOTS_ASSIGN_OR_RETURN(start, Adapter::Load(args.warm_start));
    metadata["warm_start"] = args.warm_start;
  }

  Progress progress(quiet);
  OfflineTrainingCallbacks callbacks;
  callbacks.on_step = [&](const AdapterTrainingProgress& p) { return progress.Step(p); };
  callbacks.on_report = [&](const EvaluationReport& r) { progress.Report(r); };
  DOTS_ASSIGN_OR_RETURN(OfflineTrainingOutcome outcome,
                        TrainAdapterOffline(pool, labels, start, config, callbacks, metadata));

  // Written beside the destination and renamed over it, so a reader never sees half a file.
  const std::string temp = out_path + ".tmp";
  DOTS_RETURN_IF_ERROR(WriteSafeTensors(temp, outcome.tensors));
  if (std::rename(temp.c_str(), out_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(out_path, ": cannot rename ", temp, " over it"));
  }

  std::string json =
      absl::StrFormat(R"({"out": %s, "epochs": %d, "steps": %d, "train_loss": %s, "gflop": %s, )"
                      R"("labels": {"train": %d, "heldout": %d, "skipped": %d}, "reports": [)",
                      JsonQuote(out_path), t.epochs, outcome.steps,
                      JsonNumber(outcome.epoch_losses.empty() ? 0 : outcome.epoch_losses.back()),
                      JsonNumber(std::round(outcome.flops * 1e-9)), outcome.train_labels,
                      outcome.heldout_labels, outcome.skipped_labels);
  for (size_t i = 0; i < outcome.reports.size(); ++i) {
    const EvaluationReport& r = outcome.reports[i];
    absl::StrAppend(&json, i ? ", " : "",
                    absl::StrFormat(R"({"model": %s, "epoch": %d, "train_loss": %s)",
                                    JsonQuote(r.model), r.epoch, JsonNumber(r.train_loss)));
    if (!r.question_sets.empty()) {
      absl::StrAppend(&json, R"(, "questions": )", MetricsJson(r.questions_mean));
    }
    if (r.source.has_value()) {
      absl::StrAppend(&json, R"(, "source": )", MetricsJson(r.source->metrics));
    }
    absl::StrAppend(&json, "}");
  }
  PrintJson(json + "]}");
  return absl::OkStatus();
}

}  // namespace

void AddAdapterCommands(CLI::App* app, cli::Action* action) {
  CLI::App* adapter = cli::AddCommand(app, "adapter", "the paper's difficulty adapter, offline");
  adapter->require_subcommand(1);
  auto args = std::make_shared<TrainArgs>();
  CLI::App* train = cli::AddCommand(adapter, "train",
                                    "train the paper's difficulty adapter on labeled pass rates",
                                    kTrainDescription);
  train->add_option("--questions", args->questions, "question pool JSONL")->required();
  train->add_option("--embeddings", args->embeddings,
                    ".npy float32/float16 matrix N x D in pool order");
  train
      ->add_option("--labels", args->labels,
                   "labels JSONL: {\"key\", \"source\", \"rate\"} per line")
      ->required();
  train->add_option("--out", args->out, "adapter file to write (.safetensors)")->required();
  auto option = [train](const std::string& name, auto* value, const std::string& help) {
    return train->add_option(name, *value, help)->capture_default_str();
  };
  option("--epochs", &args->epochs, "passes over the training labels");
  option("--lr", &args->lr, "peak learning rate (Adam)");
  option("--batch-size", &args->batch_size, "questions per step");
  option("--ref-size", &args->ref_size,
         "references sampled per step (shared by the step's questions)");
  option("--seed", &args->seed,
         "seed of every random choice (weights, order, references, dropout)");
  train->add_option("--hidden", args->hidden,
                    "projection width h of a fresh adapter (default 896)");
  train->add_option("--layers", args->layers,
                    "Linear layers per projection of a fresh adapter (default 3)");
  option("--dropout", &args->dropout, "dropout between the projection layers");
  train->add_option("--tau", args->tau,
                    "attention temperature (default: the warm start's, else 1)");
  train->add_option("--top-k", args->top_k,
                    "attend to each question's top-k references only (default 0 = all)");
  train->add_option("--warm-start", args->warm_start,
                    "adapter file to fine-tune instead of fresh weights");
  option("--holdout", &args->holdout, "fraction of labeled questions held out for evaluation");
  train->add_option("--holdout-source", args->holdout_source,
                    "a source held out of training and evaluated");
  option("--eval-every", &args->eval_every, "evaluate every N epochs (0 = at the end only)");
  option("--eval-ref-size", &args->eval_ref_size, "references per held-out evaluation split");
  option("--text-dim", &args->text_dim,
         "dimension of the built-in text embedding (no --embeddings)");
  train->add_option("--embeddings-out", args->embeddings_out,
                    "write the embeddings used (e.g. text embeddings) as .npy");
  option("--threads", &args->threads, "OpenMP threads (0 = OMP_NUM_THREADS or all cores)");
  train->add_flag("--quiet", args->quiet, "no progress or evaluation lines on stderr");
  cli::RunsWhenSelected(train, action, [args] {
    const absl::Status s = Train(*args);
    if (s.ok()) return 0;
    std::fprintf(stderr, "%sdotsctl adapter train: %s\n", isatty(STDERR_FILENO) ? "\n" : "",
                 std::string(s.message()).c_str());
    return 1;
  });
}

}  // namespace dots::dotsctl
