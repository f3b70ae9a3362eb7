// Runs the trainable adapter's forward and backward pass (core/estimation/adapter_model.h) on
// one batch and writes the loss and every parameter's gradient, for the PyTorch autograd check
// (tests/reference/adapter_grad_test.py). With --adam-steps N it instead applies N Adam updates
// on that batch (the learning rate following LinearWarmupDecay over N steps with --warmup
// warm-up steps) and writes the final parameters.
//
// Usage:
//   adapter_grad_tool --adapter A.safetensors --embeddings E.npy --batch BATCH.json
//       --out-dir DIR [--tau T] [--top-k K] [--no-exclude-self] [--dropout P] [--seed S]
//       [--adam-steps N --lr LR --warmup W]
// BATCH.json: {"query_rows": [...], "targets": [...], "weights": [...], "query_context": [...],
//              "ref_sets": [[rows], ...], "contexts": [{"ref_set": i, "labels": [...]}, ...]}
// Writes DIR/result.json ({"loss": L} of the first pass), DIR/grads.safetensors (gradients
// under the parameter names) or DIR/params.safetensors (after Adam), and with --dropout the
// masks DIR/mask_{query,ref}_{l}.npy (1 = kept) for l = 0 .. n-2. Exit status 0 on success, 1
// on an error (stderr), 2 on a usage error.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/adapter_model.h"
#include "core/estimation/adapter_training.h"
#include "core/formats/npy.h"
#include "core/formats/safetensors.h"
#include "core/util/file_util.h"
#include "core/util/json.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

struct Args {
  std::string adapter, embeddings, batch, out_dir;
  AdapterForwardOptions forward;
  int adam_steps = 0;
  double lr = 1e-3;
  int warmup = 0;
};

absl::StatusOr<std::vector<double>> Numbers(const JsonValue& object, const char* field) {
  const JsonValue* v = object.Find(field);
  if (v == nullptr || !v->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("batch: \"", field, "\" is not an array"));
  }
  std::vector<double> out;
  for (const JsonValue& item : v->items()) {
    if (!item.is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("batch: \"", field, "\": not a number"));
    }
    out.push_back(item.as_number());
  }
  return out;
}

absl::StatusOr<AdapterBatch> ReadBatch(const std::string& path) {
  DOTS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  DOTS_ASSIGN_OR_RETURN(JsonValue root, ParseJson(text));
  AdapterBatch b;
  DOTS_ASSIGN_OR_RETURN(std::vector<double> rows, Numbers(root, "query_rows"));
  DOTS_ASSIGN_OR_RETURN(std::vector<double> targets, Numbers(root, "targets"));
  DOTS_ASSIGN_OR_RETURN(std::vector<double> weights, Numbers(root, "weights"));
  DOTS_ASSIGN_OR_RETURN(std::vector<double> contexts, Numbers(root, "query_context"));
  for (double v : rows) b.query_rows.push_back(static_cast<int64_t>(v));
  for (double v : targets) b.targets.push_back(static_cast<float>(v));
  for (double v : weights) b.weights.push_back(static_cast<float>(v));
  for (double v : contexts) b.query_context.push_back(static_cast<int32_t>(v));
  const JsonValue* sets = root.Find("ref_sets");
  const JsonValue* ctx = root.Find("contexts");
  if (sets == nullptr || ctx == nullptr || !sets->is_array() || !ctx->is_array()) {
    return absl::InvalidArgumentError("batch: \"ref_sets\" and \"contexts\" must be arrays");
  }
  for (const JsonValue& set : sets->items()) {
    std::vector<int64_t> r;
    for (const JsonValue& v : set.items()) r.push_back(static_cast<int64_t>(v.as_number()));
    b.ref_sets.push_back(std::move(r));
  }
  for (const JsonValue& c : ctx->items()) {
    AdapterBatch::Context context;
    const JsonValue* set = c.Find("ref_set");
    if (set == nullptr || !set->is_number()) {
      return absl::InvalidArgumentError("batch: a context has no \"ref_set\"");
    }
    context.ref_set = static_cast<int32_t>(set->as_number());
    DOTS_ASSIGN_OR_RETURN(std::vector<double> labels, Numbers(c, "labels"));
    for (double v : labels) context.labels.push_back(static_cast<float>(v));
    b.contexts.push_back(std::move(context));
  }
  return b;
}

absl::Status WriteTensors(const std::string& path, const TrainableAdapter& model,
                          const std::vector<std::vector<float>>& values) {
  SafeTensorsFile f;
  const auto& params = model.parameters();
  for (size_t p = 0; p < params.size(); ++p) {
    f.tensors[params[p].name] = SafeTensor{params[p].shape, values[p]};
  }
  return WriteSafeTensors(path, f);
}

absl::Status Run(const Args& args) {
  DOTS_ASSIGN_OR_RETURN(SafeTensorsFile file, ReadSafeTensors(args.adapter));
  DOTS_ASSIGN_OR_RETURN(TrainableAdapter model, TrainableAdapter::FromTensors(file, args.adapter));
  DOTS_ASSIGN_OR_RETURN(FloatMatrix embeddings, ReadNpy(args.embeddings));
  DOTS_ASSIGN_OR_RETURN(AdapterBatch batch, ReadBatch(args.batch));

  std::vector<std::vector<float>> grads;
  AdapterDropoutMasks masks;
  DOTS_ASSIGN_OR_RETURN(double loss,
                        model.LossAndGradients(embeddings, batch, args.forward, &grads, &masks));
  {
    std::ofstream out(args.out_dir + "/result.json");
    out << "{\"loss\": " << JsonNumber(loss) << "}\n";
    if (!out) return absl::InternalError("cannot write result.json");
  }
  if (args.forward.dropout > 0) {
    for (int p = 0; p < 2; ++p) {
      for (size_t l = 0; l < masks[p].size(); ++l) {
        const nn::DropoutMask& m = masks[p][l];
        FloatMatrix keep(m.rows, m.cols);
        for (size_t i = 0; i < m.keep.size(); ++i) keep.data[i] = m.keep[i];
        DOTS_RETURN_IF_ERROR(WriteNpy(
            absl::StrCat(args.out_dir, "/mask_", p == 0 ? "query" : "ref", "_", l, ".npy"), keep));
      }
    }
  }
  if (args.adam_steps == 0) return WriteTensors(args.out_dir + "/grads.safetensors", model, grads);

  // Adam on the same batch (the first gradients are the ones computed above).
  auto& params = model.mutable_parameters();
  std::vector<std::vector<float>> m, v;
  for (const auto& p : params) {
    m.emplace_back(p.values.size(), 0.0f);
    v.emplace_back(p.values.size(), 0.0f);
  }
  nn::AdamConfig adam;
  for (int step = 0; step < args.adam_steps; ++step) {
    if (step > 0) {
      DOTS_ASSIGN_OR_RETURN(loss, model.LossAndGradients(embeddings, batch, args.forward, &grads));
    }
    const double lr = LinearWarmupDecay(args.lr, step, args.adam_steps, args.warmup);
    for (size_t p = 0; p < params.size(); ++p) {
      nn::AdamUpdate(adam, lr, step + 1, grads[p].data(), params[p].values.data(), m[p].data(),
                     v[p].data(), static_cast<int64_t>(params[p].values.size()));
    }
  }
  std::vector<std::vector<float>> values;
  for (const auto& p : params) values.push_back(p.values);
  return WriteTensors(args.out_dir + "/params.safetensors", model, values);
}

}  // namespace
}  // namespace dots

int main(int argc, char** argv) {
  dots::Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << flag << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&]() {
      double v = 0;
      const std::string text = value();
      if (!absl::SimpleAtod(text, &v)) {
        std::cerr << flag << ": not a number: " << text << "\n";
        std::exit(2);
      }
      return v;
    };
    if (flag == "--adapter") {
      args.adapter = value();
    } else if (flag == "--embeddings") {
      args.embeddings = value();
    } else if (flag == "--batch") {
      args.batch = value();
    } else if (flag == "--out-dir") {
      args.out_dir = value();
    } else if (flag == "--tau") {
      args.forward.tau = static_cast<float>(number());
    } else if (flag == "--top-k") {
      args.forward.top_k = static_cast<int>(number());
    } else if (flag == "--no-exclude-self") {
      args.forward.exclude_self = false;
    } else if (flag == "--dropout") {
      args.forward.dropout = static_cast<float>(number());
    } else if (flag == "--seed") {
      args.forward.dropout_seed = static_cast<uint64_t>(number());
    } else if (flag == "--adam-steps") {
      args.adam_steps = static_cast<int>(number());
    } else if (flag == "--lr") {
      args.lr = number();
    } else if (flag == "--warmup") {
      args.warmup = static_cast<int>(number());
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  if (args.adapter.empty() || args.embeddings.empty() || args.batch.empty() ||
      args.out_dir.empty()) {
    std::cerr << "usage: adapter_grad_tool --adapter A.safetensors --embeddings E.npy --batch "
                 "BATCH.json --out-dir DIR [--tau T] [--top-k K] [--no-exclude-self] "
                 "[--dropout P] [--seed S] [--adam-steps N --lr LR --warmup W]\n";
    return 2;
  }
  const absl::Status status = dots::Run(args);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  return 0;
}
