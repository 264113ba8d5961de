#include "agent/upstream/credential.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/log/log.h"
#include "common/text/base64.h"

namespace buildcache::upstream {
namespace {

constexpr size_t kMaxFileSize = 64 << 10;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Reads a credential file whole. Errors name the file and what is wrong, never the bytes.
Result<std::string> ReadValue(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Unavailable(path + ": " + std::strerror(errno));
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Unavailable(path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxFileSize) {
      ::close(fd);
      return Unavailable(path + ": larger than 64 KiB");
    }
  }
  ::close(fd);
  std::string value(Trim(data));
  if (value.empty()) return Unavailable(path + ": empty");
  for (char c : value) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7f) return Unavailable(path + ": holds a control character");
  }
  return value;
}

}  // namespace

std::string_view CredentialFiles::type() const {
  if (!token_file.empty()) return "bearer";
  if (!username_file.empty() || !password_file.empty()) return "basic";
  return "none";
}

UpstreamCredential::UpstreamCredential(std::string name, std::string origin, CredentialFiles files)
    : name_(std::move(name)), origin_(std::move(origin)), files_(std::move(files)) {}

Result<std::shared_ptr<UpstreamCredential>> UpstreamCredential::Make(std::string name,
                                                                     std::string_view upstream,
                                                                     CredentialFiles files) {
  const bool bearer =
      !files.token_file.empty() && files.username_file.empty() && files.password_file.empty();
  const bool basic =
      files.token_file.empty() && !files.username_file.empty() && !files.password_file.empty();
  if (!bearer && !basic) {
    return InvalidArgument(name +
                           ".auth: either tokenFile, or usernameFile and passwordFile, is needed");
  }
  // Cargo's "sparse+" prefix is the client's marker, not part of the URL.
  if (upstream.starts_with("sparse+")) upstream.remove_prefix(7);
  Result<Url> url = ParseUrl(upstream);
  if (!url.ok()) return InvalidArgument(name + ".upstream: " + url.status().message());
  return std::shared_ptr<UpstreamCredential>(
      new UpstreamCredential(std::move(name), url->origin(), std::move(files)));
}

UpstreamCredential::Loaded UpstreamCredential::Load(const std::vector<Stamp>& stamps) const {
  Loaded out;
  out.stamps = stamps;
  if (!files_.token_file.empty()) {
    Result<std::string> token = ReadValue(files_.token_file);
    if (!token.ok()) {
      out.error = token.status().message();
      return out;
    }
    for (char c : *token) {
      if (c == ' ' || static_cast<unsigned char>(c) >= 0x80) {
        out.error = files_.token_file + ": a bearer token is printable ASCII without spaces";
        return out;
      }
    }
    out.header = "Bearer " + *token;
    return out;
  }
  Result<std::string> user = ReadValue(files_.username_file);
  if (!user.ok()) {
    out.error = user.status().message();
    return out;
  }
  if (user->find(':') != std::string::npos) {
    out.error = files_.username_file + ": a basic-auth username cannot contain ':'";
    return out;
  }
  Result<std::string> password = ReadValue(files_.password_file);
  if (!password.ok()) {
    out.error = password.status().message();
    return out;
  }
  out.header = "Basic " + text::Base64Encode(*user + ":" + *password);
  return out;
}

Result<std::optional<std::string>> UpstreamCredential::AuthorizationFor(const Url& url) {
  if (url.origin() != origin_) return std::optional<std::string>();
  std::vector<Stamp> stamps;
  for (const std::string* path :
       {&files_.token_file, &files_.username_file, &files_.password_file}) {
    if (path->empty()) continue;
    Result<Stamp> stamp = fs::StampOf(*path);
    stamps.push_back(stamp.ok() ? *stamp : Stamp{});
  }
  MutexLock lock(mu_);
  if (!loaded_ || loaded_->stamps != stamps) {
    const bool first = !loaded_;
    Loaded next = Load(stamps);
    const std::string type(files_.type());
    if (!next.error.empty()) {
      log::Warn("upstream credential unusable",
                {{"section", name_}, {"type", type}, {"error", next.error}});
    } else {
      log::Info(first ? "upstream credential loaded" : "upstream credential reloaded",
                {{"section", name_}, {"type", type}, {"origin", origin_}});
    }
    loaded_ = std::move(next);
  }
  if (!loaded_->error.empty()) {
    return Unavailable(name_ + " upstream credential unusable: " + loaded_->error);
  }
  return std::optional<std::string>(loaded_->header);
}

}  // namespace buildcache::upstream
