#pragma once

#include <string>

#include "agent/app/metrics_catalog.h"
#include "agent/app/scope_attribution.h"
#include "agent/identity/identity_gate.h"
#include "common/http/headers.h"
#include "common/http/server.h"

namespace buildcache::agent {

// Front ends may set this response header to say where the body came from ("local", "peer" or
// "upstream"); it is also useful to people debugging a client. A response without it is counted
// as "local".
using http::kSourceHeader;

// Wraps a front end's handler with request metrics, so front ends stay free of them (the
// decorator idea from bazel-remote): counts requests by result, body bytes by source, and
// request duration. The result is derived from the method and the status code:
//   GET/HEAD 2xx (206 ranges included) or 304 (a revalidation) -> hit, 404 -> miss;
//   PUT/POST 2xx -> stored; DELETE 2xx -> deleted;
//   other 2xx (WebDAV PROPFIND, MKCOL, OPTIONS) -> meta; other 3xx (301/308 name
//   normalisation) -> redirect; other 4xx -> rejected; 5xx or an aborted response -> error.
http::Handler Instrument(std::string frontend, AgentMetrics& metrics, http::Handler inner);

// Wraps a front end's caller-aware handler (inside the identity gate, which knows the caller)
// with the per-scope lookup metrics of `attribution`: a GET or HEAD answered 2xx or 304 from the
// store or a peer is a hit, one answered 404 or from the upstream (the X-Buildcache-Source
// header) a miss; other requests are not attributed. Requests the gate refuses never reach it.
identity::CallerHandler Attribute(ScopeAttribution attribution, identity::CallerHandler inner);

}  // namespace buildcache::agent
