#include "core/estimation/adapter_training.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/util/random.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

// Stream tags: each use of randomness gets its own stream of the seed.
constexpr uint64_t kInitTag = 1;
constexpr uint64_t kShuffleTag = 2;
constexpr uint64_t kReferenceTag = 3;
constexpr uint64_t kDropoutTag = 4;

constexpr int kDefaultHidden = 896;
constexpr int kDefaultLayers = 3;
constexpr int kHeadWidth = 10;

// Sets the calling thread's OpenMP thread count for a scope (0 = leave it).
class ThreadScope {
 public:
  explicit ThreadScope(int threads) : saved_(threads > 0 ? omp_get_max_threads() : 0) {
    if (threads > 0) omp_set_num_threads(threads);
  }
  ~ThreadScope() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int saved_;
};

absl::Status Field(const char* name, double value, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", value, " is not ", want));
}

// K distinct positions in [0, n), sorted (Floyd's algorithm: O(K) draws).
std::vector<int64_t> SamplePositions(int64_t n, int64_t k, Rng& rng) {
  absl::flat_hash_set<int64_t> chosen;
  for (int64_t j = n - k; j < n; ++j) {
    const int64_t t = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(j + 1)));
    chosen.insert(chosen.contains(t) ? j : t);
  }
  std::vector<int64_t> out(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

absl::Status AdapterTrainingOptions::Validate() const {
  if (epochs < 1) return Field("epochs", epochs, ">= 1");
  if (!(learning_rate >= 0) || !std::isfinite(learning_rate)) {
    return Field("learning_rate", learning_rate, "a finite number >= 0");
  }
  if (batch_size < 1) return Field("batch_size", batch_size, ">= 1");
  if (ref_size < 2) return Field("ref_size", ref_size, ">= 2");
  if (!(dropout >= 0 && dropout < 1)) return Field("dropout", dropout, "in [0, 1)");
  if (max_warmup_steps < 0) return Field("max_warmup_steps", max_warmup_steps, ">= 0");
  if (!(adam.beta1 >= 0 && adam.beta1 < 1)) return Field("adam.beta1", adam.beta1, "in [0, 1)");
  if (!(adam.beta2 >= 0 && adam.beta2 < 1)) return Field("adam.beta2", adam.beta2, "in [0, 1)");
  if (!(adam.epsilon > 0) || !std::isfinite(adam.epsilon)) {
    return Field("adam.epsilon", adam.epsilon, "a finite number > 0");
  }
  if (hidden_size.has_value() && (*hidden_size < 1 || *hidden_size > 65536)) {
    return Field("hidden_size", *hidden_size, "in [1, 65536]");
  }
  if (num_layers.has_value() && (*num_layers < 1 || *num_layers > 64)) {
    return Field("num_layers", *num_layers, "in [1, 64]");
  }
  if (tau.has_value() && (!(*tau > 0) || !std::isfinite(*tau))) {
    return Field("tau", *tau, "a finite number > 0");
  }
  if (top_k.has_value() && *top_k < 0) return Field("top_k", *top_k, ">= 0");
  if (threads < 0) return Field("threads", threads, ">= 0");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AdapterTrainer>> AdapterTrainer::Create(
    const FloatMatrix& embeddings, absl::Span<const AdapterLabel> labels,
    std::shared_ptr<const Adapter> start, const AdapterTrainingOptions& options, uint64_t seed) {
  DOTS_RETURN_IF_ERROR(options.Validate());
  if (embeddings.rows < 1 || embeddings.cols < 1 ||
      static_cast<int64_t>(embeddings.data.size()) != embeddings.rows * embeddings.cols) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings: shape ", embeddings.rows, " x ",
                                                   embeddings.cols, " with ",
                                                   embeddings.data.size(), " values"));
  }
  const int dim = static_cast<int>(embeddings.cols);

  // The model: the start adapter's weights, or fresh ones.
  std::optional<TrainableAdapter> model;
  if (start != nullptr) {
    if (start->is_identity()) {
      return absl::InvalidArgumentError(
          "start adapter: the identity projection has no weights to fine-tune");
    }
    if (start->input_dim() != dim) {
      return absl::InvalidArgumentError(absl::StrCat("start adapter: input dimension ",
                                                     start->input_dim(),
                                                     ", the embeddings have dimension ", dim));
    }
    DOTS_ASSIGN_OR_RETURN(SafeTensorsFile file, start->ToTensors());
    DOTS_ASSIGN_OR_RETURN(model, TrainableAdapter::FromTensors(file, "start adapter"));
    if (options.hidden_size.has_value() && *options.hidden_size != model->config().hidden) {
      return absl::InvalidArgumentError(absl::StrCat("hidden_size: ", *options.hidden_size,
                                                     ", but the start adapter has ",
                                                     model->config().hidden));
    }
    if (options.num_layers.has_value() && *options.num_layers != model->config().num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("num_layers: ", *options.num_layers,
                                                     ", but the start adapter has ",
                                                     model->config().num_layers));
    }
  } else {
    TrainableAdapter::Config config;
    config.input_dim = dim;
    config.hidden = options.hidden_size.value_or(kDefaultHidden);
    config.num_layers = options.num_layers.value_or(kDefaultLayers);
    config.head_width = kHeadWidth;
    model = TrainableAdapter::Fresh(config, MixSeed(seed, kInitTag));
  }
  model->set_attention(options.tau.value_or(model->config().tau),
                       options.top_k.value_or(model->config().top_k));
  const bool failure = model->config().labels_are_failure_rate;

  // Labels by source, validated.
  std::map<int32_t, std::vector<std::pair<int64_t, size_t>>> by_source;  // source -> (row, label)
  for (size_t i = 0; i < labels.size(); ++i) {
    const AdapterLabel& l = labels[i];
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat("labels[", i, "]: ", what));
    };
    if (l.row < 0 || l.row >= embeddings.rows) {
      return bad(absl::StrCat("row ", l.row, " outside the embeddings [0, ", embeddings.rows, ")"));
    }
    if (!(l.rate >= 0 && l.rate <= 1)) return bad(absl::StrCat("rate ", l.rate, " outside [0, 1]"));
    if (!(l.weight >= 0) || !std::isfinite(l.weight)) {
      return bad(absl::StrCat("weight ", l.weight, " is not a finite number >= 0"));
    }
    if (l.source < 0) return bad(absl::StrCat("source ", l.source, " is negative"));
    by_source[l.source].emplace_back(l.row, i);
  }
  std::unique_ptr<AdapterTrainer> t(
      new AdapterTrainer(embeddings, std::move(*model), options, seed));
  std::map<std::vector<int64_t>, int> group_of_rows;
  std::map<int32_t, int32_t> source_index;
  for (auto& [source, entries] : by_source) {
    std::sort(entries.begin(), entries.end());
    for (size_t j = 1; j < entries.size(); ++j) {
      if (entries[j].first == entries[j - 1].first) {
        return absl::InvalidArgumentError(absl::StrCat(
            "labels[", entries[j].second, "]: row ", entries[j].first,
            " is labeled twice by source ", source, " (also labels[", entries[j - 1].second, "])"));
      }
    }
    if (entries.size() < 2) {
      t->skipped_labels_ += static_cast<int64_t>(entries.size());
      continue;
    }
    std::vector<int64_t> rows;
    Source s;
    for (const auto& [row, index] : entries) {
      rows.push_back(row);
      const float rate = labels[index].rate;
      s.labels.push_back(failure ? 1.0f - rate : rate);
    }
    auto [it, fresh] = group_of_rows.try_emplace(rows, static_cast<int>(t->groups_.size()));
    if (fresh) t->groups_.push_back(Group{std::move(rows)});
    s.group = it->second;
    source_index[source] = static_cast<int32_t>(t->sources_.size());
    t->sources_.push_back(std::move(s));
  }
  for (const Group& g : t->groups_) {
    for (int64_t row : g.rows) {
      const float* x = embeddings.row(row);
      for (int64_t c = 0; c < embeddings.cols; ++c) {
        if (!std::isfinite(x[c])) {
          return absl::InvalidArgumentError(
              absl::StrCat("embeddings: row ", row, " column ", c, " is not finite"));
        }
      }
    }
  }
  for (const AdapterLabel& l : labels) {
    auto it = source_index.find(l.source);
    if (it == source_index.end() || !(l.weight > 0)) continue;
    t->queries_.push_back(Query{l.row, it->second, failure ? 1.0f - l.rate : l.rate, l.weight});
  }
  if (t->queries_.empty()) {
    return absl::InvalidArgumentError(
        "labels: nothing to train on (a label needs weight > 0 and a source with at least 2 "
        "labeled rows)");
  }
  const int64_t q = static_cast<int64_t>(t->queries_.size());
  t->steps_per_epoch_ = (q + options.batch_size - 1) / options.batch_size;
  t->total_steps_ = t->steps_per_epoch_ * options.epochs;
  t->warmup_steps_ = std::min<int64_t>(options.max_warmup_steps, t->total_steps_ / 10);
  for (const auto& p : t->model_.parameters()) {
    t->adam_m_.emplace_back(p.values.size(), 0.0f);
    t->adam_v_.emplace_back(p.values.size(), 0.0f);
  }
  return t;
}

double LinearWarmupDecay(double learning_rate, int64_t step, int64_t total_steps,
                         int64_t warmup_steps) {
  if (step < warmup_steps) {
    return learning_rate * static_cast<double>(step) /
           static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  return learning_rate *
         std::max(0.0, static_cast<double>(total_steps - step) /
                           static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
}

double AdapterTrainer::LearningRate(int64_t step) const {
  if (!options_.lr_schedule) return options_.learning_rate;
  return LinearWarmupDecay(options_.learning_rate, step, total_steps_, warmup_steps_);
}

AdapterBatch AdapterTrainer::MakeBatch(const std::vector<int64_t>& order, int64_t begin,
                                       int64_t end) const {
  AdapterBatch batch;
  Rng rng(MixSeed(seed_, kReferenceTag, static_cast<uint64_t>(step_)));
  std::map<int, int32_t> set_of_group;          // group -> ref set, in order of first appearance
  std::map<int32_t, int32_t> context_of;        // source -> context
  std::vector<std::vector<int64_t>> positions;  // per ref set
  for (int64_t i = begin; i < end; ++i) {
    const Query& query = queries_[order[i]];
    const Source& source = sources_[query.source];
    auto [set_it, new_set] =
        set_of_group.try_emplace(source.group, static_cast<int32_t>(batch.ref_sets.size()));
    if (new_set) {
      const Group& group = groups_[source.group];
      const int64_t n = static_cast<int64_t>(group.rows.size());
      positions.push_back(SamplePositions(n, std::min<int64_t>(options_.ref_size, n), rng));
      std::vector<int64_t> rows;
      for (int64_t p : positions.back()) rows.push_back(group.rows[p]);
      batch.ref_sets.push_back(std::move(rows));
    }
    auto [ctx_it, new_context] =
        context_of.try_emplace(query.source, static_cast<int32_t>(batch.contexts.size()));
    if (new_context) {
      AdapterBatch::Context context;
      context.ref_set = set_it->second;
      for (int64_t p : positions[set_it->second]) context.labels.push_back(source.labels[p]);
      batch.contexts.push_back(std::move(context));
    }
    batch.query_rows.push_back(query.row);
    batch.targets.push_back(query.target);
    batch.weights.push_back(query.weight);
    batch.query_context.push_back(ctx_it->second);
  }
  return batch;
}

absl::StatusOr<double> AdapterTrainer::RunEpoch(const AdapterTrainingCallback& callback) {
  if (failed_) {
    return absl::FailedPreconditionError("adapter training: an earlier epoch failed");
  }
  if (epochs_done_ >= options_.epochs) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter training: all ", options_.epochs, " epochs are done"));
  }
  ThreadScope threads(options_.threads);
  const int epoch = epochs_done_ + 1;
  const int64_t q = static_cast<int64_t>(queries_.size());
  std::vector<int64_t> order(q);
  std::iota(order.begin(), order.end(), 0);
  Rng shuffle(MixSeed(seed_, kShuffleTag, static_cast<uint64_t>(epoch)));
  for (int64_t i = q - 1; i > 0; --i) {
    std::swap(order[i], order[static_cast<int64_t>(shuffle.Below(static_cast<uint64_t>(i + 1)))]);
  }
  AdapterForwardOptions forward;
  forward.tau = model_.config().tau;
  forward.top_k = model_.config().top_k;
  forward.exclude_self = options_.exclude_self;
  forward.dropout = options_.dropout;
  std::vector<std::vector<float>> gradients;
  auto& params = model_.mutable_parameters();
  double loss_sum = 0;
  for (int64_t b = 0; b < steps_per_epoch_; ++b) {
    const int64_t begin = b * options_.batch_size;
    const AdapterBatch batch =
        MakeBatch(order, begin, std::min<int64_t>(q, begin + options_.batch_size));
    forward.dropout_seed = MixSeed(seed_, kDropoutTag, static_cast<uint64_t>(step_));
    const absl::StatusOr<double> loss =
        model_.LossAndGradients(embeddings_, batch, forward, &gradients);
    const int64_t step_number = step_ + 1;
    auto where = [&] {
      return absl::StrCat(" at step ", step_number, " of ", total_steps_, " (epoch ", epoch,
                          ", batch ", b + 1, ")");
    };
    if (!loss.ok()) {
      failed_ = true;
      return absl::Status(loss.status().code(), absl::StrCat(loss.status().message(), where()));
    }
    if (!std::isfinite(*loss)) {
      failed_ = true;
      return absl::AbortedError(
          absl::StrCat("adapter training: non-finite loss (", *loss, ")", where()));
    }
    for (size_t p = 0; p < params.size(); ++p) {
      for (float g : gradients[p]) {
        if (!std::isfinite(g)) {
          failed_ = true;
          return absl::AbortedError(absl::StrCat("adapter training: non-finite gradient of \"",
                                                 params[p].name, "\"", where()));
        }
      }
    }
    const double lr = LearningRate(step_);
    ++step_;
    for (size_t p = 0; p < params.size(); ++p) {
      nn::AdamUpdate(options_.adam, lr, step_, gradients[p].data(), params[p].values.data(),
                     adam_m_[p].data(), adam_v_[p].data(),
                     static_cast<int64_t>(params[p].values.size()));
    }
    loss_sum += *loss;
    if (callback) {
      AdapterTrainingProgress progress;
      progress.step = step_;
      progress.total_steps = total_steps_;
      progress.epoch = epoch;
      progress.epochs = options_.epochs;
      progress.batch_loss = *loss;
      progress.epoch_mean_loss = loss_sum / static_cast<double>(b + 1);
      progress.learning_rate = lr;
      if (!callback(progress)) {
        failed_ = true;
        return absl::CancelledError(absl::StrCat("adapter training: cancelled", where()));
      }
    }
  }
  epochs_done_ = epoch;
  return loss_sum / static_cast<double>(steps_per_epoch_);
}

SafeTensorsFile AdapterTrainer::Tensors(
    const std::map<std::string, std::string>& extra_metadata) const {
  return model_.ToTensors(extra_metadata);
}

absl::StatusOr<std::shared_ptr<const Adapter>> AdapterTrainer::Snapshot() const {
  return Adapter::FromTensors(model_.ToTensors(), "trained adapter");
}

double AdapterTrainer::StepFlops() const {
  const int64_t b = std::min<int64_t>(options_.batch_size, static_cast<int64_t>(queries_.size()));
  int64_t refs = 0;
  for (const Group& g : groups_) {
    refs = std::max<int64_t>(refs, std::min<int64_t>(options_.ref_size, g.rows.size()));
  }
  return TrainableAdapter::StepFlops(model_.config(), b, refs, refs);
}

absl::StatusOr<AdapterTrainingResult> TrainAdapter(
    const FloatMatrix& embeddings, absl::Span<const AdapterLabel> labels,
    std::shared_ptr<const Adapter> start, const AdapterTrainingOptions& options, uint64_t seed,
    const AdapterTrainingCallback& callback,
    const std::map<std::string, std::string>& extra_metadata) {
  DOTS_ASSIGN_OR_RETURN(
      std::unique_ptr<AdapterTrainer> trainer,
      AdapterTrainer::Create(embeddings, labels, std::move(start), options, seed));
  AdapterTrainingResult result;
  for (int e = 0; e < options.epochs; ++e) {
    DOTS_ASSIGN_OR_RETURN(double loss, trainer->RunEpoch(callback));
    result.epoch_losses.push_back(loss);
    result.mean_loss += loss / options.epochs;
  }
  result.tensors = trainer->Tensors(extra_metadata);
  DOTS_ASSIGN_OR_RETURN(result.adapter, Adapter::FromTensors(result.tensors, "trained adapter"));
  result.steps = trainer->steps_done();
  result.examples_per_epoch = trainer->examples_per_epoch();
  result.skipped_labels = trainer->skipped_labels();
  result.flops = trainer->StepFlops() * static_cast<double>(result.steps);
  return result;
}

}  // namespace dots
