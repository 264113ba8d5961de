#include "agent/app/frontend_options.h"

#include <chrono>
#include <utility>

#include "agent/upstream/credential.h"

namespace buildcache::agent {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

// The keys of UpstreamMirrorConfig, which every registry front end's options have too.
template <class Options>
Options MirrorOptions(const UpstreamMirrorConfig& c, const upstream::FetchOptions& fetch,
                      std::string section) {
  Options o;
  o.upstream = c.upstream;
  o.metadata_ttl = duration_cast<seconds>(c.metadata_ttl);
  o.negative_ttl = duration_cast<seconds>(c.negative_ttl);
  o.fetch = fetch;
  o.fetch.authorization = UpstreamAuthorization(c, std::move(section));
  return o;
}

}  // namespace

std::function<Result<std::optional<std::string>>(const upstream::Url&)> UpstreamAuthorization(
    const UpstreamMirrorConfig& c, std::string section) {
  if (!c.auth.enabled()) return {};
  auto made = upstream::UpstreamCredential::Make(
      std::move(section), c.upstream,
      {c.auth.token_file, c.auth.username_file, c.auth.password_file});
  if (!made.ok()) {
    // ValidateAgentConfig refuses such a configuration; should one get here, nothing is sent.
    return [error = made.status()](const upstream::Url&) -> Result<std::optional<std::string>> {
      return Unavailable(error.message());
    };
  }
  return [credential = *std::move(made)](const upstream::Url& url) {
    return credential->AuthorizationFor(url);
  };
}

upstream::FetchOptions FromConfig(const UpstreamClientConfig& c) {
  upstream::FetchOptions fetch;
  fetch.connect_timeout = duration_cast<std::chrono::milliseconds>(c.connect_timeout);
  fetch.read_timeout = duration_cast<std::chrono::milliseconds>(c.read_timeout);
  return fetch;
}

npm::NpmOptions FromConfig(const NpmConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<npm::NpmOptions>(c, fetch, "npm");
  o.public_url = c.public_url;
  o.max_packument_size = c.max_packument_size;
  return o;
}

cargo::CargoOptions FromConfig(const CargoConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<cargo::CargoOptions>(c, fetch, "cargo");
  o.public_url = c.public_url;
  return o;
}

maven::MavenOptions FromConfig(const MavenConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<maven::MavenOptions>(c, fetch, "maven");
  o.max_mutable_size = c.max_mutable_size;
  return o;
}

goproxy::GoproxyOptions FromConfig(const GoproxyConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<goproxy::GoproxyOptions>(c, fetch, "goproxy");
  o.sumdb.name = c.sumdb.name;
  o.sumdb.upstream = c.sumdb.upstream;
  o.sumdb.latest_ttl = duration_cast<seconds>(c.sumdb.latest_ttl);
  o.sumdb.verify = c.sumdb.verify;
  o.sumdb.no_verify = c.sumdb.no_verify;
  return o;
}

pypi::PypiOptions FromConfig(const PypiConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<pypi::PypiOptions>(c, fetch, "pypi");
  o.max_upload_size = c.max_upload_size;
  o.wheel_house = c.wheel_house;
  o.wheel_list_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(c.wheel_list_ttl);
  return o;
}

}  // namespace buildcache::agent
