#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/kube/kube_client.h"
#include "common/status/status.h"
#include "operator/api/buildcache.h"

namespace buildcache::controllers {

using Json = api::Json;

// The hit ratio in BuildCache status, from the agents' own counters (docs/metrics.md):
//
//   lookups  = buildcache_requests_total{result="hit"|"miss"}   (GET/HEAD answered 2xx or 404)
//   fetched  = buildcache_upstream_requests_total{outcome="ok"} (misses answered from upstream)
//   ratio    = max(0, hits - fetched) / lookups
//
// per frontend (= ecosystem) and over all of them, summed over every agent. The counters run
// from each agent's start, so the ratio is over the agents' lifetimes, not a window: the operator
// keeps no history, and Prometheus (rate() over the same counters) gives windows.

// The counters of one front end, summed over the agents scraped.
struct FrontendCounts {
  double hits = 0;
  double misses = 0;
  double fetched = 0;  // upstream requests with outcome ok

  bool operator==(const FrontendCounts&) const = default;
};
using AgentCounts = std::map<std::string, FrontendCounts>;  // by frontend

// The per-namespace counters (buildcache_scope_requests_total, buildcache_scope_bytes_total) of
// one scope label value, summed over the agents scraped.
struct ScopeCounts {
  double hits = 0;
  double misses = 0;
  double saved_bytes = 0;  // bytes of hits

  bool operator==(const ScopeCounts&) const = default;
};
using ScopeTotals = std::map<std::string, ScopeCounts>;  // by scope label value

// Reads the families above from Prometheus text exposition (0.0.4); other families and comments
// are skipped. With `scopes`, the per-namespace families are read into it too. A malformed sample
// line of those families fails with kInvalidArgument naming the line, so one broken agent is not
// summed as zeros.
Result<AgentCounts> ParseAgentMetrics(std::string_view text, ScopeTotals* scopes = nullptr);

// Adds `from` into `into`.
void AddCounts(AgentCounts& into, const AgentCounts& from);
void AddCounts(ScopeTotals& into, const ScopeTotals& from);

// What status says: hitRatio, status.ecosystems and status.topNamespaces.
struct HitStats {
  std::string hit_ratio;                         // "" when no agent has served a lookup
  std::vector<api::EcosystemStatus> ecosystems;  // frontends with lookups, by name
  // The api::kMaxTopNamespaces scopes with the most bytes saved (ties: more lookups, then name),
  // most first; scopes that saved nothing are left out. Bounded, so status stays small however
  // many namespaces use the cache.
  std::vector<api::NamespaceStatus> top_namespaces;

  bool operator==(const HitStats&) const = default;
};

HitStats ComputeHitStats(const AgentCounts& counts, const ScopeTotals& scopes = {});

// "0.94": two decimals, rounded to nearest (the CRD allows up to four).
std::string FormatRatio(double ratio);

// "http://IP:PORT/metrics" for every endpoint address in the EndpointSlices of a peers Service
// (port named "http"), ready or not, without duplicates. IPv6 addresses are bracketed.
std::vector<std::string> MetricsUrls(const std::vector<Json>& endpoint_slices);

struct HitRatioScraperOptions {
  // Per agent: connecting and each read.
  std::chrono::milliseconds timeout{2000};
  // Agents of one BuildCache scraped at the same time, so a scrape of N agents with some of them
  // unreachable takes about timeout * N / parallel, not timeout * N.
  int parallel = 16;
};

// Scrapes the agents of each BuildCache and keeps the latest HitStats by key "namespace/name".
// The agents are found through the EndpointSlices of the headless peers Service
// (kubernetes.io/service-name=buildcache-NAME-peers), so the operator needs no pod watch.
// Thread-safe: one thread scrapes, reconcilers read.
class HitRatioScraper {
 public:
  using OnChange = std::function<void(const std::string& key)>;

  HitRatioScraper(kube::KubeClient* client, HitRatioScraperOptions options);

  // Scrapes the agents of every BuildCache in `buildcaches` (objects as the API returns them) and
  // calls on_change for each key whose stats changed. A BuildCache none of whose agents answered
  // keeps its last stats; ones not in the list are forgotten.
  void ScrapeAll(const std::vector<Json>& buildcaches, const OnChange& on_change);

  // The latest stats of a BuildCache, or nullopt when none of its agents has answered yet.
  std::optional<HitStats> Get(const std::string& key) const;

 private:
  // nullopt when no agent answered.
  std::optional<HitStats> ScrapeOne(const std::string& ns, const std::string& name);

  kube::KubeClient* client_;
  HitRatioScraperOptions options_;
  mutable Mutex mu_;
  std::map<std::string, HitStats> stats_ GUARDED_BY(mu_);
};

}  // namespace buildcache::controllers
