#include "core/run/run_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/status/status.h"
#include "core/util/json.h"

namespace dots {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Parses `text` and expects INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(const std::string& text, const std::vector<std::string>& parts) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(text);
  ASSERT_FALSE(config.ok()) << text << " parsed; canonical: " << RunConfigToJson(*config);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(part)) << text;
  }
}

RunConfig ParseOrDie(const std::string& text) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(text);
  EXPECT_TRUE(config.ok()) << text << ": " << config.status();
  return config.ok() ? *config : RunConfig();
}

TEST(RunConfigTest, DefaultsArePapers) {
  const RunConfig c = ParseOrDie("{}");
  EXPECT_EQ(c.batch_size, 512);
  EXPECT_EQ(c.group_size, 8);
  EXPECT_EQ(c.steps_per_round, 2);
  EXPECT_EQ(c.reference_size, 256);
  EXPECT_EQ(c.reference_mode, ReferenceMode::kInline);
  EXPECT_FALSE(c.reference_sampling.has_value());
  EXPECT_DOUBLE_EQ(c.alpha, 0.5);
  EXPECT_DOUBLE_EQ(c.tau, 1e-3);
  EXPECT_DOUBLE_EQ(c.fresh_fraction, 0.5);
  EXPECT_EQ(c.seed, 0u);
  EXPECT_DOUBLE_EQ(c.lease_timeout_seconds, 3600);
  EXPECT_EQ(c.estimator.options.mode, EstimatorMode::kDefault);
  EXPECT_EQ(c.estimator.adapter_path, "");
  EXPECT_EQ(c.selector_strategy, SelectorStrategy::kDots);
  EXPECT_EQ(c.cooldown_steps, 0);
  EXPECT_TRUE(c.replay_enabled);
  EXPECT_EQ(c.replay.capacity_groups, 512);  // C
  EXPECT_EQ(c.replay.capacity_bytes, int64_t{1} << 30);
  EXPECT_EQ(c.replay.strategy, ReplayStrategy::kUniform);
  EXPECT_DOUBLE_EQ(c.replay.alpha, 0.5);
  EXPECT_EQ(c.underfill, ReplayUnderfill::kFillFresh);
  EXPECT_EQ(c.FreshPerStep(), 256);
  EXPECT_TRUE(RunConfig().Validate().ok());
  // The parsed defaults are the struct's defaults.
  EXPECT_EQ(RunConfigToJson(c), RunConfigToJson(RunConfig()));
}

TEST(RunConfigTest, ParsesEveryKey) {
  const RunConfig c = ParseOrDie(R"({
    "batch_size": 64, "group_size": 16, "steps_per_round": 4, "reference_size": 32,
    "reference_mode": "paper", "reference_sampling": "uniform", "alpha": 0.3, "tau": 0.01,
    "fresh_fraction": 0.25, "seed": 9007199254740992, "lease_timeout_seconds": 60.5,
    "estimator": {"mode": "history", "decay": 0.9},
    "selector": {"strategy": "band", "cooldown_steps": 3, "band_lo": 0.1, "band_hi": 0.7},
    "replay": {"enabled": false, "capacity_groups": 100, "capacity_bytes": 1000000,
               "strategy": "targeted", "max_age_versions": 5, "max_replays": 2,
               "underfill": "shrink"}})");
  EXPECT_EQ(c.batch_size, 64);
  EXPECT_EQ(c.group_size, 16);
  EXPECT_EQ(c.steps_per_round, 4);
  EXPECT_EQ(c.reference_size, 32);
  EXPECT_EQ(c.reference_mode, ReferenceMode::kPaper);
  EXPECT_EQ(c.reference_sampling, ReferenceSampling::kUniform);
  EXPECT_DOUBLE_EQ(c.alpha, 0.3);
  EXPECT_DOUBLE_EQ(c.replay.alpha, 0.3);  // copied from the run's alpha
  EXPECT_DOUBLE_EQ(c.tau, 0.01);
  EXPECT_DOUBLE_EQ(c.fresh_fraction, 0.25);
  EXPECT_EQ(c.seed, uint64_t{1} << 53);
  EXPECT_DOUBLE_EQ(c.lease_timeout_seconds, 60.5);
  EXPECT_EQ(c.estimator.options.mode, EstimatorMode::kHistory);
  EXPECT_DOUBLE_EQ(c.estimator.options.decay, 0.9);
  EXPECT_EQ(c.selector_strategy, SelectorStrategy::kBand);
  EXPECT_EQ(c.cooldown_steps, 3);
  EXPECT_DOUBLE_EQ(c.band_lo, 0.1);
  EXPECT_DOUBLE_EQ(c.band_hi, 0.7);
  EXPECT_FALSE(c.replay_enabled);
  EXPECT_EQ(c.replay.capacity_groups, 100);
  EXPECT_EQ(c.replay.capacity_bytes, 1000000);
  EXPECT_EQ(c.replay.strategy, ReplayStrategy::kTargeted);
  EXPECT_EQ(c.replay.max_age_versions, 5);
  EXPECT_EQ(c.replay.max_replays, 2);
  EXPECT_EQ(c.underfill, ReplayUnderfill::kShrink);
  // Replay disabled: every step is all fresh and fresh_fraction does not count.
  EXPECT_EQ(c.FreshPerStep(), 64);
}

TEST(RunConfigTest, EffectiveReferenceSampling) {
  EXPECT_EQ(ParseOrDie("{}").EffectiveReferenceSampling(), ReferenceSampling::kInformative);
  EXPECT_EQ(ParseOrDie(R"({"estimator": {"mode": "paper"}})").EffectiveReferenceSampling(),
            ReferenceSampling::kUniform);
  EXPECT_EQ(ParseOrDie(R"({"estimator": {"mode": "history"}})").EffectiveReferenceSampling(),
            ReferenceSampling::kUniform);
  // An explicit value wins in every mode.
  EXPECT_EQ(ParseOrDie(R"({"reference_sampling": "uniform"})").EffectiveReferenceSampling(),
            ReferenceSampling::kUniform);
  EXPECT_EQ(ParseOrDie(R"({"reference_sampling": "informative", "estimator": {"mode": "paper"}})")
                .EffectiveReferenceSampling(),
            ReferenceSampling::kInformative);
  // null means unset.
  EXPECT_FALSE(ParseOrDie(R"({"reference_sampling": null})").reference_sampling.has_value());
}

TEST(RunConfigTest, RejectsOutOfRangeValues) {
  ExpectInvalid(R"({"batch_size": 0})", {"batch_size", "0"});
  ExpectInvalid(R"({"batch_size": -5})", {"batch_size", "-5"});
  ExpectInvalid(R"({"batch_size": 1000001})", {"batch_size", "1000001"});
  ExpectInvalid(R"({"group_size": 0})", {"group_size"});
  ExpectInvalid(R"({"group_size": 4097})", {"group_size", "4097"});
  ExpectInvalid(R"({"group_size": 10000000000})", {"group_size"});  // would overflow an int
  ExpectInvalid(R"({"steps_per_round": 0})", {"steps_per_round"});
  ExpectInvalid(R"({"steps_per_round": 10001})", {"steps_per_round"});
  ExpectInvalid(R"({"reference_size": -1})", {"reference_size", "-1"});
  ExpectInvalid(R"({"reference_size": -1, "reference_mode": "none"})", {"reference_size"});
  ExpectInvalid(R"({"reference_size": 0})", {"reference_size", "none"});
  ExpectInvalid(R"({"reference_size": 0, "reference_mode": "paper"})", {"reference_size"});
  ExpectInvalid(R"({"alpha": 1e400})", {"alpha", "finite"});
  ExpectInvalid(R"({"alpha": -1e400})", {"alpha"});
  ExpectInvalid(R"({"tau": 0})", {"tau"});
  ExpectInvalid(R"({"tau": -0.1})", {"tau"});
  ExpectInvalid(R"({"tau": 1e999})", {"tau"});
  ExpectInvalid(R"({"fresh_fraction": 0})", {"fresh_fraction"});
  ExpectInvalid(R"({"fresh_fraction": 1.0001})", {"fresh_fraction"});
  ExpectInvalid(R"({"fresh_fraction": -0.5})", {"fresh_fraction"});
  ExpectInvalid(R"({"seed": -1})", {"seed", "2^53", "doubles"});
  ExpectInvalid(R"({"seed": 9007199254740994})", {"seed", "2^53", "doubles"});
  ExpectInvalid(R"({"seed": 1.5})", {"seed"});
  ExpectInvalid(R"({"lease_timeout_seconds": 0})", {"lease_timeout_seconds"});
  ExpectInvalid(R"({"lease_timeout_seconds": -1})", {"lease_timeout_seconds"});
  ExpectInvalid(R"({"lease_timeout_seconds": 2592001})", {"lease_timeout_seconds", "30 days"});
  ExpectInvalid(R"({"lease_timeout_seconds": 1e500})", {"lease_timeout_seconds"});
  ExpectInvalid(R"({"selector": {"cooldown_steps": -1}})", {"selector.cooldown_steps", "-1"});
  ExpectInvalid(R"({"selector": {"band_lo": 0.9, "band_hi": 0.2}})",
                {"selector.band_lo", "selector.band_hi"});
  ExpectInvalid(R"({"selector": {"band_hi": 1e400}})", {"selector.band_hi"});
  ExpectInvalid(R"({"selector": {"strategy": "best"}})", {"selector.strategy", "best"});
  ExpectInvalid(R"({"replay": {"capacity_groups": -1}})", {"replay.capacity_groups", "-1"});
  ExpectInvalid(R"({"replay": {"capacity_groups": 0}})", {"replay.capacity_groups"});
  ExpectInvalid(R"({"replay": {"capacity_bytes": 1}})", {"replay.capacity_bytes"});
  ExpectInvalid(R"({"replay": {"max_age_versions": -2}})", {"replay.max_age_versions"});
  ExpectInvalid(R"({"replay": {"max_replays": -2}})", {"replay.max_replays"});
  ExpectInvalid(R"({"replay": {"strategy": "random"}})", {"replay.strategy", "random"});
  ExpectInvalid(R"({"replay": {"underfill": "grow"}})", {"replay.underfill", "grow"});
  ExpectInvalid(R"({"reference_mode": "later"})", {"reference_mode", "later"});
  ExpectInvalid(R"({"reference_sampling": "best"})", {"reference_sampling", "best"});
  ExpectInvalid(R"({"estimator": {"decay": 1.5}})", {"estimator.decay"});
  ExpectInvalid(R"({"estimator": {"mode": "magic"}})", {"estimator.mode"});
}

TEST(RunConfigTest, AcceptsBoundaryValues) {
  const RunConfig lo = ParseOrDie(R"({"batch_size": 1, "group_size": 1, "steps_per_round": 1,
      "reference_size": 1, "fresh_fraction": 1, "lease_timeout_seconds": 2592000,
      "selector": {"band_lo": 0.5, "band_hi": 0.5}})");
  EXPECT_EQ(lo.FreshPerStep(), 1);
  const RunConfig hi =
      ParseOrDie(R"({"batch_size": 1000000, "group_size": 4096, "steps_per_round": 10000})");
  EXPECT_EQ(hi.group_size, 4096);
  // An integral value written with an exponent or a fraction point is still an integer.
  EXPECT_EQ(ParseOrDie(R"({"batch_size": 5.12e2})").batch_size, 512);
  EXPECT_EQ(ParseOrDie(R"({"batch_size": 256.0})").batch_size, 256);
  // Any finite alpha is allowed (the selector only needs a finite target).
  EXPECT_DOUBLE_EQ(ParseOrDie(R"({"alpha": -2})").alpha, -2);
}

TEST(RunConfigTest, ReferenceSizeIsIgnoredWithoutReferences) {
  const RunConfig none = ParseOrDie(R"({"reference_mode": "none", "reference_size": 0})");
  EXPECT_EQ(none.reference_mode, ReferenceMode::kNone);
  // Even a K that could never fit inline is accepted: there is no reference set.
  EXPECT_TRUE(ParseRunConfig(R"({"reference_mode": "none", "reference_size": 100000})").ok());
  // ... and does not count against the pool.
  EXPECT_TRUE(none.ValidateForPool(1024).ok());
}

TEST(RunConfigTest, RejectsCombinationsThatCannotBeServed) {
  // 0.0009 * 512 = 0.46 rounds to 0 (0.001 * 512 = 0.512 would round to 1).
  ExpectInvalid(R"({"fresh_fraction": 0.0009})",
                {"fresh_fraction", "0.0009", "batch_size 512", "rounds to 0"});
  // Without replay the batch is all fresh, so the same fraction is harmless.
  EXPECT_TRUE(ParseRunConfig(R"({"fresh_fraction": 0.0009, "replay": {"enabled": false}})").ok());

  // Inline: K must fit in mu * round(delta * B) = 2 * 256 = 512.
  EXPECT_TRUE(ParseRunConfig(R"({"reference_size": 512})").ok());
  ExpectInvalid(R"({"reference_size": 513})",
                {"reference_size", "steps_per_round", "batch_size", "fresh_fraction", "512"});
  // More steps per round or more fresh share make room.
  EXPECT_TRUE(ParseRunConfig(R"({"reference_size": 513, "steps_per_round": 3})").ok());
  EXPECT_TRUE(ParseRunConfig(R"({"reference_size": 1024, "fresh_fraction": 1})").ok());
  // Without replay the round's fresh share is mu * B = 1024.
  EXPECT_TRUE(ParseRunConfig(R"({"reference_size": 1024, "replay": {"enabled": false}})").ok());
  ExpectInvalid(R"({"reference_size": 1025, "replay": {"enabled": false}})", {"reference_size"});
  // The paper mode rolls references out separately, so they need not fit.
  EXPECT_TRUE(ParseRunConfig(R"({"reference_size": 5000, "reference_mode": "paper"})").ok());

  // Validate checks the struct the same way.
  RunConfig c;
  c.band_lo = 0.9;
  c.band_hi = 0.1;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("selector.band_lo"));
  RunConfig big_seed;
  big_seed.seed = (uint64_t{1} << 53) + 1;
  EXPECT_THAT(std::string(big_seed.Validate().message()), HasSubstr("seed"));
}

TEST(RunConfigTest, RejectsUnknownKeysAtEveryLevel) {
  ExpectInvalid(R"({"batch_sise": 512})", {"batch_sise", "unknown key", "batch_size"});
  ExpectInvalid(R"({"replay": {"capcity_groups": 10}})",
                {"replay.capcity_groups: unknown key", "capacity_groups"});
  ExpectInvalid(R"({"selector": {"band": 0.5}})", {"selector.band: unknown key", "band_lo"});
  ExpectInvalid(R"({"estimator": {"decai": 0.5}})", {"estimator.decai", "unknown key"});
  // replay.alpha is the run's alpha, not a key of its own.
  ExpectInvalid(R"({"replay": {"alpha": 0.5}})", {"replay.alpha: unknown key"});
}

TEST(RunConfigTest, RejectsWrongTypes) {
  ExpectInvalid(R"({"batch_size": "512"})", {"batch_size: want an integer", "got a string"});
  ExpectInvalid(R"({"batch_size": 1.5})", {"batch_size", "1.5"});
  ExpectInvalid(R"({"batch_size": 1e300})", {"batch_size", "1e300"});
  ExpectInvalid(R"({"batch_size": null})", {"batch_size", "null"});
  ExpectInvalid(R"({"group_size": true})", {"group_size", "a bool"});
  ExpectInvalid(R"({"alpha": "half"})", {"alpha", "a string"});
  ExpectInvalid(R"({"tau": [0.1]})", {"tau", "an array"});
  ExpectInvalid(R"({"reference_mode": 1})", {"reference_mode", "a number"});
  ExpectInvalid(R"({"reference_sampling": false})", {"reference_sampling", "a bool"});
  ExpectInvalid(R"({"replay": {"enabled": 1}})", {"replay.enabled", "true or false"});
  ExpectInvalid(R"({"replay": {"capacity_bytes": 2.5}})", {"replay.capacity_bytes"});
  ExpectInvalid(R"({"replay": []})", {"replay", "want an object", "an array"});
  ExpectInvalid(R"({"selector": "dots"})", {"selector", "want an object"});
  ExpectInvalid(R"({"selector": {"band_lo": "low"}})", {"selector.band_lo", "a string"});
  ExpectInvalid(R"({"estimator": 3})", {"estimator", "object"});
  ExpectInvalid(R"([1, 2])", {"run config", "want an object"});
}

TEST(RunConfigTest, RejectsMalformedJson) {
  ExpectInvalid(R"({"batch_size": 512,})", {"JSON", "byte"});
  ExpectInvalid(R"({"batch_size": 512} trailing)", {"JSON", "byte"});
  ExpectInvalid("", {"JSON"});
  ExpectInvalid(R"({"batch_size": 1, "batch_size": 2})", {"JSON", "batch_size"});
  ExpectInvalid(R"({"alpha": NaN})", {"JSON", "byte"});
}

TEST(RunConfigTest, OnlineModelBlockParsesValidatesAndRoundTrips) {
  const RunConfig c = ParseOrDie(
      R"({"estimator": {"model": {"enabled": false, "l2": 0.5, "iterations": 7,
          "label_decay": 0.8, "max_labels": 100, "min_labels": 4, "folds": 3}}})");
  const OnlineModelOptions& m = c.estimator.options.model;
  EXPECT_FALSE(m.enabled);
  EXPECT_EQ(m.probe.l2, 0.5);
  EXPECT_EQ(m.probe.max_iterations, 7);
  EXPECT_EQ(m.label_decay, 0.8);
  EXPECT_EQ(m.max_labels, 100);
  EXPECT_EQ(m.min_labels, 4);
  EXPECT_EQ(m.folds, 3);
  const RunConfig again = ParseOrDie(RunConfigToJson(c));
  EXPECT_EQ(RunConfigToJson(again), RunConfigToJson(c));
  for (const auto& [json, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"estimator": {"model": {"l2": -1}}})", "estimator.model.l2"},
           {R"({"estimator": {"model": {"iterations": 0}}})", "estimator.model.iterations"},
           {R"({"estimator": {"model": {"label_decay": 1.5}}})", "estimator.model.label_decay"},
           {R"({"estimator": {"model": {"folds": 1}}})", "estimator.model.folds"},
           {R"({"estimator": {"model": {"max_labels": 0}}})", "estimator.model.max_labels"},
           {R"({"estimator": {"model": {"enabled": 1}}})", "estimator.model.enabled"},
           {R"({"estimator": {"model": {"depth": 2}}})", "estimator.model.depth"},
           {R"({"estimator": {"model": []}})", "estimator.model"}}) {
    absl::StatusOr<RunConfig> parsed = ParseRunConfig(json);
    ASSERT_FALSE(parsed.ok()) << json;
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << json;
    EXPECT_NE(parsed.status().message().find(field), std::string::npos)
        << json << " -> " << parsed.status().message();
  }
}

TEST(RunConfigTest, AdapterTrainingParsesValidatesAndRoundTrips) {
  const RunConfig short_form =
      ParseOrDie(R"({"estimator": {"mode": "paper", "adapter_training": "online"}})");
  EXPECT_TRUE(short_form.estimator.options.adapter_training.enabled);
  EXPECT_EQ(short_form.estimator.options.adapter_training.epochs, 2);
  const RunConfig c = ParseOrDie(
      R"({"estimator": {"mode": "paper", "adapter_training": {"mode": "online", "epochs": 3,
          "learning_rate": 0.0005, "batch_size": 64, "ref_size": 32, "max_labels": 500,
          "min_labels": 8, "label_decay": 0.8, "hidden_size": 16, "num_layers": 1}}})");
  const AdapterOnlineOptions& a = c.estimator.options.adapter_training;
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.epochs, 3);
  EXPECT_EQ(a.learning_rate, 0.0005);
  EXPECT_EQ(a.batch_size, 64);
  EXPECT_EQ(a.ref_size, 32);
  EXPECT_EQ(a.max_labels, 500);
  EXPECT_EQ(a.min_labels, 8);
  EXPECT_EQ(a.label_decay, 0.8);
  EXPECT_EQ(a.hidden_size, 16);
  EXPECT_EQ(a.num_layers, 1);
  const RunConfig again = ParseOrDie(RunConfigToJson(c));
  EXPECT_EQ(RunConfigToJson(again), RunConfigToJson(c));
  EXPECT_EQ(again.estimator.options.adapter_training.hidden_size, 16);
  for (const auto& [json, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"estimator": {"adapter_training": "online"}})", "estimator.adapter_training"},
           {R"({"estimator": {"mode": "paper", "adapter_training": "yes"}})",
            "estimator.adapter_training"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"epochs": 0}}})",
            "estimator.adapter_training.epochs"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"learning_rate": -1}}})",
            "estimator.adapter_training.learning_rate"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"label_decay": 0}}})",
            "estimator.adapter_training.label_decay"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"min_labels": 1}}})",
            "estimator.adapter_training.min_labels"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"mode": "on"}}})",
            "estimator.adapter_training.mode"},
           {R"({"estimator": {"mode": "paper", "adapter_training": {"lr": 0.1}}})",
            "estimator.adapter_training.lr"}}) {
    ExpectInvalid(json, {field});
  }
}

TEST(RunConfigTest, RoundTripsDefaults) {
  const std::string json = RunConfigToJson(RunConfig());
  // Valid JSON with every top-level key and nested block, in the documented order.
  absl::StatusOr<JsonValue> doc = ParseJson(json);
  ASSERT_TRUE(doc.ok()) << doc.status();
  std::vector<std::string> keys;
  for (const auto& [key, value] : doc->members()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "batch_size", "group_size", "steps_per_round", "reference_size",
                      "reference_mode", "reference_sampling", "alpha", "tau", "fresh_fraction",
                      "seed", "lease_timeout_seconds", "estimator", "selector", "replay"}));
  EXPECT_EQ(doc->Find("replay")->members().size(), 7u);
  EXPECT_EQ(doc->Find("selector")->members().size(), 4u);
  EXPECT_EQ(doc->Find("estimator")->members().size(), 12u);
  EXPECT_EQ(doc->Find("estimator")->Find("model")->members().size(), 7u);
  EXPECT_EQ(doc->Find("estimator")->Find("adapter_training")->Find("mode")->as_string(), "off");
  EXPECT_TRUE(doc->Find("reference_sampling")->is_null());
  EXPECT_TRUE(doc->Find("estimator")->Find("attention_tau")->is_null());
  EXPECT_TRUE(doc->Find("estimator")->Find("top_k")->is_null());
  EXPECT_EQ(doc->Find("batch_size")->raw(), "512");
  EXPECT_EQ(doc->Find("tau")->raw(), "0.001");

  const RunConfig parsed = ParseOrDie(json);
  EXPECT_EQ(RunConfigToJson(parsed), json);
}

TEST(RunConfigTest, RoundTripsNonDefaultConfig) {
  RunConfig c;
  c.batch_size = 96;
  c.group_size = 4;
  c.steps_per_round = 3;
  c.reference_size = 77;
  c.reference_mode = ReferenceMode::kPaper;
  c.reference_sampling = ReferenceSampling::kUniform;
  c.alpha = 0.1 + 0.2;  // not exactly 0.3: the shortest exact form must survive
  c.tau = 1.0 / 3.0;
  c.fresh_fraction = 0.7;
  c.seed = (uint64_t{1} << 53) - 1;
  c.lease_timeout_seconds = 12.25;
  c.estimator.options.mode = EstimatorMode::kPaper;
  c.estimator.adapter_path = "/models/adapter \"v2\".safetensors";
  c.estimator.options.attention_tau = 0.05f;
  c.estimator.options.top_k = 16;
  c.estimator.options.label_window = 5;
  c.estimator.options.decay = 0.8;
  c.estimator.options.prior_strength = 2.5;
  c.estimator.options.max_labeled = 100;
  c.estimator.options.recalibration_window = 0;
  c.estimator.options.use_priors = false;
  c.selector_strategy = SelectorStrategy::kThompson;
  c.cooldown_steps = 7;
  c.band_lo = 0.25;
  c.band_hi = 0.75;
  c.replay_enabled = false;
  c.replay.capacity_groups = 33;
  c.replay.capacity_bytes = 123456789;
  c.replay.strategy = ReplayStrategy::kTargeted;
  c.replay.max_age_versions = 4;
  c.replay.max_replays = 3;
  c.replay.alpha = c.alpha;
  c.underfill = ReplayUnderfill::kShrink;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();

  const std::string json = RunConfigToJson(c);
  ASSERT_NE(json, RunConfigToJson(RunConfig()));
  const RunConfig parsed = ParseOrDie(json);
  EXPECT_EQ(RunConfigToJson(parsed), json);
  // Spot-check fields the JSON comparison relies on being exact.
  EXPECT_EQ(parsed.alpha, c.alpha);
  EXPECT_EQ(parsed.tau, c.tau);
  EXPECT_EQ(parsed.seed, c.seed);
  EXPECT_EQ(parsed.estimator.options.attention_tau, c.estimator.options.attention_tau);
  EXPECT_EQ(parsed.estimator.adapter_path, c.estimator.adapter_path);
  EXPECT_EQ(parsed.replay.alpha, c.alpha);
}

// docs/paper.md §7.2 item 7: N = 10,240, B = 512, mu = 2, K = 256.
TEST(RunConfigTest, ValidateForPoolWithPaperNumbers) {
  const RunConfig paper;
  EXPECT_TRUE(paper.ValidateForPool(10240).ok());
  // Round 0 draws mu * B = 1024 fresh questions besides K = 256: 1280 is the smallest pool.
  EXPECT_TRUE(paper.ValidateForPool(1280).ok());
  absl::Status tight = paper.ValidateForPool(1279);
  EXPECT_EQ(tight.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(tight.message()),
              AllOf(HasSubstr("steps_per_round"), HasSubstr("batch_size"),
                    HasSubstr("reference_size"), HasSubstr("1279")));

  absl::Status small = paper.ValidateForPool(200);
  EXPECT_EQ(small.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(small.message()), AllOf(HasSubstr("reference_size"), HasSubstr("200")));

  RunConfig paper_mode;
  paper_mode.reference_mode = ReferenceMode::kPaper;
  EXPECT_EQ(paper_mode.ValidateForPool(255).code(), absl::StatusCode::kFailedPrecondition);

  RunConfig no_references;
  no_references.reference_mode = ReferenceMode::kNone;
  EXPECT_TRUE(no_references.ValidateForPool(1024).ok());
  EXPECT_EQ(no_references.ValidateForPool(1023).code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(paper.ValidateForPool(-1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunConfigTest, EnumNamesRoundTrip) {
  for (ReferenceMode mode : {ReferenceMode::kInline, ReferenceMode::kPaper, ReferenceMode::kNone}) {
    absl::StatusOr<ReferenceMode> parsed = ParseReferenceMode(ReferenceModeName(mode));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, mode);
  }
  for (ReplayUnderfill u : {ReplayUnderfill::kFillFresh, ReplayUnderfill::kShrink}) {
    absl::StatusOr<ReplayUnderfill> parsed = ParseReplayUnderfill(ReplayUnderfillName(u));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, u);
  }
  EXPECT_FALSE(ParseReferenceMode("Inline").ok());
  EXPECT_FALSE(ParseReplayUnderfill("fill-fresh").ok());
}

}  // namespace
}  // namespace dots
