#include "agent/app/metrics_catalog.h"

namespace buildcache::agent {

AgentMetrics::AgentMetrics(metrics::Registry& r)
    : requests(r.AddCounter("buildcache_requests_total",
                            "Requests handled by the agent, by front end and result.",
                            {"frontend", "result"})),
      served_bytes(r.AddCounter("buildcache_served_bytes_total",
                                "Response body bytes sent to clients, by where they came from.",
                                {"frontend", "source"})),
      received_bytes(r.AddCounter("buildcache_received_bytes_total",
                                  "Request body bytes received from clients and stored.",
                                  {"frontend"})),
      request_duration(r.AddHistogram("buildcache_request_duration_seconds",
                                      "Time from request headers to the end of the response.",
                                      {"frontend"}, metrics::DefaultLatencyBuckets())),
      evictions(r.AddCounter("buildcache_store_evictions_total",
                             "Blobs evicted to stay within the store quota.")
                    .With({})),
      evicted_bytes(r.AddCounter("buildcache_store_evicted_bytes_total",
                                 "Bytes of blobs evicted to stay within the store quota.")
                        .With({})),
      corrupt_blobs(r.AddCounter("buildcache_store_corrupt_blobs_total",
                                 "Blobs dropped because their content no longer matched their "
                                 "digest.")
                        .With({})),
      upstream_requests(r.AddCounter("buildcache_upstream_requests_total",
                                     "Requests to upstream registries, by outcome.",
                                     {"frontend", "outcome"})),
      upstream_bytes(r.AddCounter("buildcache_upstream_bytes_total",
                                  "Body bytes received from upstream registries.", {"frontend"})),
      upstream_duration(r.AddHistogram("buildcache_upstream_request_duration_seconds",
                                       "Duration of upstream requests.", {"frontend"},
                                       metrics::DefaultLatencyBuckets())),
      stale_served(r.AddCounter("buildcache_stale_served_total",
                                "Metadata served past its TTL because the upstream failed.",
                                {"frontend"})),
      coalesced(r.AddCounter("buildcache_coalesced_requests_total",
                             "Misses that waited on a fetch already in flight.", {"frontend"})),
      verify_failed(r.AddCounter("buildcache_upstream_verify_failures_total",
                                 "Upstream artifacts whose bytes did not match the index digest.",
                                 {"frontend"})) {}

}  // namespace buildcache::agent
