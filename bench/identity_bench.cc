// What a ServiceAccount token costs the agent per request, in-process
// (agent/identity/service_account_token.h): the first request of a token (an RS256 verification
// and a cache insert), a cached token (a SHA-256 and a map lookup), and, as the baseline measured
// in the same invocation, the bare SHA-256 of the token that every identity mode pays.
//
//   build/bench/identity_bench [tokens=2000] [lookups=200000]

#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/identity/service_account_token.h"
#include "agent/identity/testing/test_issuer.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace buildcache;
  const int tokens = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int lookups = argc > 2 ? std::atoi(argv[2]) : 200000;
  const identity::testing::Issuer signer("k");
  const std::string issuer = "https://kubernetes.default.svc";
  const Json jwks = {{"keys", {signer.Jwk()}}};
  identity::ServiceAccountTokenOptions options;
  options.fetch = [&](const std::string& path) -> Result<std::string> {
    if (path == "/openid/v1/jwks") return jwks.dump();
    return Json{{"issuer", issuer}}.dump();
  };
  auto source = identity::ServiceAccountTokenIdentity::Create(std::move(options), nullptr);
  if (!source.ok()) {
    std::fprintf(stderr, "%s\n", source.status().ToString().c_str());
    return 1;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::vector<std::string> signed_tokens;
  signed_tokens.reserve(static_cast<size_t>(tokens));
  for (int i = 0; i < tokens; ++i) {
    signed_tokens.push_back(signer.Sign(
        {{"iss", issuer},
         {"aud", {"buildcache.io"}},
         {"exp", now + 3600},
         {"iat", now},
         {"kubernetes.io",
          {{"namespace", "team-a"},
           {"serviceaccount", {{"name", "builder"}}},
           {"pod", {{"name", "ci-" + std::to_string(i)}, {"uid", std::to_string(i)}}}}}}));
  }
  auto start = Clock::now();
  for (const std::string& t : signed_tokens) {
    if (!(*source)->Verify(t).ok()) return 1;
  }
  const double first = Seconds(start) / tokens;
  start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    if (!(*source)->Verify(signed_tokens[i % tokens]).ok()) return 1;
  }
  const double cached = Seconds(start) / lookups;
  unsigned char digest[32];
  unsigned int n = 0;
  start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    const std::string& t = signed_tokens[i % tokens];
    EVP_Digest(t.data(), t.size(), digest, &n, EVP_sha256(), nullptr);
  }
  const double hash = Seconds(start) / lookups;
  std::printf("token bytes: %zu\n", signed_tokens[0].size());
  std::printf("first request of a token: %.1f us\n", first * 1e6);
  std::printf("cached token:             %.2f us (%.1fx the bare SHA-256 baseline)\n", cached * 1e6,
              cached / hash);
  std::printf("bare SHA-256 of a token:  %.2f us\n", hash * 1e6);
  std::printf("first / cached:           %.0fx\n", first / cached);
  return 0;
}
