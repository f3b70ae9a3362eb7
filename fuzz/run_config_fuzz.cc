// Fuzzes the run-config parser (core/run/run_config.h), the text a CreateRun carries. For every
// config that parses: Validate() agrees, the canonical JSON parses back to a config with the
// same canonical JSON (a fixed point), and ValidateForPool answers for pool sizes from 0 to
// 2^62 without overflowing. Every rejection is INVALID_ARGUMENT with a message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "core/run/run_config.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dots::RunConfig> config = dots::ParseRunConfig(text);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument,
               config.status().ToString());
    FUZZ_CHECK(!config.status().message().empty(), "an error without a message");
    return 0;
  }
  const absl::Status valid = config->Validate();
  FUZZ_CHECK(valid.ok(), "ParseRunConfig accepted what Validate rejects: " + valid.ToString());
  FUZZ_CHECK(config->FreshPerStep() >= 1 && config->FreshPerStep() <= config->batch_size,
             absl::StrCat("FreshPerStep() = ", config->FreshPerStep()));
  (void)config->EffectiveReferenceSampling();

  const std::string canonical = dots::RunConfigToJson(*config);
  absl::StatusOr<dots::RunConfig> again = dots::ParseRunConfig(canonical);
  FUZZ_CHECK(again.ok(), "the canonical JSON does not parse: " + again.status().ToString() +
                             "\n  " + canonical);
  FUZZ_CHECK(dots::RunConfigToJson(*again) == canonical,
             "the canonical JSON is not a fixed point:\n  " + canonical + "\n  " +
                 dots::RunConfigToJson(*again));

  const int64_t references =
      config->reference_mode == dots::ReferenceMode::kNone ? 0 : config->reference_size;
  for (int64_t pool_size :
       {int64_t{0}, int64_t{1}, int64_t{36}, int64_t{4096}, int64_t{1} << 40, int64_t{1} << 62}) {
    const absl::Status fits = config->ValidateForPool(pool_size);
    if (fits.ok()) {
      FUZZ_CHECK(references <= pool_size &&
                     config->steps_per_round * config->batch_size <= pool_size - references,
                 absl::StrCat("ValidateForPool(", pool_size, ") accepted ", canonical));
    } else {
      FUZZ_CHECK(fits.code() == absl::StatusCode::kFailedPrecondition, fits.ToString());
    }
  }
  return 0;
}
