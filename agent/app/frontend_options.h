#pragma once

// Each package front end's options from its configuration section, so the composition root
// (agent.cc) does not copy fields by hand. The keys every registry mirror shares (upstream,
// metadataTtl, negativeTtl) are copied in one place. Defaults of keys the configuration does not
// have (prefixes, cache budgets) stay the options' own.

#include "agent/config/agent_config.h"
#include "agent/frontends/cargo/cargo_frontend.h"
#include "agent/frontends/goproxy/goproxy_frontend.h"
#include "agent/frontends/maven/maven_frontend.h"
#include "agent/frontends/npm/npm_frontend.h"
#include "agent/frontends/pypi/pypi_frontend.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"

namespace buildcache::agent {

// upstreamClient's timeouts, passed to every upstream fetch.
upstream::FetchOptions FromConfig(const UpstreamClientConfig& c);

// The FetchOptions::authorization of a mirror section (<section>.auth): the section's credential
// (agent/upstream/credential.h) for requests to its upstream's origin, nothing for other origins;
// an empty function when the section has no auth. Each FromConfig below sets it in its options'
// fetch; the peer server sets it for artifacts peers ask this agent to fetch.
std::function<Result<std::optional<std::string>>(const upstream::Url&)> UpstreamAuthorization(
    const UpstreamMirrorConfig& c, std::string section);

npm::NpmOptions FromConfig(const NpmConfig& c, const upstream::FetchOptions& fetch);
cargo::CargoOptions FromConfig(const CargoConfig& c, const upstream::FetchOptions& fetch);
maven::MavenOptions FromConfig(const MavenConfig& c, const upstream::FetchOptions& fetch);
goproxy::GoproxyOptions FromConfig(const GoproxyConfig& c, const upstream::FetchOptions& fetch);
// Without wheel building (options.builds): its builders are probed when the agent starts.
pypi::PypiOptions FromConfig(const PypiConfig& c, const upstream::FetchOptions& fetch);

}  // namespace buildcache::agent
