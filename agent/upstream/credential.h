#pragma once

// Credentials for a private upstream (a registry that wants Basic or Bearer authorization), read
// from files: in Kubernetes the files of a Secret volume the operator mounts into the agents
// (spec.ecosystems.<name>.upstreamSecretRef), standalone any files the agent can read. The value
// lives only in this object's memory and in the Authorization header of requests to the
// upstream's own origin; it is never logged, rendered, exported or put into an error message.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/upstream/url.h"
#include "common/base/thread_annotations.h"
#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::upstream {

// Where the credential is. Either token_file (Bearer) or username_file and password_file (Basic);
// all empty = none. Each file holds the value alone; surrounding whitespace (the newline `echo`
// or an editor adds) is ignored.
struct CredentialFiles {
  std::string token_file;
  std::string username_file;
  std::string password_file;

  bool empty() const {
    return token_file.empty() && username_file.empty() && password_file.empty();
  }
  // "bearer", "basic" or "none".
  std::string_view type() const;
  bool operator==(const CredentialFiles&) const = default;
};

// The Authorization header value one upstream gets. The files are looked at (stat) on every call
// and read again when one changed (its inode, size, mtime or ctime): a Kubernetes Secret volume
// is updated by swapping a symlink, so a rotated Secret is used from the first request after the
// kubelet wrote it, without a restart. Thread-safe.
class UpstreamCredential {
 public:
  // name: the section, for logs ("pypi"). upstream: the upstream's URL; the credential is sent
  // to its origin (scheme, host, port) only. kInvalidArgument when upstream is not a URL, or the
  // files are neither a token file alone nor a username and a password file (the agent's
  // configuration checks the same, naming its keys: agent/config/agent_config.cc). The files need
  // not exist yet: a missing one is reported by AuthorizationFor, and picked up when it appears.
  static Result<std::shared_ptr<UpstreamCredential>> Make(std::string name,
                                                          std::string_view upstream,
                                                          CredentialFiles files);

  // For a request to `url`: "Basic <base64>" or "Bearer <token>" when url has the upstream's
  // origin; nullopt for any other origin (another host, port or scheme: a CDN the upstream
  // redirects to, a files host an index links to). kUnavailable, naming the section and the file
  // (never its content), when a file cannot be read, is empty, larger than 64 KiB, or holds a
  // control character (or a ':' in a Basic username): the request is then not sent at all.
  Result<std::optional<std::string>> AuthorizationFor(const Url& url) EXCLUDES(mu_);

  const std::string& name() const { return name_; }
  const std::string& origin() const { return origin_; }

 private:
  UpstreamCredential(std::string name, std::string origin, CredentialFiles files);

  // A file that cannot be stat'ed has the default stamp (it is read again when it appears).
  using Stamp = fs::FileStamp;
  struct Loaded {
    std::vector<Stamp> stamps;  // of the files in order: token, or username and password
    std::string header;         // the Authorization value; "" when loading failed
    std::string error;          // why loading failed (names the file, never its content)
  };
  Loaded Load(const std::vector<Stamp>& stamps) const;

  const std::string name_;
  const std::string origin_;
  const CredentialFiles files_;
  Mutex mu_;
  std::optional<Loaded> loaded_ GUARDED_BY(mu_);
};

}  // namespace buildcache::upstream
