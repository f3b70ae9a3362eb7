// The one proto <-> core conversion (proto/convert.h): every field of every wire message it
// writes is set from a value whose fields are all non-default (so a field added to dots.proto
// and forgotten here fails), and every value survives the round trip.
#include "proto/convert.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dots {
namespace {

namespace pb = ::dots::v1;

// Every field of `message` (recursively, for nested messages) is set: non-default scalars,
// non-empty repeated fields.
void ExpectEveryFieldSet(const google::protobuf::Message& message) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) {
      EXPECT_GT(reflection->FieldSize(message, field), 0)
          << descriptor->name() << "." << field->name() << " is not converted";
      if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE &&
          reflection->FieldSize(message, field) > 0) {
        ExpectEveryFieldSet(reflection->GetRepeatedMessage(message, field, 0));
      }
    } else {
      EXPECT_TRUE(reflection->HasField(message, field))
          << descriptor->name() << "." << field->name() << " is not converted";
    }
  }
}

template <typename Message>
bool SameWire(const Message& a, const Message& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

TEST(ConvertTest, RunInfoAndImportProgress) {
  const RunInfo run{"r1", R"({"batch_size": 8})", 60, 1700000000, "dots_token", /*sealed=*/true};
  pb::RunInfo p;
  ToProto(run, &p);
  ExpectEveryFieldSet(p);
  const RunInfo back = FromProto(p);
  EXPECT_EQ(back.run_id, run.run_id);
  EXPECT_EQ(back.config_json, run.config_json);
  EXPECT_EQ(back.pool_size, run.pool_size);
  EXPECT_EQ(back.created_unix_seconds, run.created_unix_seconds);
  EXPECT_EQ(back.token, run.token);
  EXPECT_EQ(back.sealed, run.sealed);

  const ImportProgress progress{100, 60, 40, true};
  pb::ImportPoolProgress q;
  ToProto(progress, &q);
  ExpectEveryFieldSet(q);
  pb::ImportPoolProgress again;
  ToProto(FromProto(q), &again);
  EXPECT_TRUE(SameWire(q, again));
}

TEST(ConvertTest, QuestionsWithAndWithoutEmbeddingAndPrior) {
  Question q{"q7", "What is 7 + 7?", R"({"answer": 14})", 0.25};
  const float embedding[] = {1.5f, -2.0f, 0.0f};
  pb::Question p;
  ToProto(q, embedding, 3, &p);
  ExpectEveryFieldSet(p);
  EXPECT_EQ(std::vector<float>(p.embedding().begin(), p.embedding().end()),
            (std::vector<float>{1.5f, -2.0f, 0.0f}));
  const Question back = FromProto(pb::Question(p));
  EXPECT_EQ(back.key, q.key);
  EXPECT_EQ(back.prompt, q.prompt);
  EXPECT_EQ(back.metadata_json, q.metadata_json);
  EXPECT_EQ(back.prior, q.prior);

  // No prior and no embedding stay absent; an empty metadata_json reads back as the core's {}.
  pb::Question bare;
  ToProto(Question{"q8", "", "", std::nullopt}, nullptr, 0, &bare);
  EXPECT_FALSE(bare.has_prior());
  EXPECT_EQ(bare.embedding_size(), 0);
  const Question read = FromProto(std::move(bare));
  EXPECT_FALSE(read.prior.has_value());
  EXPECT_EQ(read.metadata_json, "{}");
}

TEST(ConvertTest, UpsertAndReportResults) {
  UpsertResult upsert;
  upsert.added = 3;
  upsert.updated = 2;
  upsert.rejected.push_back({4, "q4", "field \"prior\": 1.5 is outside [0, 1]"});
  pb::UpsertQuestionsResponse u;
  ToProto(upsert, &u);
  ExpectEveryFieldSet(u);
  pb::UpsertQuestionsResponse u2;
  ToProto(FromProto(u), &u2);
  EXPECT_TRUE(SameWire(u, u2));

  ReportResult report;
  report.accepted = 5;
  report.duplicates = 1;
  report.rejected = {{"q9", "key: not handed out at step 3"}};
  report.fresh_abs_errors = {0.5};  // server-side only
  pb::ReportRolloutsResponse r;
  ToProto(report, &r);
  ExpectEveryFieldSet(r);
  const ReportResult back = FromProto(r);
  EXPECT_EQ(back.accepted, 5);
  EXPECT_EQ(back.duplicates, 1);
  EXPECT_EQ(back.rejected, report.rejected);
  EXPECT_TRUE(back.fresh_abs_errors.empty());
}

TEST(ConvertTest, BatchItemsAndRoles) {
  for (ItemRole role : {ItemRole::kFresh, ItemRole::kReference}) {
    pb::BatchItem p;
    ToProto(BatchItem{"k", role, "prompt", R"({"a": 1})"}, &p);
    ExpectEveryFieldSet(p);
    const BatchItem back = FromProto(std::move(p));
    EXPECT_EQ(back.key, "k");
    EXPECT_EQ(back.role, role);
    EXPECT_EQ(back.prompt, "prompt");
    EXPECT_EQ(back.metadata_json, R"({"a": 1})");
  }
  EXPECT_EQ(ToProto(ItemRole::kFresh), pb::ROLE_FRESH);
  EXPECT_EQ(ToProto(ItemRole::kReference), pb::ROLE_REFERENCE);
  EXPECT_EQ(FromProto(pb::ROLE_UNSPECIFIED), ItemRole::kFresh);
}

TEST(ConvertTest, EstimatesAndRunStats) {
  const QuestionEstimate estimate{"q1", 0.375, 12, 4};
  pb::QuestionEstimate e;
  ToProto(estimate, &e);
  ExpectEveryFieldSet(e);
  pb::QuestionEstimate e2;
  ToProto(FromProto(e), &e2);
  EXPECT_TRUE(SameWire(e, e2));

  // Every field distinct, so a field mapped onto another one shows up too.
  RunStats stats;
  int64_t next = 1;
  for (int64_t* field : {&stats.step, &stats.round, &stats.pool_size, &stats.reported_groups,
                         &stats.duplicate_reports, &stats.rejected_reports, &stats.effective_groups,
                         &stats.solve_all_groups, &stats.solve_none_groups, &stats.replay_groups,
                         &stats.replay_bytes, &stats.replayed_groups, &stats.leases_outstanding,
                         &stats.leases_expired, &stats.rounds_planned, &stats.policy_version,
                         &stats.model_version, &stats.model_labels}) {
    *field = next++;
  }
  stats.effective_ratio_last_step = 0.625;
  stats.last_planning_seconds = 1.5;
  stats.model_training_loss = 0.125;
  stats.model_training_seconds = 2.5;
  stats.model_out_of_sample_pearson = 0.75;
  stats.effective_last_step_index = 9;  // bookkeeping of the run: does not travel
  pb::RunStats p;
  ToProto(stats, &p);
  ExpectEveryFieldSet(p);
  // Each wire field carries the core field of the same name.
  const std::map<std::string, double> by_name = {
      {"step", stats.step},
      {"round", stats.round},
      {"pool_size", stats.pool_size},
      {"reported_groups", stats.reported_groups},
      {"effective_ratio_last_step", stats.effective_ratio_last_step},
      {"replay_groups", stats.replay_groups},
      {"replay_bytes", stats.replay_bytes},
      {"leases_outstanding", stats.leases_outstanding},
      {"leases_expired", stats.leases_expired},
      {"duplicate_reports", stats.duplicate_reports},
      {"rejected_reports", stats.rejected_reports},
      {"effective_groups", stats.effective_groups},
      {"solve_all_groups", stats.solve_all_groups},
      {"solve_none_groups", stats.solve_none_groups},
      {"replayed_groups", stats.replayed_groups},
      {"rounds_planned", stats.rounds_planned},
      {"last_planning_seconds", stats.last_planning_seconds},
      {"policy_version", stats.policy_version},
      {"model_version", stats.model_version},
      {"model_labels", stats.model_labels},
      {"model_training_loss", stats.model_training_loss},
      {"model_training_seconds", stats.model_training_seconds},
      {"model_out_of_sample_pearson", stats.model_out_of_sample_pearson}};
  const google::protobuf::Reflection* reflection = p.GetReflection();
  for (int i = 0; i < p.GetDescriptor()->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = p.GetDescriptor()->field(i);
    ASSERT_TRUE(by_name.contains(field->name())) << field->name();
    const double wire = field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE
                            ? reflection->GetDouble(p, field)
                            : static_cast<double>(reflection->GetInt64(p, field));
    EXPECT_EQ(wire, by_name.at(field->name())) << field->name();
  }
  const RunStats back = FromProto(p);
  EXPECT_EQ(back.effective_last_step_index, -1);
  pb::RunStats again;
  ToProto(back, &again);
  EXPECT_TRUE(SameWire(p, again));
}

}  // namespace
}  // namespace dots
