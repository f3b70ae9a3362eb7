// Access control of dots-server (server/auth.h): TLS, mutual TLS and bearer tokens, through real
// servers and the C++ client. The auth matrix calls every RPC with every kind of token over
// every transport and checks the status documented in proto/dots/v1/dots.proto, and that a
// refused call changed nothing. Certificates are made for each run by the openssl CLI.
#include "server/auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"

namespace dots::testing {
namespace {

constexpr char kAdminToken[] = "test-admin-token-5f0c1d2e3a4b";

// ---- certificates ----

// A CA, a server certificate for localhost / 127.0.0.1, a client certificate signed by the CA,
// and a client certificate signed by another CA ("rogue"), all EC P-256, in one directory.
class Pki {
 public:
  static const Pki& Get() {
    static const Pki* pki = new Pki();
    return *pki;
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }

 private:
  Pki() {
    std::string pattern = ::testing::TempDir() + "dots-pki-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = pattern;
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    auto ca = [&](const std::string& name) {
      return absl::StrCat("openssl req -x509 ", key, " -keyout ", name, ".key -out ", name,
                          ".pem -days 2 -subj /CN=", name,
                          " -addext basicConstraints=critical,CA:TRUE"
                          " -addext keyUsage=critical,keyCertSign,cRLSign");
    };
    auto leaf = [&](const std::string& name, const std::string& signer, const std::string& cn,
                    const std::string& extensions) {
      return absl::StrCat("openssl req ", key, " -keyout ", name, ".key -out ", name,
                          ".csr -subj /CN=", cn, " && printf '", extensions, "' > ", name,
                          ".ext && openssl x509 -req -in ", name, ".csr -CA ", signer,
                          ".pem -CAkey ", signer, ".key -CAcreateserial -days 2 -out ", name,
                          ".pem -extfile ", name, ".ext");
    };
    const std::vector<std::string> steps = {
        ca("ca"),
        ca("rogue-ca"),
        leaf("server", "ca", "localhost",
             "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n"),
        leaf("client", "ca", "dots-trainer", "extendedKeyUsage=clientAuth\\n"),
        leaf("rogue-client", "rogue-ca", "dots-trainer", "extendedKeyUsage=clientAuth\\n"),
    };
    for (const std::string& step : steps) {
      const std::string command = absl::StrCat("cd ", dir_, " && (", step, ") >openssl.log 2>&1");
      if (std::system(command.c_str()) != 0) {
        std::ifstream log(File("openssl.log"));
        error_ = absl::StrCat("`", step,
                              "` failed: ", std::string(std::istreambuf_iterator<char>(log), {}));
        return;
      }
    }
    ok_ = true;
  }

  std::string dir_;
  bool ok_ = false;
  std::string error_;
};

// ---- transports and tokens ----

enum class Transport { kPlaintext, kTls, kMtls, kMtlsWithoutClientCert };

std::string TransportName(Transport t) {
  switch (t) {
    case Transport::kPlaintext:
      return "Plaintext";
    case Transport::kTls:
      return "Tls";
    case Transport::kMtls:
      return "Mtls";
    case Transport::kMtlsWithoutClientCert:
      return "MtlsWithoutClientCert";
  }
  return "?";
}

enum class TokenKind { kNone, kWrong, kOtherRun, kAdmin, kRightRun };
constexpr TokenKind kTokenKinds[] = {TokenKind::kNone, TokenKind::kWrong, TokenKind::kOtherRun,
                                     TokenKind::kAdmin, TokenKind::kRightRun};

std::string TokenName(TokenKind k) {
  switch (k) {
    case TokenKind::kNone:
      return "no token";
    case TokenKind::kWrong:
      return "wrong token";
    case TokenKind::kOtherRun:
      return "other run's token";
    case TokenKind::kAdmin:
      return "admin token";
    case TokenKind::kRightRun:
      return "the run's token";
  }
  return "?";
}

// The server options of a transport, with auth on and a state directory.
Server::Options AuthServerOptions(Transport transport, const std::string& state_dir) {
  const Pki& pki = Pki::Get();
  Server::Options options = TestOptions();
  options.state_dir = state_dir;
  options.admin_token = kAdminToken;
  if (transport == Transport::kPlaintext) {
    options.allow_insecure_tokens = true;
  } else {
    options.tls_cert_file = pki.File("server.pem");
    options.tls_key_file = pki.File("server.key");
  }
  if (transport == Transport::kMtls || transport == Transport::kMtlsWithoutClientCert) {
    options.tls_client_ca_file = pki.File("ca.pem");
  }
  return options;
}

// A client without retries (a refused handshake must not be retried for seconds).
std::unique_ptr<Client> MakeClient(const std::string& address, Transport transport,
                                   const std::string& token, bool client_cert = true,
                                   const std::string& cert_name = "client") {
  const Pki& pki = Pki::Get();
  Client::Options options;
  options.target = address;
  options.token = token;
  options.max_attempts = 1;
  options.default_deadline = absl::Seconds(20);
  if (transport != Transport::kPlaintext) {
    const bool with_cert = client_cert && transport != Transport::kMtlsWithoutClientCert;
    absl::Status loaded =
        Client::LoadTlsFiles(pki.File("ca.pem"), with_cert ? pki.File(cert_name + ".pem") : "",
                             with_cert ? pki.File(cert_name + ".key") : "", &options);
    EXPECT_TRUE(loaded.ok()) << loaded;
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

// ---- the matrix ----

enum class Rpc {
  kCreateRun,
  kGetRun,
  kListRuns,
  kDeleteRun,
  kExportRun,
  kImportRun,
  kUpsertQuestions,
  kImportPool,
  kNextBatch,
  kReportRollouts,
  kGetEstimates,
  kGetRunStats,
  kSealRun,
};
constexpr Rpc kRpcs[] = {Rpc::kCreateRun,       Rpc::kGetRun,       Rpc::kListRuns,
                         Rpc::kDeleteRun,       Rpc::kExportRun,    Rpc::kImportRun,
                         Rpc::kUpsertQuestions, Rpc::kImportPool,   Rpc::kNextBatch,
                         Rpc::kReportRollouts,  Rpc::kGetEstimates, Rpc::kGetRunStats,
                         Rpc::kSealRun};

std::string RpcName(Rpc rpc) {
  constexpr const char* kNames[] = {"CreateRun", "GetRun",         "ListRuns",        "DeleteRun",
                                    "ExportRun", "ImportRun",      "UpsertQuestions", "ImportPool",
                                    "NextBatch", "ReportRollouts", "GetEstimates",    "GetRunStats",
                                    "SealRun"};
  return kNames[static_cast<int>(rpc)];
}

// The documented status (proto/dots/v1/dots.proto, "Access") of `rpc` on run "a" with a token
// of kind `kind` over `transport`.
absl::StatusCode Expected(Rpc rpc, TokenKind kind, Transport transport) {
  if (transport == Transport::kMtlsWithoutClientCert) return absl::StatusCode::kUnavailable;
  switch (kind) {
    case TokenKind::kNone:
    case TokenKind::kWrong:
      return absl::StatusCode::kUnauthenticated;
    case TokenKind::kOtherRun:
      return absl::StatusCode::kPermissionDenied;
    case TokenKind::kAdmin:
      return absl::StatusCode::kOk;
    case TokenKind::kRightRun:
      break;
  }
  const bool admin_only = rpc == Rpc::kCreateRun || rpc == Rpc::kListRuns ||
                          rpc == Rpc::kImportRun || rpc == Rpc::kImportPool || rpc == Rpc::kSealRun;
  return admin_only ? absl::StatusCode::kPermissionDenied : absl::StatusCode::kOk;
}

class AuthMatrixTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    const Pki& pki = Pki::Get();
    ASSERT_TRUE(pki.ok()) << pki.error();
    state_ = std::make_unique<TempDir>("dots-auth-state");
    files_ = std::make_unique<TempDir>("dots-auth-files");
    server_ = StartTestServer(AuthServerOptions(GetParam(), state_->path()));
    ASSERT_NE(server_, nullptr);
    // Setup goes through a client that the server accepts whatever the transport under test.
    const Transport setup_transport =
        GetParam() == Transport::kMtlsWithoutClientCert ? Transport::kMtls : GetParam();
    admin_ = MakeClient(server_->address(), setup_transport, kAdminToken);
    ASSERT_NE(admin_, nullptr);
    for (const std::string id : {"a", "b"}) {
      absl::StatusOr<RunInfo> run = admin_->CreateRun(id, kSmallConfig);
      ASSERT_TRUE(run.ok()) << run.status();
      ASSERT_TRUE(absl::StartsWith(run->token, "dots_")) << run->token;
      tokens_[id] = run->token;
      ASSERT_TRUE(admin_->UpsertQuestions(id, MakeQuestions(64), FloatMatrix()).ok());
    }
    ASSERT_NE(tokens_["a"], tokens_["b"]);
    absl::StatusOr<BatchSlice> batch = admin_->NextBatch("a", 0, 0, 1, 0);
    ASSERT_TRUE(batch.ok()) << batch.status();
    ASSERT_FALSE(batch->items.empty());
    report_key_ = batch->items[0].key;
    archive_ = files_->path() + "/a.dotsrun";
    ASSERT_TRUE(admin_->ExportRun("a", archive_).ok());
    pool_file_ = files_->path() + "/pool.jsonl";
    std::ofstream pool(pool_file_);
    for (int i = 0; i < 8; ++i) pool << "{\"key\": \"q" << i << "\", \"prompt\": \"again\"}\n";
  }

  std::string TokenOf(TokenKind kind, const std::string& run, const std::string& other) {
    switch (kind) {
      case TokenKind::kNone:
        return "";
      case TokenKind::kWrong:
        // The shape of a real token, but no server issued it.
        return "dots_" + std::string(43, 'x');
      case TokenKind::kOtherRun:
        return tokens_[other];
      case TokenKind::kAdmin:
        return kAdminToken;
      case TokenKind::kRightRun:
        return tokens_[run];
    }
    return "";
  }

  // What a refused call must leave unchanged: the runs and run a's counters.
  std::string Snapshot() {
    absl::StatusOr<std::vector<RunInfo>> runs = admin_->ListRuns();
    EXPECT_TRUE(runs.ok()) << runs.status();
    std::string out;
    for (const RunInfo& r : runs.ok() ? *runs : std::vector<RunInfo>()) {
      absl::StrAppend(&out, r.run_id, ":", r.pool_size, r.sealed ? ":sealed " : " ");
    }
    absl::StatusOr<RunStats> s = admin_->GetRunStats("a");
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) {
      absl::StrAppend(&out, "step=", s->step, " round=", s->round, " reported=", s->reported_groups,
                      " duplicates=", s->duplicate_reports, " rejected=", s->rejected_reports,
                      " leases=", s->leases_outstanding);
    }
    return out;
  }

  // Calls `rpc` through `client` (whose token is of `kind`); returns the call's status.
  absl::Status Call(Rpc rpc, TokenKind kind, Client& client) {
    const std::string fresh_id = absl::StrCat("new", ++counter_);
    switch (rpc) {
      case Rpc::kCreateRun: {
        absl::StatusOr<RunInfo> run = client.CreateRun(fresh_id, kSmallConfig);
        if (run.ok()) {
          EXPECT_TRUE(absl::StartsWith(run->token, "dots_"));
          EXPECT_EQ(run->token.size(), 48u);
          EXPECT_NE(run->token, tokens_["a"]);
        } else {
          EXPECT_EQ(admin_->GetRun(fresh_id).status().code(), absl::StatusCode::kNotFound);
        }
        return run.status();
      }
      case Rpc::kGetRun: {
        absl::StatusOr<RunInfo> run = client.GetRun("a");
        if (run.ok()) {
          EXPECT_EQ(run->pool_size, 64);
          EXPECT_TRUE(run->token.empty()) << "GetRun must never return a token";
        }
        return run.status();
      }
      case Rpc::kListRuns:
        return client.ListRuns().status();
      case Rpc::kDeleteRun: {
        // A run of its own to delete; "the run's token" is its token, "another run's" is b's.
        absl::StatusOr<RunInfo> doomed = admin_->CreateRun(fresh_id, "{}");
        EXPECT_TRUE(doomed.ok()) << doomed.status();
        tokens_[fresh_id] = doomed.ok() ? doomed->token : "";
        std::unique_ptr<Client> caller =
            MakeClient(server_->address(), GetParam(), TokenOf(kind, fresh_id, "b"));
        absl::Status deleted = caller->DeleteRun(fresh_id);
        EXPECT_EQ(admin_->GetRun(fresh_id).ok(), !deleted.ok()) << deleted;
        if (!deleted.ok()) {
          EXPECT_TRUE(admin_->DeleteRun(fresh_id).ok());
        }
        return deleted;
      }
      case Rpc::kExportRun: {
        const std::string path = files_->path() + "/" + fresh_id + ".dotsrun";
        absl::Status exported = client.ExportRun("a", path);
        EXPECT_EQ(std::ifstream(path).good(), exported.ok()) << exported;
        return exported;
      }
      case Rpc::kImportRun: {
        absl::StatusOr<RunInfo> run = client.ImportRun(archive_, fresh_id);
        if (run.ok()) {
          EXPECT_EQ(run->pool_size, 64);
          EXPECT_TRUE(absl::StartsWith(run->token, "dots_"));
          EXPECT_NE(run->token, tokens_["a"]) << "an imported run gets a token of its own";
          // The new token reaches the imported run, and only it: not the exported run.
          std::unique_ptr<Client> owner = MakeClient(server_->address(), GetParam(), run->token);
          EXPECT_TRUE(owner->GetRunStats(fresh_id).ok());
          EXPECT_EQ(owner->GetRunStats("a").status().code(), absl::StatusCode::kPermissionDenied);
          // ... and a's token does not reach the copy.
          std::unique_ptr<Client> a_owner =
              MakeClient(server_->address(), GetParam(), tokens_["a"]);
          EXPECT_EQ(a_owner->GetRunStats(fresh_id).status().code(),
                    absl::StatusCode::kPermissionDenied);
        } else {
          EXPECT_EQ(admin_->GetRun(fresh_id).status().code(), absl::StatusCode::kNotFound);
        }
        return run.status();
      }
      case Rpc::kUpsertQuestions: {
        std::vector<Question> questions = MakeQuestions(4);
        absl::StatusOr<UpsertResult> result = client.UpsertQuestions("a", questions, FloatMatrix());
        if (result.ok()) {
          EXPECT_EQ(result->updated, 4);
        }
        return result.status();
      }
      case Rpc::kImportPool: {
        absl::StatusOr<ImportProgress> progress = client.ImportPool("a", pool_file_);
        if (progress.ok()) {
          EXPECT_EQ(progress->updated, 8);
        }
        return progress.status();
      }
      case Rpc::kNextBatch: {
        absl::StatusOr<BatchSlice> batch = client.NextBatch("a", 0, 0, 1, 0);
        if (batch.ok()) {
          EXPECT_FALSE(batch->items.empty());
          if (!batch->items.empty()) {
            EXPECT_EQ(batch->items[0].key, report_key_);
          }
        }
        return batch.status();
      }
      case Rpc::kReportRollouts: {
        RolloutReport group;
        group.key = report_key_;
        group.rewards = {1, 0, 0, 1};
        group.payload = "payload";
        absl::StatusOr<ReportResult> result = client.ReportRollouts("a", 0, {group});
        if (result.ok()) {
          EXPECT_EQ(result->accepted + result->duplicates, 1);
        }
        return result.status();
      }
      case Rpc::kGetEstimates: {
        absl::StatusOr<std::vector<QuestionEstimate>> estimates = client.GetEstimates("a");
        if (estimates.ok()) {
          EXPECT_EQ(estimates->size(), 64u);
        }
        return estimates.status();
      }
      case Rpc::kGetRunStats:
        return client.GetRunStats("a").status();
      case Rpc::kSealRun: {
        absl::StatusOr<RunInfo> sealed = client.SealRun("a", true);
        if (sealed.ok()) {
          EXPECT_TRUE(sealed->sealed);
          EXPECT_EQ(admin_->GetRunStats("a").status().code(), absl::StatusCode::kOk);
          absl::StatusOr<RunInfo> unsealed = admin_->SealRun("a", false);
          EXPECT_TRUE(unsealed.ok() && !unsealed->sealed) << unsealed.status();
        } else {
          EXPECT_FALSE(admin_->GetRun("a")->sealed) << "a refused seal changes nothing";
        }
        return sealed.status();
      }
    }
    return absl::InternalError("unknown rpc");
  }

  std::unique_ptr<TempDir> state_;
  std::unique_ptr<TempDir> files_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> admin_;
  std::map<std::string, std::string> tokens_;
  std::string report_key_;
  std::string archive_;
  std::string pool_file_;
  int counter_ = 0;
};

TEST_P(AuthMatrixTest, EveryRpcWithEveryToken) {
  int checked = 0;
  for (TokenKind kind : kTokenKinds) {
    std::unique_ptr<Client> client =
        MakeClient(server_->address(), GetParam(), TokenOf(kind, "a", "b"));
    ASSERT_NE(client, nullptr);
    for (Rpc rpc : kRpcs) {
      SCOPED_TRACE(absl::StrCat(RpcName(rpc), " with ", TokenName(kind), " over ",
                                TransportName(GetParam())));
      const absl::StatusCode want = Expected(rpc, kind, GetParam());
      const std::string before = want == absl::StatusCode::kOk ? "" : Snapshot();
      const absl::Status got = Call(rpc, kind, *client);
      EXPECT_EQ(got.code(), want) << got;
      if (want != absl::StatusCode::kOk) {
        EXPECT_EQ(Snapshot(), before) << "a refused call changed the server";
        // Refusals by token say why without echoing any token.
        if (want != absl::StatusCode::kUnavailable) {
          EXPECT_TRUE(absl::StartsWith(got.message(), "authorization: ")) << got;
          EXPECT_FALSE(absl::StrContains(got.message(), "dots_")) << got;
        }
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 5 * 13);  // every token kind, every RPC
}

INSTANTIATE_TEST_SUITE_P(Transports, AuthMatrixTest,
                         ::testing::Values(Transport::kPlaintext, Transport::kTls, Transport::kMtls,
                                           Transport::kMtlsWithoutClientCert),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return TransportName(info.param);
                         });

// ---- what stays open, and what the server refuses to start with ----

// A TLS server with tokens on, reached by the fixture's raw helpers over a TLS channel that
// carries no token.
class AuthOpenServicesTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Pki::Get().ok()) << Pki::Get().error();
    Server::Options options = AuthServerOptions(Transport::kTls, "");
    options.metrics_listen = "127.0.0.1:0";
    Start(options);
    std::ifstream ca(Pki::Get().File("ca.pem"));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = std::string(std::istreambuf_iterator<char>(ca), {});
    channel_ = grpc::CreateChannel(server_->address(), grpc::SslCredentials(ssl));
    stub_ = pb::Dots::NewStub(channel_);
  }
};

TEST_F(AuthOpenServicesTest, HealthReflectionAndMetricsNeedNoToken) {
  grpc::Status status;
  EXPECT_EQ(HealthCheck("", &status), 1) << status.error_message();
  EXPECT_EQ(HealthCheck("dots.v1.Dots", &status), 1) << status.error_message();
  std::vector<std::string> services = ReflectionServices(&status);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(std::find(services.begin(), services.end(), "dots.v1.Dots"), services.end());
  const std::string metrics = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_TRUE(absl::StartsWith(metrics, "HTTP/1.0 200") ||
              absl::StartsWith(metrics, "HTTP/1.1 200"))
      << metrics.substr(0, 200);
  // The same channel without a token is refused by the Dots service itself.
  grpc::Status created = CreateRun("x", "{}");
  EXPECT_EQ(created.error_code(), grpc::StatusCode::UNAUTHENTICATED) << created.error_message();
}

TEST(AuthServerTest, RefusesTokensWithoutTlsUnlessAllowed) {
  Server::Options options = TestOptions();
  options.listen_address = "127.0.0.1:0";
  options.admin_token = kAdminToken;
  absl::StatusOr<std::unique_ptr<Server>> refused = Server::BuildAndStart(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "allow_insecure_tokens"))
      << refused.status();
  options.allow_insecure_tokens = true;
  absl::StatusOr<std::unique_ptr<Server>> allowed = Server::BuildAndStart(options);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  (*allowed)->Shutdown(absl::ZeroDuration());
}

TEST(AuthServerTest, RefusesWeakAdminTokensAndBadTlsFiles) {
  ASSERT_TRUE(Pki::Get().ok()) << Pki::Get().error();
  const Pki& pki = Pki::Get();
  Server::Options options = AuthServerOptions(Transport::kTls, "");
  options.listen_address = "127.0.0.1:0";
  options.admin_token = "short";
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options.admin_token = "has a space in the middle";
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options.admin_token = kAdminToken;
  ASSERT_TRUE(options.Validate().ok());

  Server::Options missing = options;
  missing.tls_cert_file = pki.File("absent.pem");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(missing);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(server.status().message(), "absent.pem")) << server.status();

  Server::Options mismatched = options;
  mismatched.tls_key_file = pki.File("client.key");  // not the server certificate's key
  server = Server::BuildAndStart(mismatched);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(absl::StrContains(server.status().message(), "client.key")) << server.status();

  Server::Options not_pem = options;
  not_pem.tls_client_ca_file = pki.File("openssl.log");
  server = Server::BuildAndStart(not_pem);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(absl::StrContains(server.status().message(), "openssl.log")) << server.status();

  Server::Options half = options;
  half.tls_key_file.clear();
  EXPECT_EQ(half.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AuthServerTest, HandshakeRefusesPlaintextAndUntrustedClientCertificates) {
  ASSERT_TRUE(Pki::Get().ok()) << Pki::Get().error();
  std::unique_ptr<Server> server = StartTestServer(AuthServerOptions(Transport::kMtls, ""));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<Client> trusted = MakeClient(server->address(), Transport::kMtls, kAdminToken);
  EXPECT_TRUE(trusted->ListRuns().ok());
  std::unique_ptr<Client> rogue = MakeClient(server->address(), Transport::kMtls, kAdminToken,
                                             /*client_cert=*/true, "rogue-client");
  EXPECT_EQ(rogue->ListRuns().status().code(), absl::StatusCode::kUnavailable);
  std::unique_ptr<Client> plaintext =
      MakeClient(server->address(), Transport::kPlaintext, kAdminToken);
  EXPECT_EQ(plaintext->ListRuns().status().code(), absl::StatusCode::kUnavailable);
}

TEST(AuthServerTest, RunTokensSurviveARestart) {
  ASSERT_TRUE(Pki::Get().ok()) << Pki::Get().error();
  TempDir state("dots-auth-restart");
  std::string token;
  {
    std::unique_ptr<Server> server =
        StartTestServer(AuthServerOptions(Transport::kTls, state.path()));
    ASSERT_NE(server, nullptr);
    std::unique_ptr<Client> admin = MakeClient(server->address(), Transport::kTls, kAdminToken);
    absl::StatusOr<RunInfo> run = admin->CreateRun("kept", "{}");
    ASSERT_TRUE(run.ok()) << run.status();
    token = run->token;
    server->Shutdown(absl::ZeroDuration());
  }
  std::unique_ptr<Server> server =
      StartTestServer(AuthServerOptions(Transport::kTls, state.path()));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<Client> owner = MakeClient(server->address(), Transport::kTls, token);
  EXPECT_TRUE(owner->GetRun("kept").ok());
  // Only the hash was stored: a token differing in its last character is not accepted.
  std::string near = token;
  near.back() = near.back() == 'A' ? 'B' : 'A';
  std::unique_ptr<Client> other = MakeClient(server->address(), Transport::kTls, near);
  EXPECT_EQ(other->GetRun("kept").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(AuthServerTest, AuthOffAcceptsAnyCallAndReturnsNoToken) {
  std::unique_ptr<Server> server = StartTestServer(TestOptions());
  ASSERT_NE(server, nullptr);
  for (const std::string token : {"", "anything"}) {
    std::unique_ptr<Client> client = MakeClient(server->address(), Transport::kPlaintext, token);
    absl::StatusOr<RunInfo> run = client->CreateRun(token.empty() ? "r0" : "r1", "{}");
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_TRUE(run->token.empty());
    EXPECT_TRUE(client->ListRuns().ok());
  }
}

TEST(AuthTokenTest, Sha256MatchesTheFipsVector) {
  // FIPS 180-2, appendix B.1: SHA-256("abc").
  EXPECT_EQ(absl::BytesToHexString(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256("").size(), 32u);
}

TEST(AuthTokenTest, GeneratedTokensAreDistinctAndUrlSafe) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<std::string> token = GenerateToken();
    ASSERT_TRUE(token.ok()) << token.status();
    ASSERT_EQ(token->size(), 48u);
    ASSERT_TRUE(absl::StartsWith(*token, "dots_"));
    for (char c : token->substr(5)) {
      ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << *token;
    }
    seen.insert(*token);
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
}

}  // namespace
}  // namespace dots::testing
