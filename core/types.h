// The vocabulary that core/, the server and the clients share: plain structs with no behaviour
// and no dependency beyond the standard library, so that a trainer linking the C++ client
// (client/cpp) sees these and nothing of the engine. Validation lives with the code that accepts
// them (Pool::Add, Run::ReportRollouts, ...); the wire form is proto/dots/v1/dots.proto and the
// one conversion between the two is proto/convert.h.
#ifndef DOTS_CORE_TYPES_H_
#define DOTS_CORE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dots {

// Dense row-major float32 matrix: the one in-memory layout for embeddings, projections and
// adapter weights. Element (r, c) lives at data[r * cols + c].
struct FloatMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  // rows * cols values, row-major.

  FloatMatrix() = default;
  FloatMatrix(int64_t r, int64_t c) : rows(r), cols(c), data(static_cast<size_t>(r * c)) {}

  float* row(int64_t r) { return data.data() + r * cols; }
  const float* row(int64_t r) const { return data.data() + r * cols; }
  bool empty() const { return rows == 0; }
};

// One pool entry.
struct Question {
  std::string key;                   // unique within the pool, non-empty, <= kMaxKeyBytes
  std::string prompt;                // may be empty
  std::string metadata_json = "{}";  // verbatim JSON text of "metadata" (any JSON value)
  std::optional<double> prior;       // success-rate prior in [0, 1], if known
};

// Bytes charged per replay group on top of its variable-size fields: the group itself (~136
// bytes), its FIFO map node and its key-index entry, rounded up. An accounting figure for
// replay.capacity_bytes and metrics, not a measurement of the allocator.
inline constexpr int64_t kReplayGroupOverheadBytes = 256;

// A rollout group kept for replay (docs/design.md §2.5), and as handed out in a batch.
struct ReplayGroup {
  // Dedup key (the question key). Non-empty.
  std::string key;
  // Index of the question in the run's pool; targeted replay looks up p_hat[question]. -1 =
  // unknown.
  int64_t question = -1;
  // Training step that generated the rollouts. >= 0.
  int64_t step = 0;
  // Policy version that generated the rollouts (the behaviour policy). >= 0.
  int64_t policy_version = 0;
  // G rewards, each in [0, 1] (not NaN). G >= 1.
  std::vector<float> rewards;
  // Opaque bytes (token ids, behaviour log-probs, ...), stored and returned byte-identical.
  std::string payload;
  // Times the replay store's Sample() has returned this group; Insert() resets it to 0.
  int64_t replays = 0;
  // Insertion order, strictly increasing over the store's lifetime; FIFO eviction removes the
  // smallest first.
  int64_t sequence = 0;

  // Accounted size in bytes: key, payload and rewards plus kReplayGroupOverheadBytes. O(1).
  int64_t bytes() const {
    return static_cast<int64_t>(key.size() + payload.size() + sizeof(float) * rewards.size()) +
           kReplayGroupOverheadBytes;
  }
};

enum class ItemRole { kFresh, kReference };
inline std::string_view ItemRoleName(ItemRole role) {
  return role == ItemRole::kFresh ? "fresh" : "reference";
}

// One question handed out, with what the trainer needs to roll it out.
struct BatchItem {
  std::string key;
  ItemRole role = ItemRole::kFresh;
  std::string prompt;
  std::string metadata_json;
};

// A rank's slice of a step's batch.
struct BatchSlice {
  int64_t step = 0;
  int64_t round = 0;
  bool reference_batch = false;  // paper mode: the round's reference batch, not a training batch
  int64_t batch_size = 0;        // items + replay groups of the whole step (all ranks)
  std::vector<BatchItem> items;
  std::vector<ReplayGroup> replay;  // with key, step, policy_version, rewards, payload
};

// One rollout group reported by a trainer.
struct RolloutReport {
  std::string key;
  std::vector<float> rewards;  // G values in [0, 1]
  int64_t policy_version = 0;
  std::string payload;  // opaque, stored for replay and returned byte-identical
};

struct ReportResult {
  int64_t accepted = 0;
  int64_t duplicates = 0;
  std::vector<std::pair<std::string, std::string>> rejected;  // (key, error)
  // |p̂ the round's plan used − observed mean reward| of every accepted fresh group, in [0, 1]
  // (for the dots_prediction_abs_error metric).
  std::vector<double> fresh_abs_errors;
};

struct RunStats {
  int64_t step = -1;  // highest step whose batch was issued
  int64_t round = -1;
  int64_t pool_size = 0;
  int64_t reported_groups = 0;
  int64_t duplicate_reports = 0;
  int64_t rejected_reports = 0;
  double effective_ratio_last_step = 0;  // reported training groups with 0 < mean reward < 1
  int64_t effective_last_step_index = -1;
  int64_t effective_groups = 0, solve_all_groups = 0, solve_none_groups = 0;
  int64_t replay_groups = 0;
  int64_t replay_bytes = 0;
  int64_t replayed_groups = 0;  // groups handed out for replay, all steps
  int64_t leases_outstanding = 0;
  int64_t leases_expired = 0;
  int64_t rounds_planned = 0;
  double last_planning_seconds = 0;
  int64_t policy_version = 0;  // highest seen
  // The online difficulty model (default estimator, docs/design.md §2.6) of the latest plan:
  // trainings of the run so far (0 = none yet), its labels, weighted mean BCE on them
  // (nats), wall time of the training, and the Pearson correlation of the previous model's
  // predictions with the rates observed after it was trained (NaN when undefined).
  int64_t model_version = 0;
  int64_t model_labels = 0;
  double model_training_loss = 0;
  double model_training_seconds = 0;
  double model_out_of_sample_pearson = 0;
};

struct QuestionEstimate {
  std::string key;
  double p_hat = 0;
  int64_t observations = 0;
  int64_t last_policy_version = -1;
};

struct RejectedQuestion {
  int64_t index;  // position in the upload
  std::string key;
  std::string error;
};

struct UpsertResult {
  int64_t added = 0;
  int64_t updated = 0;
  std::vector<RejectedQuestion> rejected;  // only with reject_individually
};

// A run as the server describes it (RunInfo in the proto).
struct RunInfo {
  std::string run_id;
  std::string config_json;  // canonical config: every key with its effective value
  int64_t pool_size = 0;
  int64_t created_unix_seconds = 0;
  // The run's bearer token: only from CreateRun and ImportRun on a server with access control
  // on (dots-server --admin_token_file), and never again. Empty otherwise.
  std::string token{};
  bool sealed = false;  // SealRun: the run refuses changes (a move between servers)
};

// Progress of a server-side pool import; the last message has done = true.
struct ImportProgress {
  int64_t questions_read = 0;
  int64_t added = 0;
  int64_t updated = 0;
  bool done = false;
};

}  // namespace dots

#endif  // DOTS_CORE_TYPES_H_
