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
                                 {"frontend"})),
      stored_mismatch(r.AddCounter("buildcache_artifact_stored_mismatch_total",
                                   "Stored artifacts not matching their index digest when about "
                                   "to be served (fetched again).",
                                   {"frontend"})),
      peer_requests(r.AddCounter("buildcache_peer_requests_total",
                                 "Requests to peer agents for a local miss, by outcome.",
                                 {"outcome"})),
      peer_bytes(r.AddCounter("buildcache_peer_bytes_total",
                              "Object bytes moved to (out) and from (in) peer agents.",
                              {"direction", "peer"})),
      peer_corrupt(r.AddCounter("buildcache_peer_corrupt_total",
                                "Peer streams rejected for not matching their digest.", {"peer"})),
      peer_pushes(r.AddCounter("buildcache_peer_pushes_total",
                               "Pushes of new objects to their other owners, by outcome.",
                               {"outcome"})),
      peer_refused(r.AddCounter("buildcache_peer_calls_refused_total",
                                "Calls to the peer port refused, by call and reason.",
                                {"call", "reason"})),
      identity_refused(r.AddCounter("buildcache_identity_refused_total",
                                    "Requests refused for the caller's identity, by reason.",
                                    {"reason"})),
      scope_requests(r.AddCounter("buildcache_scope_requests_total",
                                  "Lookups (GET, HEAD) by the caller's scope (namespace) and "
                                  "result: hit (store or peer) or miss (404 or upstream).",
                                  {"scope", "result"})),
      scope_bytes(r.AddCounter("buildcache_scope_bytes_total",
                               "Response body bytes of lookups by the caller's scope and result: "
                               "hit bytes were saved by the cache, miss bytes came from upstream.",
                               {"scope", "result"})),
      identity_token_reviews(r.AddCounter(
          "buildcache_identity_token_reviews_total",
          "ServiceAccount tokens sent to the API server's TokenReview, by result.", {"result"})),
      dircache_indexed(r.AddCounter("buildcache_dircache_indexed_files_total",
                                    "Directory-cache files indexed (new or changed).",
                                    {"directory"})),
      dircache_pulled(r.AddCounter("buildcache_dircache_pulled_files_total",
                                   "Directory-cache files pulled from peers.", {"directory"})),
      dircache_pulled_bytes(r.AddCounter("buildcache_dircache_pulled_bytes_total",
                                         "Bytes of directory-cache files pulled from peers.",
                                         {"directory"})),
      dircache_pull_failures(r.AddCounter("buildcache_dircache_pull_failures_total",
                                          "Directory-cache files no peer could supply intact.",
                                          {"directory"})),
      dircache_conflicts(r.AddCounter("buildcache_dircache_conflicts_total",
                                      "Peer files left alone because a different local file "
                                      "exists at the path.",
                                      {"directory"})),
      dircache_evictions(r.AddCounter("buildcache_dircache_evictions_total",
                                      "Directory-cache files removed to stay within maxSize.",
                                      {"directory"})),
      dircache_evicted_bytes(r.AddCounter("buildcache_dircache_evicted_bytes_total",
                                          "Bytes of directory-cache files removed for maxSize.",
                                          {"directory"})),
      dircache_files(r.AddGauge("buildcache_dircache_files", "Live indexed directory-cache files.",
                                {"directory"})),
      dircache_bytes(r.AddGauge("buildcache_dircache_bytes",
                                "Bytes of live indexed directory-cache files.", {"directory"})),
      dircache_sync_lag(r.AddGauge("buildcache_dircache_sync_lag_seconds",
                                   "Age of the oldest peer entry this agent wants but has not "
                                   "pulled yet (0 when caught up).",
                                   {"directory"})),
      dircache_hydration_files(
          r.AddGauge("buildcache_dircache_hydration_files", "Files pulled by start-up hydration.")
              .With({})),
      dircache_hydration_bytes(
          r.AddGauge("buildcache_dircache_hydration_bytes", "Bytes pulled by start-up hydration.")
              .With({})),
      dircache_hydration_target(r.AddGauge("buildcache_dircache_hydration_target_bytes",
                                           "Bytes start-up hydration planned to pull.")
                                    .With({})),
      dircache_hydrating(r.AddGauge("buildcache_dircache_hydrating",
                                    "1 while start-up hydration holds /readyz, else 0.")
                             .With({})),
      gocache_requests(r.AddCounter("buildcache_gocache_requests_total",
                                    "Go build cache requests (buildcache-gocacheprog), by object "
                                    "(action, output) and result.",
                                    {"object", "result"})),
      gocache_bytes(r.AddCounter("buildcache_gocache_bytes_total",
                                 "Go build cache bytes, by object and direction (served, "
                                 "received).",
                                 {"object", "direction"})),
      pypi_builds(r.AddCounter("buildcache_pypi_builds_total",
                               "Wheel builds by outcome: started, succeeded, failed, deduplicated.",
                               {"outcome"})),
      pypi_build_duration(r.AddHistogram("buildcache_pypi_build_duration_seconds",
                                         "Duration of wheel builds.", {},
                                         metrics::ExponentialBuckets(1, 2, 12))
                              .With({})),
      pypi_built_wheels_served(r.AddCounter("buildcache_pypi_built_wheels_served_total",
                                            "Downloads of wheels the agent built.")
                                   .With({})) {}

}  // namespace buildcache::agent
