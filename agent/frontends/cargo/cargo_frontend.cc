#include "agent/frontends/cargo/cargo_frontend.h"

#include <algorithm>
#include <utility>

#include "agent/frontends/cargo/crate_names.h"
#include "agent/frontends/cargo/sparse_index.h"
#include "agent/upstream/serving.h"
#include "common/http/headers.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::cargo {
namespace {

constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kConfigPath = "/index/config.json";
constexpr std::string_view kIndexPrefix = "/index/";
constexpr std::string_view kCratesPrefix = "/api/v1/crates/";

void MethodNotAllowed(http::Response& response) {
  response.SetStatus(405);
  response.SetHeader("Allow", "GET, HEAD");
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send("method not allowed\n");
}

// A Host header value that can be written into a URL as is: a host name, IPv4 or bracketed IPv6
// literal, and an optional port.
bool IsValidHost(std::string_view host) {
  if (host.empty() || host.size() > 260) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == ':' || c == '[' || c == ']' || c == '_';
  });
}

// Sends a small document with a strong ETag of its content; If-None-Match gets 304.
void SendDocument(http::Request& request, http::Response& response, std::string_view body,
                  std::string_view content_type, std::string_view source) {
  upstream::SendRevalidatedDocument(request, response, body, upstream::StrongEtag(body),
                                    content_type, source);
}

}  // namespace

CargoFrontend::CargoFrontend(upstream::ArtifactCache& artifacts, upstream::MetadataCache& metadata,
                             CargoOptions options)
    : artifacts_(artifacts), metadata_(metadata), options_([&] {
        if (options.upstream.starts_with("sparse+")) options.upstream.erase(0, 7);
        if (!options.upstream.empty() && !options.upstream.ends_with('/')) {
          options.upstream += '/';
        }
        if (!options.public_url.empty() && !options.public_url.ends_with('/')) {
          options.public_url += '/';
        }
        while (options.prefix.ends_with('/')) options.prefix.pop_back();
        if (!options.clock) options.clock = [] { return std::chrono::system_clock::now(); };
        return std::move(options);
      }()) {}

void CargoFrontend::AddRoutes(http::Router& router) {
  router.Add("", options_.prefix,
             [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
}

void CargoFrontend::Handle(http::Request& request, http::Response& response) {
  std::optional<std::string_view> under = http::PathUnder(request.path(), options_.prefix);
  if (!under) {
    http::SendError(response, NotFound("no Cargo registry at this path"));
    return;
  }
  if (request.method() != "GET" && request.method() != "HEAD") {
    MethodNotAllowed(response);
    return;
  }
  std::string_view rest = *under;
  if (rest == kConfigPath) {
    ServeConfig(request, response);
  } else if (rest.starts_with(kIndexPrefix)) {
    ServeIndexFile(request, response, rest.substr(kIndexPrefix.size()));
  } else if (rest.starts_with(kCratesPrefix)) {
    ServeCrate(request, response, rest.substr(kCratesPrefix.size()));
  } else {
    http::SendError(response, NotFound("no Cargo registry API at this path"));
  }
}

void CargoFrontend::ServeConfig(http::Request& request, http::Response& response) {
  std::string dl;
  if (!options_.public_url.empty()) {
    dl = options_.public_url + "api/v1/crates";
  } else {
    std::string_view host = request.header("Host");
    if (!IsValidHost(host)) {
      http::SendError(response, InvalidArgument("a valid Host header is needed to name the "
                                                "download URL"));
      return;
    }
    dl = "http://" + std::string(host) + options_.prefix + "/api/v1/crates";
  }
  SendDocument(request, response, RenderRegistryConfig(dl), "application/json", "local");
}

Result<upstream::Document> CargoFrontend::UpstreamIndexFile(const std::string& name,
                                                            std::string_view* source) {
  *source = "local";
  if (options_.upstream.empty()) return NotFound("no upstream index is configured");
  upstream::MetadataRequest req;
  req.frontend = "cargo";
  req.key = options_.key_prefix + "index/" + name;
  req.url = options_.upstream + IndexPath(name);
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_index_file_size;
  req.fetch = options_.fetch;
  auto start = options_.clock();
  BC_ASSIGN_OR_RETURN(upstream::Document doc, metadata_.Get(req));
  *source = upstream::DocumentSource(doc, start);
  if (doc.status == 404 || doc.status == 410) {
    return NotFound("crate " + name + " not found upstream");
  }
  if (doc.status != 200) {
    return Unavailable("upstream answered " + std::to_string(doc.status) + " for " + req.url);
  }
  return doc;
}

Result<std::string> CargoFrontend::UpstreamDownloadTemplate() {
  if (options_.upstream.empty()) return NotFound("no upstream index is configured");
  upstream::MetadataRequest req;
  req.frontend = "cargo";
  req.key = options_.key_prefix + "upstream-config.json";
  req.url = options_.upstream + "config.json";
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = uint64_t{1} << 20;
  req.fetch = options_.fetch;
  BC_ASSIGN_OR_RETURN(upstream::Document doc, metadata_.Get(req));
  if (doc.status != 200) {
    return Unavailable("upstream answered " + std::to_string(doc.status) + " for " + req.url);
  }
  auto dl = ParseDownloadTemplate(doc.body);
  if (!dl.ok()) return dl.status().WithContext(req.url);
  return dl;
}

void CargoFrontend::ServeIndexFile(http::Request& request, http::Response& response,
                                   std::string_view path) {
  auto name = ParseIndexPath(path);
  if (!name.ok()) {
    http::SendError(response, name.status());
    return;
  }
  std::string_view source = "local";
  auto doc = UpstreamIndexFile(*name, &source);
  if (!doc.ok()) {
    if (doc.status().code() != StatusCode::kNotFound) {
      log::Warn("cargo index file failed", {{"crate", *name}, {"error", doc.status().ToString()}});
    }
    http::SendError(response, doc.status());
    return;
  }
  SendDocument(request, response, doc->body, kTextPlain, source);
}

void CargoFrontend::ServeCrate(http::Request& request, http::Response& response,
                               std::string_view rest) {
  size_t first = rest.find('/');
  size_t second = first == std::string_view::npos ? first : rest.find('/', first + 1);
  if (second == std::string_view::npos || rest.substr(second) != "/download") {
    http::SendError(response, NotFound("expected <crate>/<version>/download"));
    return;
  }
  auto name = PercentDecode(rest.substr(0, first));
  auto version = PercentDecode(rest.substr(first + 1, second - first - 1));
  if (!name.ok() || !IsValidCrateName(*name)) {
    http::SendError(response, InvalidArgument("invalid crate name"));
    return;
  }
  if (!version.ok() || !IsValidVersion(*version)) {
    http::SendError(response, InvalidArgument("invalid crate version"));
    return;
  }
  const std::string lower = Lower(*name);
  std::string_view source = "local";
  auto index = UpstreamIndexFile(lower, &source);
  if (!index.ok()) {
    http::SendError(response, index.status());
    return;
  }
  auto entry = FindVersion(index->body, lower, *version);
  if (entry.ok() && !IsValidCrateName(entry->name)) {
    entry = Unavailable("the index names the crate \"" + entry->name + "\", which is not valid");
  }
  if (!entry.ok()) {
    http::SendError(response, entry.status());
    return;
  }
  auto dl = UpstreamDownloadTemplate();
  if (!dl.ok()) {
    log::Warn("cargo registry config failed", {{"error", dl.status().ToString()}});
    http::SendError(response, dl.status());
    return;
  }
  auto digest =
      upstream::ParseHexDigest(upstream::ExpectedDigest::Algorithm::kSha256, entry->cksum);
  if (!digest.ok()) {
    http::SendError(response, Unavailable("unusable cksum for " + lower + " " + *version));
    return;
  }
  upstream::Artifact artifact;
  artifact.frontend = "cargo";
  artifact.key = options_.key_prefix + "crates/" + lower + "/" + *version;
  artifact.url = ExpandDownloadUrl(*dl, entry->name, entry->vers, entry->cksum);
  artifact.expected.push_back(std::move(digest).value());
  artifact.content_type = "application/gzip";
  artifact.fetch = options_.fetch;
  artifacts_.Serve(request, response, artifact);
}

}  // namespace buildcache::cargo
