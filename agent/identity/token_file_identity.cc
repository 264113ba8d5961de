#include "agent/identity/token_file_identity.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cerrno>

#include "common/config/document.h"
#include "common/log/log.h"

namespace buildcache::identity {
namespace {

constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 4096;

std::array<unsigned char, 32> Sha256(std::string_view data) {
  std::array<unsigned char, 32> out{};
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

// Collects every problem so one load reports all of them.
class Problems {
 public:
  void Add(const Status& s) {
    if (s.ok()) return;
    if (!message_.empty()) message_ += "\n";
    message_ += s.message();
  }
  Status ToStatus() const { return message_.empty() ? Status::Ok() : InvalidArgument(message_); }

 private:
  std::string message_;
};

void ParseEntry(const config::Node& item, std::vector<TokenEntry>* out, Problems* p) {
  if (!item.IsMap()) {
    return p->Add(item.Error("expected a mapping {token, scope, trustedWriter, name}"));
  }
  TokenEntry e;
  std::string token;
  config::Node token_node = item.Get("token");
  if (!token_node.present()) {
    p->Add(item.Error("token: required"));
  } else if (Result<std::string> t = token_node.AsString(); !t.ok()) {
    p->Add(token_node.Error("expected a string"));  // never echo the value
  } else {
    token = std::move(*t);
    if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
      p->Add(token_node.Error("must be 16 to 4096 characters long"));
    } else if (token.find_first_of(" \t\r\n") != std::string::npos) {
      p->Add(token_node.Error("must not contain whitespace"));
    }
  }
  p->Add(item.Read("scope", &e.scope));
  if (!item.Get("scope").present()) {
    p->Add(item.Error("scope: required"));
  } else if (!e.scope.empty() && !IsScopeName(e.scope)) {
    p->Add(
        item.Get("scope").Error("must be 1-63 characters of [a-z0-9-], starting and ending "
                                "with a letter or digit"));
  }
  p->Add(item.Read("trustedWriter", &e.trusted_writer));
  p->Add(item.Read("name", &e.name));
  if (e.name.empty()) e.name = e.scope;
  e.token_sha256 = Sha256(token);
  for (const TokenEntry& other : *out) {
    if (!token.empty() && other.token_sha256 == e.token_sha256) {
      p->Add(token_node.Error("the same token as the entry named " + other.name));
    }
  }
  out->push_back(std::move(e));
}

}  // namespace

Result<std::vector<TokenEntry>> ParseTokensFile(std::string_view yaml, const std::string& name) {
  BC_ASSIGN_OR_RETURN(config::Document doc, config::Document::Parse(yaml, name));
  BC_ASSIGN_OR_RETURN(config::Node root, doc.Root());
  Problems p;
  std::vector<TokenEntry> entries;
  config::Node list = root.Get("tokens");
  if (!list.present() || (!list.IsSequence() && !list.IsNull())) {
    p.Add(root.Error("tokens: expected a list of {token, scope, trustedWriter, name}"));
  } else {
    for (size_t i = 0; i < list.size(); ++i) ParseEntry(list.Item(i), &entries, &p);
  }
  p.Add(doc.CheckUnknownKeys());
  BC_RETURN_IF_ERROR(p.ToStatus());
  return entries;
}

TokenFileIdentity::TokenFileIdentity(TokenFileOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<TokenFileIdentity>> TokenFileIdentity::Open(TokenFileOptions options) {
  if (!options.clock) options.clock = [] { return std::chrono::steady_clock::now(); };
  std::unique_ptr<TokenFileIdentity> source(new TokenFileIdentity(std::move(options)));
  {
    MutexLock lock(source->mu_);
    source->tokens_ = std::make_shared<const TokenSet>();
    source->stamp_ = fs::FileStamp{.dev = ~uint64_t{0}};  // differs from any file
  }
  BC_RETURN_IF_ERROR(source->ReloadIfChanged());
  return source;
}

Status TokenFileIdentity::ReloadIfChanged() {
  Result<fs::FileStamp> stamp = fs::StampOf(options_.path);
  if (!stamp.ok()) return Status(stamp.status().code(), "tokens file " + stamp.status().message());
  const fs::FileStamp now = *stamp;
  {
    MutexLock lock(mu_);
    if (now == stamp_) return Status::Ok();
  }
  std::string text;
  {
    FILE* f = std::fopen(options_.path.c_str(), "rb");
    if (f == nullptr) return ErrnoStatus(errno, "tokens file " + options_.path);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  BC_ASSIGN_OR_RETURN(std::vector<TokenEntry> entries, ParseTokensFile(text, options_.path));
  size_t count = entries.size();
  size_t trusted = 0;
  for (const TokenEntry& e : entries) trusted += e.trusted_writer ? 1 : 0;
  {
    MutexLock lock(mu_);
    tokens_ = std::make_shared<const TokenSet>(std::move(entries));
    stamp_ = now;
  }
  log::Info("tokens file loaded", {{"file", options_.path},
                                   {"tokens", static_cast<int64_t>(count)},
                                   {"trusted_writers", static_cast<int64_t>(trusted)}});
  return Status::Ok();
}

size_t TokenFileIdentity::size() const {
  MutexLock lock(mu_);
  return tokens_->size();
}

void TokenFileIdentity::MaybeRecheck() {
  auto now = options_.clock();
  {
    MutexLock lock(mu_);
    if (now < next_check_) return;
    next_check_ = now + options_.recheck;
  }
  if (Status s = ReloadIfChanged(); !s.ok()) {
    log::Warn("tokens file not reloaded", {{"file", options_.path}, {"error", s.ToString()}});
  }
}

Result<Caller> TokenFileIdentity::IdentifyToken(std::string_view token) {
  MaybeRecheck();
  std::shared_ptr<const TokenSet> tokens;
  {
    MutexLock lock(mu_);
    tokens = tokens_;
  }
  const std::array<unsigned char, 32> presented = Sha256(token);
  const TokenEntry* match = nullptr;
  // Every entry is compared, in constant time, so timing says nothing about which one matched.
  for (const TokenEntry& e : *tokens) {
    if (CRYPTO_memcmp(presented.data(), e.token_sha256.data(), presented.size()) == 0) match = &e;
  }
  if (match == nullptr) return PermissionDenied("unknown token");
  return Caller{match->scope, match->name, match->trusted_writer, false};
}

Result<Caller> TokenFileIdentity::Identify(const http::Request& request) {
  Result<std::optional<std::string>> token = BearerToken(request.header("Authorization"));
  if (!token.ok()) return PermissionDenied(token.status().message());
  if (!token->has_value()) {
    MaybeRecheck();
    return Caller::Anonymous();
  }
  return IdentifyToken(**token);
}

}  // namespace buildcache::identity
