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
};

}  // namespace buildcache::agent
