#include "agent/upstream/verifier.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <optional>
#include <span>
#include <string>

#include "common/text/base64.h"

namespace buildcache::upstream {

namespace {

using Algorithm = ExpectedDigest::Algorithm;

const EVP_MD* Md(Algorithm a) {
  switch (a) {
    case Algorithm::kSha1:
      return EVP_sha1();
    case Algorithm::kSha256:
      return EVP_sha256();
    case Algorithm::kSha384:
      return EVP_sha384();
    case Algorithm::kSha512:
      return EVP_sha512();
  }
  std::abort();
}

int Strength(Algorithm a) {
  switch (a) {
    case Algorithm::kSha1:
      return 1;
    case Algorithm::kSha256:
      return 2;
    case Algorithm::kSha384:
      return 3;
    case Algorithm::kSha512:
      return 4;
  }
  return 0;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kSha1:
      return "sha1";
    case Algorithm::kSha256:
      return "sha256";
    case Algorithm::kSha384:
      return "sha384";
    case Algorithm::kSha512:
      return "sha512";
  }
  return "unknown";
}

size_t DigestLength(Algorithm algorithm) {
  return static_cast<size_t>(EVP_MD_get_size(Md(algorithm)));
}

Result<ExpectedDigest> ParseIntegrity(std::string_view sri) {
  std::optional<ExpectedDigest> best;
  size_t pos = 0;
  while (pos < sri.size()) {
    size_t end = sri.find_first_of(" \t\r\n", pos);
    if (end == std::string_view::npos) end = sri.size();
    std::string_view token = sri.substr(pos, end - pos);
    pos = end + 1;
    if (token.empty()) continue;
    token = token.substr(0, token.find('?'));
    size_t dash = token.find('-');
    if (dash == std::string_view::npos) continue;
    std::string_view name = token.substr(0, dash);
    std::optional<Algorithm> algorithm;
    for (Algorithm a :
         {Algorithm::kSha1, Algorithm::kSha256, Algorithm::kSha384, Algorithm::kSha512}) {
      if (name == AlgorithmName(a)) algorithm = a;
    }
    if (!algorithm) continue;
    // Tokens hold no whitespace (split on it above), which the decoder would skip.
    Result<std::string> raw = text::Base64Decode(token.substr(dash + 1));
    if (!raw.ok() || raw->size() != DigestLength(*algorithm)) continue;
    ExpectedDigest d{*algorithm, *std::move(raw)};
    if (!best || Strength(d.algorithm) > Strength(best->algorithm)) best = std::move(d);
  }
  if (!best) return InvalidArgument("no usable sha1/sha256/sha384/sha512 entry in integrity");
  return *std::move(best);
}

Result<ExpectedDigest> ParseHexDigest(Algorithm algorithm, std::string_view hex) {
  if (hex.size() != 2 * DigestLength(algorithm)) {
    return InvalidArgument(std::string(AlgorithmName(algorithm)) + " hex digest must be " +
                           std::to_string(2 * DigestLength(algorithm)) + " characters");
  }
  ExpectedDigest d{algorithm, {}};
  d.raw.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]);
    int lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("bad character in hex digest");
    d.raw.push_back(static_cast<char>(hi << 4 | lo));
  }
  return d;
}

struct Verifier::Impl {
  struct Check {
    ExpectedDigest expected;
    EVP_MD_CTX* ctx = nullptr;  // null: not hashed here (skipped sha256)
  };
  std::vector<Check> checks;
  std::vector<ExpectedDigest> computed;
  Status early;  // a contradiction found before any byte (two different sha256 values)
};

Verifier::Verifier(std::vector<ExpectedDigest> expected, bool skip_sha256)
    : impl_(std::make_unique<Impl>()) {
  std::optional<std::string> sha256;
  for (auto& e : expected) {
    Impl::Check check{std::move(e), nullptr};
    const Algorithm algorithm = check.expected.algorithm;
    if (check.expected.raw.size() != DigestLength(algorithm)) {
      // A hand-built digest of the wrong length could never match; say so instead of hashing.
      impl_->early = DataLoss("expected " + std::string(AlgorithmName(algorithm)) + " digest has " +
                              std::to_string(check.expected.raw.size()) + " bytes");
      continue;
    }
    if (algorithm == Algorithm::kSha256 && skip_sha256) {
      // The store compares against one value; a second, different one can never match too.
      if (sha256 && *sha256 != check.expected.raw) {
        impl_->early = DataLoss("conflicting sha256 digests expected");
      }
      sha256 = check.expected.raw;
    } else {
      check.ctx = EVP_MD_CTX_new();
      if (check.ctx == nullptr || EVP_DigestInit_ex(check.ctx, Md(algorithm), nullptr) != 1) {
        std::abort();  // out of memory or a broken OpenSSL: nothing sensible to continue with
      }
    }
    impl_->checks.push_back(std::move(check));
  }
}

Verifier::~Verifier() {
  for (auto& c : impl_->checks) EVP_MD_CTX_free(c.ctx);
}

void Verifier::Update(std::string_view data) {
  for (auto& c : impl_->checks) {
    if (c.ctx != nullptr && EVP_DigestUpdate(c.ctx, data.data(), data.size()) != 1) std::abort();
  }
}

Status Verifier::Finish() {
  Status result = impl_->early;
  for (auto& c : impl_->checks) {
    if (c.ctx == nullptr) continue;
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(c.ctx, out, &len) != 1) std::abort();
    std::string_view actual(reinterpret_cast<const char*>(out), len);
    impl_->computed.push_back({c.expected.algorithm, std::string(actual)});
    if (result.ok() && actual != c.expected.raw) {
      result = DataLoss(std::string(AlgorithmName(c.expected.algorithm)) + " mismatch: expected " +
                        ToHex(c.expected.raw) + ", got " + ToHex(actual));
    }
  }
  return result;
}

const std::vector<ExpectedDigest>& Verifier::Computed() const { return impl_->computed; }

Result<std::vector<ExpectedDigest>> HashBlob(store::BlobReader& reader,
                                             const std::vector<Algorithm>& algos) {
  std::vector<ExpectedDigest> placeholders;
  placeholders.reserve(algos.size());
  for (Algorithm a : algos) placeholders.push_back({a, std::string(DigestLength(a), '\0')});
  Verifier hasher(std::move(placeholders), /*skip_sha256=*/false);
  std::string buf(1 << 20, '\0');
  uint64_t offset = 0;
  while (offset < reader.info().size) {
    BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(offset, std::span<char>(buf.data(), buf.size())));
    if (n == 0) return DataLoss("blob shorter than its index entry");
    hasher.Update(std::string_view(buf.data(), n));
    offset += n;
  }
  (void)hasher.Finish();
  return hasher.Computed();
}

}  // namespace buildcache::upstream
