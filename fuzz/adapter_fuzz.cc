// Fuzzes the adapter loader (Adapter::FromTensors, core/estimation/adapter.h) and the trainable
// form (TrainableAdapter::FromTensors, adapter_model.h) on fuzzed safetensors bytes. For every
// file that loads: the dimensions are >= 1 and describe the tensors; ToTensors() loads again to
// an adapter with the same tensors and attention metadata; projecting two rows gives 2 x h
// values; Calibrate of finite inputs is never NaN (weights are finite, the loader refuses
// others); a group_logit_temp adapter also loads as a TrainableAdapter and runs one
// forward/backward pass on a fixed 4-row batch, with gradients of the parameters' sizes. Every
// rejection is INVALID_ARGUMENT naming the file.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/estimation/adapter.h"
#include "core/estimation/adapter_model.h"
#include "core/formats/safetensors.h"
#include "fuzz/fuzz_check.h"

namespace {

// Inputs describe at most a few thousand floats; larger products are skipped to keep each run
// fast (a 1e6-weight projection is legal but says nothing new).
constexpr int64_t kMaxWork = 1 << 20;

void CheckRejection(const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  FUZZ_CHECK(std::string(status.message()).rfind("fuzz.safetensors", 0) == 0,
             "the error does not name the file: " + status.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dots::SafeTensorsFile> file = dots::ParseSafeTensors(bytes, "fuzz.safetensors");
  if (!file.ok()) return 0;  // safetensors_fuzz covers the parser
  absl::StatusOr<std::shared_ptr<const dots::Adapter>> adapter =
      dots::Adapter::FromTensors(*file, "fuzz.safetensors");
  if (!adapter.ok()) {
    CheckRejection(adapter.status());
    return 0;
  }
  const dots::Adapter& a = **adapter;
  const int d = a.input_dim(), h = a.output_dim();
  FUZZ_CHECK(d >= 1 && h >= 1 && a.num_layers() >= 1, absl::StrCat("dims ", d, " ", h));
  FUZZ_CHECK(a.tau() > 0 && std::isfinite(a.tau()) && a.top_k() >= 0, "attention metadata");

  absl::StatusOr<dots::SafeTensorsFile> back = a.ToTensors();
  FUZZ_CHECK(back.ok(), back.status().ToString());
  absl::StatusOr<std::shared_ptr<const dots::Adapter>> again =
      dots::Adapter::FromTensors(*back, "round-trip");
  FUZZ_CHECK(again.ok(), "ToTensors output does not load: " + again.status().ToString());
  FUZZ_CHECK((*again)->tau() == a.tau() && (*again)->top_k() == a.top_k() &&
                 (*again)->head() == a.head() &&
                 (*again)->labels_are_failure_rate() == a.labels_are_failure_rate(),
             "round trip changed the metadata");
  for (const auto& [name, t] : back->tensors) {
    const dots::SafeTensor* original = file->Find(name);
    FUZZ_CHECK(original != nullptr, "ToTensors invented tensor " + name);
    FUZZ_CHECK(original->values == t.values, "round trip changed the values of " + name);
  }

  for (double base : {0.0, 0.3, 1.0}) {
    const double c = a.Calibrate(base, 0.4, 0.2);
    FUZZ_CHECK(!std::isnan(c), absl::StrCat("Calibrate(", base, ") is NaN"));
  }
  const int64_t work = int64_t{d} * h + int64_t{a.num_layers()} * h * h;
  if (work > kMaxWork) return 0;
  dots::FloatMatrix x(2, d);
  for (int64_t i = 0; i < 2 * d; ++i) x.data[i] = static_cast<float>(i % 7) - 3.0f;
  dots::FloatMatrix out;
  a.ProjectQuery(x, &out);
  FUZZ_CHECK(out.rows == 2 && out.cols == h, "projection shape");

  if (a.head() != dots::CalibrationHead::kGroupLogitTemp) return 0;
  absl::StatusOr<dots::TrainableAdapter> model =
      dots::TrainableAdapter::FromTensors(*back, "fuzz.safetensors");
  FUZZ_CHECK(model.ok(),
             "a loadable group_logit_temp adapter is not trainable: " + model.status().ToString());
  dots::FloatMatrix rows(4, d);
  for (int64_t i = 0; i < 4 * d; ++i) rows.data[i] = static_cast<float>((i * 5) % 11) - 5.0f;
  dots::AdapterBatch batch;
  batch.query_rows = {0, 3};
  batch.targets = {0.25f, 1.0f};
  batch.weights = {1.0f, 0.5f};
  batch.query_context = {0, 0};
  batch.ref_sets = {{0, 1, 2}};
  batch.contexts = {{0, {0.0f, 0.5f, 1.0f}}};
  std::vector<std::vector<float>> grads;
  dots::AdapterForwardOptions options;
  options.tau = a.tau();
  options.top_k = a.top_k();
  options.dropout = 0.1f;
  absl::StatusOr<double> loss = model->LossAndGradients(rows, batch, options, &grads);
  // Weights that overflow float give no finite attention scores: refused, never trained.
  if (absl::IsAborted(loss.status())) return 0;
  FUZZ_CHECK(loss.ok(), loss.status().ToString());
  FUZZ_CHECK(grads.size() == model->parameters().size(), "gradient count");
  for (size_t p = 0; p < grads.size(); ++p) {
    FUZZ_CHECK(grads[p].size() == model->parameters()[p].values.size(), "gradient size");
  }
  return 0;
}
