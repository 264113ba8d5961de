#include "agent/app/frontend_options.h"

#include <chrono>

namespace buildcache::agent {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

// The keys of UpstreamMirrorConfig, which every registry front end's options have too.
template <class Options>
Options MirrorOptions(const UpstreamMirrorConfig& c, const upstream::FetchOptions& fetch) {
  Options o;
  o.upstream = c.upstream;
  o.metadata_ttl = duration_cast<seconds>(c.metadata_ttl);
  o.negative_ttl = duration_cast<seconds>(c.negative_ttl);
  o.fetch = fetch;
  return o;
}

}  // namespace

upstream::FetchOptions FromConfig(const UpstreamClientConfig& c) {
  upstream::FetchOptions fetch;
  fetch.connect_timeout = duration_cast<std::chrono::milliseconds>(c.connect_timeout);
  fetch.read_timeout = duration_cast<std::chrono::milliseconds>(c.read_timeout);
  return fetch;
}

npm::NpmOptions FromConfig(const NpmConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<npm::NpmOptions>(c, fetch);
  o.public_url = c.public_url;
  o.max_packument_size = c.max_packument_size;
  return o;
}

cargo::CargoOptions FromConfig(const CargoConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<cargo::CargoOptions>(c, fetch);
  o.public_url = c.public_url;
  return o;
}

maven::MavenOptions FromConfig(const MavenConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<maven::MavenOptions>(c, fetch);
  o.max_mutable_size = c.max_mutable_size;
  return o;
}

goproxy::GoproxyOptions FromConfig(const GoproxyConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<goproxy::GoproxyOptions>(c, fetch);
  o.sumdb.name = c.sumdb.name;
  o.sumdb.upstream = c.sumdb.upstream;
  o.sumdb.latest_ttl = duration_cast<seconds>(c.sumdb.latest_ttl);
  o.sumdb.verify = c.sumdb.verify;
  o.sumdb.no_verify = c.sumdb.no_verify;
  return o;
}

pypi::PypiOptions FromConfig(const PypiConfig& c, const upstream::FetchOptions& fetch) {
  auto o = MirrorOptions<pypi::PypiOptions>(c, fetch);
  o.max_upload_size = c.max_upload_size;
  o.wheel_house = c.wheel_house;
  o.wheel_list_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(c.wheel_list_ttl);
  return o;
}

}  // namespace buildcache::agent
