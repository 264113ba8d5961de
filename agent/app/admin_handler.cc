#include "agent/app/admin_handler.h"

#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string_view>

#include "agent/store/blob_store.h"
#include "agent/upstream/url.h"
#include "common/log/log.h"

namespace buildcache::agent {
namespace {

constexpr std::string_view kWhitespace = " \t\r\n";

void Reply(http::Response& resp, int code, std::string_view content_type, std::string_view body) {
  resp.SetStatus(code);
  resp.SetHeader("Content-Type", content_type);
  resp.SetHeader("Cache-Control", "no-store");
  (void)resp.Send(body);
}

void ReplyText(http::Response& resp, int code, std::string_view message) {
  Reply(resp, code, "text/plain; charset=utf-8", std::string(message) + "\n");
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[(c >> 4) & 0xf];
      out += kHex[c & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The raw value of `name` in a query string, if present.
std::optional<std::string_view> QueryValue(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = part.find('=');
    if (part.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    }
  }
  return std::nullopt;
}

// Equal lengths are compared in constant time; the length itself is not secret.
bool TokenMatches(std::string_view presented, std::string_view token) {
  return presented.size() == token.size() &&
         CRYPTO_memcmp(presented.data(), token.data(), token.size()) == 0;
}

void Refuse(http::Request& req, http::Response& resp, int code, std::string_view reason) {
  log::Warn("admin request refused", {{"reason", reason},
                                      {"client", req.client_ip()},
                                      {"method", req.method()},
                                      {"path", req.path()}});
  if (code == 401) resp.SetHeader("WWW-Authenticate", "Bearer realm=\"buildcache-admin\"");
  ReplyText(resp, code, std::string("admin: ") + std::string(reason));
}

}  // namespace

AdminHandler::AdminHandler(std::string token, store::BlobStore& store)
    : token_(std::move(token)), store_(store) {}

void AdminHandler::Handle(http::Request& req, http::Response& resp) {
  if (token_.empty()) {
    ReplyText(resp, 404, "admin endpoint is off: set admin.tokenFile in the agent configuration");
    return;
  }
  std::string_view auth = req.header("Authorization");
  std::string_view header_token = req.header(kAdminTokenHeader);
  if (auth.empty() && header_token.empty()) {
    Refuse(req, resp, 401, "an Authorization: Bearer token is required");
    return;
  }
  constexpr std::string_view kBearer = "Bearer ";
  const bool matches =
      !header_token.empty()
          ? TokenMatches(header_token, token_)
          : auth.starts_with(kBearer) && TokenMatches(auth.substr(kBearer.size()), token_);
  if (!matches) {
    Refuse(req, resp, 403, "the bearer token is not the admin token");
    return;
  }
  if (req.path() != "/admin/purge") {
    ReplyText(resp, 404, "admin: no such endpoint (POST /admin/purge?key=KEY)");
    return;
  }
  if (req.method() != "POST") {
    resp.SetHeader("Allow", "POST");
    ReplyText(resp, 405, "admin: /admin/purge takes POST");
    return;
  }
  std::optional<std::string_view> raw_prefix = QueryValue(req.query(), "prefix");
  std::optional<std::string_view> raw = QueryValue(req.query(), "key");
  if (raw_prefix && raw) {
    ReplyText(resp, 400, "admin: give key or prefix, not both");
    return;
  }
  if (raw_prefix) {
    PurgePrefix(req, resp, *raw_prefix);
    return;
  }
  if (!raw || raw->empty()) {
    ReplyText(resp, 400, "admin: missing key (POST /admin/purge?key=KEY, KEY percent-encoded)");
    return;
  }
  Result<std::string> key = upstream::PercentDecode(*raw);
  if (!key.ok()) {
    ReplyText(resp, 400, "admin: bad key: " + key.status().message());
    return;
  }
  Status s = store_.Delete(*key);
  if (!s.ok() && s.code() != StatusCode::kNotFound) {
    log::Error("purge failed", {{"key", *key}, {"error", s.ToString()}});
    ReplyText(resp, 500, "admin: purge failed: " + s.ToString());
    return;
  }
  const bool removed = s.ok();
  log::Info("purged", {{"key", *key}, {"removed", removed}, {"client", req.client_ip()}});
  Reply(resp, 200, "application/json",
        "{\"key\":" + JsonString(*key) + ",\"removed\":" + (removed ? "true" : "false") + "}\n");
}

void AdminHandler::PurgePrefix(http::Request& req, http::Response& resp,
                               std::string_view raw_prefix) {
  Result<std::string> prefix = upstream::PercentDecode(raw_prefix);
  if (!prefix.ok()) {
    ReplyText(resp, 400, "admin: bad prefix: " + prefix.status().message());
    return;
  }
  if (prefix->empty()) {
    ReplyText(resp, 400,
              "admin: an empty prefix would purge every key and is refused; name a prefix "
              "(POST /admin/purge?prefix=PREFIX, percent-encoded)");
    return;
  }
  Result<std::string> after =
      upstream::PercentDecode(QueryValue(req.query(), "after").value_or(""));
  if (!after.ok()) {
    ReplyText(resp, 400, "admin: bad after: " + after.status().message());
    return;
  }
  Result<PrefixPurge> purge = RemovePrefix(*prefix, *after);
  if (!purge.ok()) {
    const Status& s = purge.status();
    const int code = s.code() == StatusCode::kInvalidArgument ? 400 : 500;
    if (code == 500) log::Error("purge failed", {{"prefix", *prefix}, {"error", s.ToString()}});
    ReplyText(resp, code, "admin: purge failed: " + s.ToString());
    return;
  }
  log::Info("purged prefix", {{"prefix", *prefix},
                              {"removed", purge->removed},
                              {"more", !purge->next.empty()},
                              {"unnamed", purge->unnamed},
                              {"client", req.client_ip()}});
  Reply(resp, 200, "application/json",
        "{\"prefix\":" + JsonString(*prefix) + ",\"removed\":" + std::to_string(purge->removed) +
            ",\"next\":" + JsonString(purge->next) +
            ",\"unnamed\":" + std::to_string(purge->unnamed) + "}\n");
}

Result<AdminHandler::PrefixPurge> AdminHandler::RemovePrefix(std::string_view prefix,
                                                             std::string after) {
  PrefixPurge out;
  for (int pages = 0; pages < kMaxPurgePagesPerCall; ++pages) {
    BC_ASSIGN_OR_RETURN(store::KeyListing page,
                        store_.ListKeys(prefix, after, kMaxPurgeKeysPerCall - out.removed));
    out.unnamed = page.unnamed;
    for (const std::string& key : page.keys) {
      Status s = store_.Delete(key);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
      if (s.ok()) ++out.removed;
    }
    after = std::move(page.next);
    if (after.empty() || out.removed >= kMaxPurgeKeysPerCall) break;
  }
  out.next = std::move(after);
  return out;
}

Result<std::string> ReadAdminToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return FailedPrecondition("admin.tokenFile: cannot read \"" + path +
                              "\": " + std::strerror(errno));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t begin = text.find_first_not_of(kWhitespace);
  if (begin == std::string::npos) {
    return FailedPrecondition("admin.tokenFile: \"" + path + "\" holds no token");
  }
  size_t end = text.find_last_not_of(kWhitespace);
  return text.substr(begin, end - begin + 1);
}

}  // namespace buildcache::agent
