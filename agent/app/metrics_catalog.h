#pragma once

#include <string_view>

#include "common/metrics/metrics.h"

namespace buildcache::agent {

// Every metric the agent exports, in one place. Label values come from small fixed sets:
//   frontend: httpcache, pypi, goproxy, npm, cargo, maven, system
//   result:   hit, miss, stored, deleted, meta, rejected, error
//   source:   local, peer, upstream
struct AgentMetrics {
  explicit AgentMetrics(metrics::Registry& registry);

  // buildcache_requests_total{frontend,result}
  metrics::Family<metrics::Counter>& requests;
  // buildcache_served_bytes_total{frontend,source}: response body bytes sent to clients.
  metrics::Family<metrics::Counter>& served_bytes;
  // buildcache_received_bytes_total{frontend}: request body bytes stored from clients.
  metrics::Family<metrics::Counter>& received_bytes;
  // buildcache_request_duration_seconds{frontend}
  metrics::Family<metrics::Histogram>& request_duration;
  // buildcache_store_evictions_total / _evicted_bytes_total / _corrupt_blobs_total
  metrics::Counter& evictions;
  metrics::Counter& evicted_bytes;
  metrics::Counter& corrupt_blobs;

  // Upstream fetches by the package front ends.
  // buildcache_upstream_requests_total{frontend,outcome}: ok, not_found, not_modified, error.
  metrics::Family<metrics::Counter>& upstream_requests;
  // buildcache_upstream_bytes_total{frontend}: body bytes received from upstreams.
  metrics::Family<metrics::Counter>& upstream_bytes;
  // buildcache_upstream_request_duration_seconds{frontend}
  metrics::Family<metrics::Histogram>& upstream_duration;
  // buildcache_stale_served_total{frontend}: metadata served past its TTL, upstream failing.
  metrics::Family<metrics::Counter>& stale_served;
  // buildcache_coalesced_requests_total{frontend}: misses that waited on another's fetch.
  metrics::Family<metrics::Counter>& coalesced;
  // buildcache_upstream_verify_failures_total{frontend}: upstream bytes not matching the index.
  metrics::Family<metrics::Counter>& verify_failed;
};

}  // namespace buildcache::agent
