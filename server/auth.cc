#include "server/auth.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dots {
namespace {

constexpr std::string_view kBearer = "Bearer ";
constexpr size_t kTokenBytes = 32;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

std::unique_ptr<BIO, BioFree> ReadOnlyBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(
      absl::StrCat("authorization: ", absl::string_view(why.data(), why.size())));
}

}  // namespace

std::string Sha256(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::StatusOr<std::string> GenerateToken() {
  unsigned char bytes[kTokenBytes];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("token: the CSPRNG (OpenSSL RAND_bytes) failed");
  }
  std::string encoded = absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return absl::StrCat("dots_", encoded);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::Status ValidateAdminToken(std::string_view token, std::string_view field) {
  const absl::string_view name(field.data(), field.size());
  if (token.size() < 16 || token.size() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the admin token has ", token.size(), " characters; want 16 to 4096"));
  }
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": the admin token has a space, control or non-ASCII byte at offset ", i));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPemCertificates(const std::string& pem, const std::string& path) {
  std::unique_ptr<BIO, BioFree> bio = ReadOnlyBio(pem);
  int count = 0;
  while (true) {
    std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    ++count;
  }
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPemKeyPair(const std::string& cert_pem, const std::string& key_pem,
                             const std::string& key_path) {
  std::unique_ptr<BIO, BioFree> cert_bio = ReadOnlyBio(cert_pem);
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  std::unique_ptr<BIO, BioFree> key_bio = ReadOnlyBio(key_pem);
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_path, ": holds no unencrypted PEM private key"));
  }
  if (cert == nullptr || X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_path, ": the key does not belong to the certificate"));
  }
  return absl::OkStatus();
}

Authenticator::Authenticator(std::string_view admin_token)
    : enabled_(!admin_token.empty()), admin_sha256_(enabled_ ? Sha256(admin_token) : "") {}

absl::StatusOr<std::string> Authenticator::CallerTokenHash(
    const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  const auto range = metadata.equal_range("authorization");
  if (range.first == range.second) {
    return Unauthenticated("no bearer token (want metadata \"authorization: Bearer <token>\")");
  }
  if (std::next(range.first) != range.second) {
    return Unauthenticated("more than one authorization header");
  }
  const std::string_view value(range.first->second.data(), range.first->second.size());
  if (value.size() <= kBearer.size() || !(value.substr(0, kBearer.size()) == kBearer ||
                                          value.substr(0, kBearer.size()) == "bearer ")) {
    return Unauthenticated("the header is not \"Bearer <token>\"");
  }
  return Sha256(value.substr(kBearer.size()));
}

bool Authenticator::IsRunToken(const std::string& hash, const RunRegistry& registry) {
  bool found = false;
  // No early exit: the time taken does not tell which run matched.
  for (const auto& [id, entry] : registry.List()) {
    found |= ConstantTimeEquals(entry.run->token_sha256(), hash);
  }
  return found;
}

absl::Status Authenticator::AuthorizeAdmin(const grpc::ServerContextBase& context,
                                           const RunRegistry& registry) const {
  if (!enabled_) return absl::OkStatus();
  absl::StatusOr<std::string> hash = CallerTokenHash(context);
  if (!hash.ok()) return hash.status();
  if (ConstantTimeEquals(*hash, admin_sha256_)) return absl::OkStatus();
  if (IsRunToken(*hash, registry)) {
    return absl::PermissionDeniedError(
        "authorization: this call needs the admin token; a run's token acts only on its run");
  }
  return Unauthenticated("the token is not valid on this server");
}

absl::Status Authenticator::AuthorizeRun(const grpc::ServerContextBase& context,
                                         const RunRegistry& registry,
                                         const std::string& run_id) const {
  if (!enabled_) return absl::OkStatus();
  absl::StatusOr<std::string> hash = CallerTokenHash(context);
  if (!hash.ok()) return hash.status();
  if (ConstantTimeEquals(*hash, admin_sha256_)) return absl::OkStatus();
  if (absl::StatusOr<RunEntry> entry = registry.Get(run_id); entry.ok()) {
    const std::string& expected = entry->run->token_sha256();
    if (!expected.empty() && ConstantTimeEquals(*hash, expected)) return absl::OkStatus();
  }
  if (IsRunToken(*hash, registry)) {
    return absl::PermissionDeniedError(
        "authorization: the token belongs to another run (a run's token acts only on its run)");
  }
  return Unauthenticated("the token is not valid on this server");
}

absl::Status Authenticator::AuthenticateAny(const grpc::ServerContextBase& context,
                                            const RunRegistry& registry) const {
  if (!enabled_) return absl::OkStatus();
  absl::StatusOr<std::string> hash = CallerTokenHash(context);
  if (!hash.ok()) return hash.status();
  if (ConstantTimeEquals(*hash, admin_sha256_) || IsRunToken(*hash, registry)) {
    return absl::OkStatus();
  }
  return Unauthenticated("the token is not valid on this server");
}

}  // namespace dots
