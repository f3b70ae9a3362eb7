// Runs the adapter's forward pass and one scoring round and writes every intermediate as .npy,
// for the numpy reference test (tests/reference/adapter_reference_test.py).
//
// Usage:
//   adapter_forward_tool (--adapter A.safetensors | --identity) --embeddings E.npy
//       --refs REFS.txt --out-dir DIR [--tau T] [--top-k K] [--leave-one-out]
// REFS.txt: one "pool_index label" pair per line (the reference set, in order).
// Writes DIR/query_proj.npy (N x h), DIR/ref_proj.npy (K x h), DIR/base.npy (N x 1) and
// DIR/calibrated.npy (N x 1: the head applied with the references' mean and unbiased std).
// tau and top_k default to the adapter's metadata. Exit status 0 on success, 1 on any error
// (printed to stderr), 2 on a usage error.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/estimation/adapter.h"
#include "core/estimation/similarity.h"
#include "core/formats/npy.h"
#include "core/util/status_macros.h"

namespace dots {
namespace {

struct Args {
  std::string adapter, embeddings, refs, out_dir;
  bool identity = false, leave_one_out = false;
  std::string tau, top_k;
};

absl::Status ReadRefs(const std::string& path, std::vector<int64_t>* indices,
                      std::vector<float>* labels) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  int64_t index = 0;
  double label = 0;
  int line = 0;
  std::string text;
  while (std::getline(in, text)) {
    ++line;
    if (text.empty()) continue;
    if (std::sscanf(text.c_str(), "%ld %lf", &index, &label) != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line, ": expected \"pool_index label\", got \"", text, "\""));
    }
    indices->push_back(index);
    labels->push_back(static_cast<float>(label));
  }
  return absl::OkStatus();
}

absl::Status Run(const Args& args) {
  DOTS_ASSIGN_OR_RETURN(FloatMatrix embeddings, ReadNpy(args.embeddings));
  std::shared_ptr<const Adapter> adapter;
  if (args.identity) {
    adapter = Adapter::Identity(static_cast<int>(embeddings.cols));
  } else {
    DOTS_ASSIGN_OR_RETURN(adapter, Adapter::Load(args.adapter));
  }
  std::vector<int64_t> refs;
  std::vector<float> labels;
  DOTS_RETURN_IF_ERROR(ReadRefs(args.refs, &refs, &labels));

  SimilarityOptions opts{
      .tau = adapter->tau(), .top_k = adapter->top_k(), .leave_one_out = args.leave_one_out};
  double value = 0;
  if (!args.tau.empty()) {
    if (!absl::SimpleAtod(args.tau, &value)) return absl::InvalidArgumentError("--tau: bad value");
    opts.tau = static_cast<float>(value);
  }
  if (!args.top_k.empty() && !absl::SimpleAtoi(args.top_k, &opts.top_k)) {
    return absl::InvalidArgumentError("--top-k: bad value");
  }

  const int64_t n = embeddings.rows;
  FloatMatrix ref_embeddings(static_cast<int64_t>(refs.size()), embeddings.cols);
  for (size_t j = 0; j < refs.size(); ++j) {
    if (refs[j] < 0 || refs[j] >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat(args.refs, ": index ", refs[j], " outside the pool [0, ", n, ")"));
    }
    std::copy_n(embeddings.row(refs[j]), embeddings.cols, ref_embeddings.row(j));
  }
  FloatMatrix ref_proj;
  adapter->ProjectRef(ref_embeddings, &ref_proj);
  DOTS_ASSIGN_OR_RETURN(auto scorer, SimilarityScorer::Create(adapter, std::move(embeddings)));

  FloatMatrix base(n, 1), calibrated(n, 1);
  DOTS_RETURN_IF_ERROR(scorer->Predict(refs, labels, opts, absl::MakeSpan(base.data)));
  const LabelStats stats = ComputeLabelStats(labels);
  for (int64_t i = 0; i < n; ++i) {
    calibrated.data[i] =
        static_cast<float>(adapter->Calibrate(base.data[i], stats.mean, stats.std));
  }
  DOTS_RETURN_IF_ERROR(WriteNpy(args.out_dir + "/query_proj.npy", scorer->query_projections()));
  DOTS_RETURN_IF_ERROR(WriteNpy(args.out_dir + "/ref_proj.npy", ref_proj));
  DOTS_RETURN_IF_ERROR(WriteNpy(args.out_dir + "/base.npy", base));
  DOTS_RETURN_IF_ERROR(WriteNpy(args.out_dir + "/calibrated.npy", calibrated));
  std::cout << "{\"n\": " << n << ", \"k\": " << refs.size() << ", \"h\": " << adapter->output_dim()
            << ", \"layers\": " << adapter->num_layers() << ", \"head\": \""
            << CalibrationHeadName(adapter->head()) << "\", \"tau\": " << opts.tau
            << ", \"top_k\": " << opts.top_k << "}\n";
  return absl::OkStatus();
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
    if (flag == "--adapter") {
      args.adapter = value();
    } else if (flag == "--identity") {
      args.identity = true;
    } else if (flag == "--embeddings") {
      args.embeddings = value();
    } else if (flag == "--refs") {
      args.refs = value();
    } else if (flag == "--out-dir") {
      args.out_dir = value();
    } else if (flag == "--tau") {
      args.tau = value();
    } else if (flag == "--top-k") {
      args.top_k = value();
    } else if (flag == "--leave-one-out") {
      args.leave_one_out = true;
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  if ((args.adapter.empty() == !args.identity) || args.embeddings.empty() || args.refs.empty() ||
      args.out_dir.empty()) {
    std::cerr << "usage: adapter_forward_tool (--adapter A.safetensors | --identity) --embeddings "
                 "E.npy --refs REFS.txt --out-dir DIR [--tau T] [--top-k K] [--leave-one-out]\n";
    return 2;
  }
  const absl::Status status = dots::Run(args);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  return 0;
}
