#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/identity/identity_source.h"
#include "common/base/thread_annotations.h"
#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::identity {

// One entry of a tokens file. The token itself is never kept: only its SHA-256, which is what
// presented tokens are compared with (in constant time, over every entry).
struct TokenEntry {
  std::array<unsigned char, 32> token_sha256{};
  std::string name;   // for logs; defaults to the scope
  std::string scope;  // IsScopeName
  bool trusted_writer = false;
};

// Parses a tokens file:
//
//   tokens:
//     - token: "<at least 16 characters>"
//       scope: release          # [a-z0-9-], at most 63
//       trustedWriter: true     # default false
//       name: release-builds    # optional, for logs; default: the scope
//
// Every problem is reported at once (kInvalidArgument, "FILE:LINE:COL: tokens[i].key: why"),
// never quoting a token. An empty list (`tokens: []`) is valid: every token is then refused.
Result<std::vector<TokenEntry>> ParseTokensFile(std::string_view yaml, const std::string& name);

struct TokenFileOptions {
  std::string path;
  // How often Identify looks at the file's stat fingerprint (inode, size, mtime) to see whether
  // it changed. A Kubernetes Secret volume swaps a symlink, which changes the inode.
  std::chrono::milliseconds recheck = std::chrono::seconds(1);
  // Injected for tests; steady_clock::now by default.
  std::function<std::chrono::steady_clock::time_point()> clock;
};

// The standalone identity source: tokens from a file (ParseTokensFile), re-read when it changes.
// A request with a known token is that entry's caller; an unknown one is kPermissionDenied; no
// Authorization header is anonymous. A file that changed but does not parse (or vanished) is
// logged ("tokens file not reloaded") and the tokens loaded last stay in force.
//
// Thread-safe. Identify takes a short lock to read the current token set.
class TokenFileIdentity final : public IdentitySource {
 public:
  // Reads the file; its problems are the error (kInvalidArgument, or kNotFound when absent).
  static Result<std::unique_ptr<TokenFileIdentity>> Open(TokenFileOptions options);

  // IdentitySource
  Result<Caller> Identify(const http::Request& request) override;
  std::string_view mode() const override { return "tokens"; }

  // Re-reads the file now if its fingerprint changed. Returns the problem when it changed but
  // could not be loaded (the old tokens stay).
  Status ReloadIfChanged() EXCLUDES(mu_);
  size_t size() const EXCLUDES(mu_);

  // The caller a bare token names (what Identify does after taking it from the header).
  Result<Caller> IdentifyToken(std::string_view token) EXCLUDES(mu_);

 private:
  using TokenSet = std::vector<TokenEntry>;

  explicit TokenFileIdentity(TokenFileOptions options);
  void MaybeRecheck();

  const TokenFileOptions options_;
  mutable Mutex mu_;
  std::shared_ptr<const TokenSet> tokens_ GUARDED_BY(mu_);
  fs::FileStamp stamp_ GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point next_check_ GUARDED_BY(mu_);
};

}  // namespace buildcache::identity
