#pragma once

#include <string_view>

#include "common/metrics/metrics.h"

namespace buildcache::agent {

// Every metric the agent exports, in one place. Label values come from small fixed sets:
//   frontend: httpcache, pypi, goproxy, npm, cargo, maven
//   result:   hit, miss, stored, deleted, meta, redirect, rejected, error
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
  // buildcache_artifact_stored_mismatch_total{frontend}: stored artifacts that did not match
  // their index digest when about to be served (not served; fetched again).
  metrics::Family<metrics::Counter>& stored_mismatch;

  // Peer replication (agent/replication). peer: the peer's host (address without the port).
  // buildcache_peer_requests_total{outcome}: asks to peers for a local miss: hit, miss, error.
  metrics::Family<metrics::Counter>& peer_requests;
  // buildcache_peer_bytes_total{direction,peer}: object bytes received (in) and sent (out).
  metrics::Family<metrics::Counter>& peer_bytes;
  // buildcache_peer_corrupt_total{peer}: peer streams rejected for not matching their digest.
  metrics::Family<metrics::Counter>& peer_corrupt;
  // buildcache_peer_pushes_total{outcome}: pushes of new objects to owners: stored, declined,
  // error (retried), dropped (queue full or retries exhausted).
  metrics::Family<metrics::Counter>& peer_pushes;
  // buildcache_peer_calls_refused_total{call,reason}: peer-port calls refused: call is the RPC,
  // reason not_member, bad_key, unverifiable or bad_request (replication/observer.h).
  metrics::Family<metrics::Counter>& peer_refused;
  // buildcache_peer_push_queue, buildcache_peer_members{,_live}: callback gauges (agent.cc).

  // buildcache_identity_refused_total{reason}: requests refused by caller identity
  // (agent/identity/identity_gate.h): bad_credentials, unverified, anonymous_read,
  // anonymous_write, untrusted_write.
  metrics::Family<metrics::Counter>& identity_refused;
  // Lookups attributed to the caller's scope (scope_attribution.h): scope is a namespace or
  // token scope (at most identity.attributionLimit of them per agent), (anonymous), (unscoped)
  // or (other); result hit or miss.
  // buildcache_scope_requests_total{scope,result}
  metrics::Family<metrics::Counter>& scope_requests;
  // buildcache_scope_bytes_total{scope,result}: body bytes served; hit = saved by the cache.
  metrics::Family<metrics::Counter>& scope_bytes;
  // buildcache_identity_token_reviews_total{result}: ServiceAccount tokens sent to the API
  // server's TokenReview (agent/identity/service_account_token.h): authenticated, refused, error.
  metrics::Family<metrics::Counter>& identity_token_reviews;

  // Directory caches (agent/dircache), labelled by directory = directories[].name.
  // buildcache_dircache_indexed_files_total{directory}: local files indexed (new or changed).
  metrics::Family<metrics::Counter>& dircache_indexed;
  // buildcache_dircache_pulled_files_total / _pulled_bytes_total{directory}: from peers.
  metrics::Family<metrics::Counter>& dircache_pulled;
  metrics::Family<metrics::Counter>& dircache_pulled_bytes;
  // buildcache_dircache_pull_failures_total{directory}: no peer could supply good bytes.
  metrics::Family<metrics::Counter>& dircache_pull_failures;
  // buildcache_dircache_conflicts_total{directory}: a peer's file differs from the local one.
  metrics::Family<metrics::Counter>& dircache_conflicts;
  // buildcache_dircache_evictions_total / _evicted_bytes_total{directory}: quota removals.
  metrics::Family<metrics::Counter>& dircache_evictions;
  metrics::Family<metrics::Counter>& dircache_evicted_bytes;
  // buildcache_dircache_files / _bytes{directory}: live indexed files.
  metrics::Family<metrics::Gauge>& dircache_files;
  metrics::Family<metrics::Gauge>& dircache_bytes;
  // buildcache_dircache_sync_lag_seconds{directory}: age of the oldest wanted peer entry.
  metrics::Family<metrics::Gauge>& dircache_sync_lag;
  // buildcache_dircache_hydration_{files,bytes,target_bytes}, _hydrating.
  metrics::Gauge& dircache_hydration_files;
  metrics::Gauge& dircache_hydration_bytes;
  metrics::Gauge& dircache_hydration_target;
  metrics::Gauge& dircache_hydrating;

  // Go's build cache through buildcache-gocacheprog (a slice of the httpcache front end's
  // requests, counted by Instrument): object "action" (/cache/gocache/..., action entries) or
  // "output" (/cas/... requested by gocacheprog, compiled outputs); result as in requests.
  // buildcache_gocache_requests_total{object,result}
  metrics::Family<metrics::Counter>& gocache_requests;
  // buildcache_gocache_bytes_total{object,direction}: direction served (to go commands) or
  // received (uploads stored).
  metrics::Family<metrics::Counter>& gocache_bytes;

  // Wheel building (agent/frontends/pypi/wheel_builder.h).
  // buildcache_pypi_builds_total{outcome}: started, succeeded, failed, deduplicated.
  metrics::Family<metrics::Counter>& pypi_builds;
  // buildcache_pypi_build_duration_seconds: from a build's start to its wheel stored or failure.
  metrics::Histogram& pypi_build_duration;
  // buildcache_pypi_built_wheels_served_total: downloads of wheels the agent built.
  metrics::Counter& pypi_built_wheels_served;
};

}  // namespace buildcache::agent
