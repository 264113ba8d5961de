#include "operator/controllers/hit_ratio.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>
#include <vector>

#include "common/http/client.h"
#include "common/log/log.h"
#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {
namespace {

constexpr std::string_view kRequests = "buildcache_requests_total";
constexpr std::string_view kUpstream = "buildcache_upstream_requests_total";
constexpr std::string_view kScopeRequests = "buildcache_scope_requests_total";
constexpr std::string_view kScopeBytes = "buildcache_scope_bytes_total";

// Parses `{a="x",b="y"}` at the start of `s` (after the metric name); advances `s` past it.
bool ParseLabels(std::string_view& s, std::map<std::string, std::string>* labels) {
  if (s.empty() || s.front() != '{') return true;  // no labels
  s.remove_prefix(1);
  while (true) {
    while (!s.empty() && (s.front() == ' ' || s.front() == ',')) s.remove_prefix(1);
    if (s.empty()) return false;
    if (s.front() == '}') {
      s.remove_prefix(1);
      return true;
    }
    const size_t eq = s.find('=');
    if (eq == std::string_view::npos || eq + 1 >= s.size() || s[eq + 1] != '"') return false;
    std::string key(s.substr(0, eq));
    while (!key.empty() && key.back() == ' ') key.pop_back();
    s.remove_prefix(eq + 2);
    std::string value;
    bool closed = false;
    while (!s.empty()) {
      const char c = s.front();
      s.remove_prefix(1);
      if (c == '"') {
        closed = true;
        break;
      }
      if (c == '\\') {
        if (s.empty()) return false;
        const char e = s.front();
        s.remove_prefix(1);
        value += e == 'n' ? '\n' : e;
      } else {
        value += c;
      }
    }
    if (!closed) return false;
    (*labels)[key] = std::move(value);
  }
}

}  // namespace

Result<AgentCounts> ParseAgentMetrics(std::string_view text, ScopeTotals* scopes) {
  AgentCounts counts;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const bool requests = line.starts_with(kRequests);
    const bool upstream = line.starts_with(kUpstream);
    const bool scope_requests = scopes != nullptr && line.starts_with(kScopeRequests);
    const bool scope_bytes = scopes != nullptr && line.starts_with(kScopeBytes);
    if (!requests && !upstream && !scope_requests && !scope_bytes) continue;
    std::string_view rest = line.substr(requests         ? kRequests.size()
                                        : upstream       ? kUpstream.size()
                                        : scope_requests ? kScopeRequests.size()
                                                         : kScopeBytes.size());
    if (!rest.empty() && rest.front() != '{' && rest.front() != ' ') continue;  // longer name
    std::map<std::string, std::string> labels;
    auto bad = [&] {
      return InvalidArgument("metrics line " + std::to_string(line_no) + ": cannot parse \"" +
                             std::string(line.substr(0, 200)) + "\"");
    };
    if (!ParseLabels(rest, &labels)) return bad();
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    const std::string number(rest.substr(0, rest.find(' ')));
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size() || !std::isfinite(value) ||
        value < 0) {
      return bad();
    }
    if (scope_requests || scope_bytes) {
      ScopeCounts& sc = (*scopes)[labels["scope"]];
      const std::string& result = labels["result"];
      if (scope_bytes) {
        if (result == "hit") sc.saved_bytes += value;
      } else if (result == "hit") {
        sc.hits += value;
      } else if (result == "miss") {
        sc.misses += value;
      }
      continue;
    }
    FrontendCounts& f = counts[labels["frontend"]];
    if (requests) {
      const std::string& result = labels["result"];
      if (result == "hit") f.hits += value;
      if (result == "miss") f.misses += value;
    } else if (labels["outcome"] == "ok") {
      f.fetched += value;
    }
  }
  // Families present with no lookups (say only stored PUTs) are noise in status.
  for (auto it = counts.begin(); it != counts.end();) {
    if (it->second.hits + it->second.misses == 0) {
      it = counts.erase(it);
    } else {
      ++it;
    }
  }
  return counts;
}

void AddCounts(AgentCounts& into, const AgentCounts& from) {
  for (const auto& [frontend, c] : from) {
    FrontendCounts& f = into[frontend];
    f.hits += c.hits;
    f.misses += c.misses;
    f.fetched += c.fetched;
  }
}

void AddCounts(ScopeTotals& into, const ScopeTotals& from) {
  for (const auto& [scope, c] : from) {
    ScopeCounts& s = into[scope];
    s.hits += c.hits;
    s.misses += c.misses;
    s.saved_bytes += c.saved_bytes;
  }
}

std::string FormatRatio(double ratio) {
  ratio = std::clamp(ratio, 0.0, 1.0);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.2f", ratio);
  return buf;
}

HitStats ComputeHitStats(const AgentCounts& counts, const ScopeTotals& scopes) {
  HitStats stats;
  for (const auto& [scope, c] : scopes) {
    const double lookups = c.hits + c.misses;
    if (scope.empty() || c.saved_bytes <= 0 || lookups <= 0) continue;
    stats.top_namespaces.push_back({scope, static_cast<int64_t>(std::llround(c.saved_bytes)),
                                    FormatRatio(c.hits / lookups),
                                    static_cast<int64_t>(std::llround(lookups))});
  }
  std::sort(stats.top_namespaces.begin(), stats.top_namespaces.end(),
            [](const api::NamespaceStatus& a, const api::NamespaceStatus& b) {
              if (a.saved_bytes != b.saved_bytes) return a.saved_bytes > b.saved_bytes;
              if (a.lookups != b.lookups) return a.lookups > b.lookups;
              return a.name < b.name;
            });
  if (stats.top_namespaces.size() > api::kMaxTopNamespaces) {
    stats.top_namespaces.resize(api::kMaxTopNamespaces);
  }
  double local_total = 0;
  double lookups_total = 0;
  for (const auto& [frontend, c] : counts) {
    const double lookups = c.hits + c.misses;
    if (lookups <= 0 || frontend.empty()) continue;
    // Upstream retries can count more fetches than hits; the ratio never goes below zero.
    const double local = std::max(0.0, c.hits - c.fetched);
    local_total += local;
    lookups_total += lookups;
    stats.ecosystems.push_back(
        {frontend, FormatRatio(local / lookups), static_cast<int64_t>(std::llround(lookups))});
  }
  if (lookups_total > 0) stats.hit_ratio = FormatRatio(local_total / lookups_total);
  return stats;
}

std::vector<std::string> MetricsUrls(const std::vector<Json>& endpoint_slices) {
  std::set<std::string> seen;
  std::vector<std::string> urls;
  for (const Json& slice : endpoint_slices) {
    if (!slice.is_object()) continue;
    int64_t port = 0;
    for (const Json& p : slice.value("ports", Json::array())) {
      if (p.is_object() && p.value("name", "") == "http" && p.value("port", Json()).is_number()) {
        port = p["port"].get<int64_t>();
      }
    }
    if (port <= 0 || port > 65535) continue;
    const bool v6 = slice.value("addressType", "") == "IPv6";
    for (const Json& endpoint : slice.value("endpoints", Json::array())) {
      if (!endpoint.is_object()) continue;
      for (const Json& address : endpoint.value("addresses", Json::array())) {
        if (!address.is_string()) continue;
        const std::string host =
            v6 ? "[" + address.get<std::string>() + "]" : address.get<std::string>();
        std::string url = "http://" + host + ":" + std::to_string(port) + "/metrics";
        if (seen.insert(url).second) urls.push_back(std::move(url));
      }
    }
  }
  return urls;
}

HitRatioScraper::HitRatioScraper(kube::KubeClient* client, HitRatioScraperOptions options)
    : client_(client), options_(options) {}

std::optional<HitStats> HitRatioScraper::ScrapeOne(const std::string& ns, const std::string& name) {
  api::BuildCache cache;
  cache.ns = ns;
  cache.name = name;
  // resourceVersion "0": the API server answers from its watch cache, not etcd.
  Result<Json> slices =
      client_->List(kube::resources::kEndpointSlices, ns,
                    {.label_selector = "kubernetes.io/service-name=" + PeerServiceName(cache),
                     .resource_version = "0"});
  if (!slices.ok()) {
    log::Warn("endpointslices list failed",
              {{"key", ns + "/" + name}, {"error", slices.status().ToString()}});
    return std::nullopt;
  }
  std::vector<Json> items;
  if (slices->contains("items") && (*slices)["items"].is_array()) {
    items = (*slices)["items"].get<std::vector<Json>>();
  }
  http::ClientOptions client_options;
  client_options.timeout = options_.timeout;
  client_options.max_body_bytes = uint64_t{16} << 20;
  const std::vector<std::string> urls = MetricsUrls(items);
  std::vector<std::optional<AgentCounts>> scraped(urls.size());
  std::vector<ScopeTotals> scraped_scopes(urls.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < urls.size(); i = next++) {
      const std::string& url = urls[i];
      Result<http::ClientResponse> response = http::Fetch("GET", url, {}, {}, client_options);
      if (!response.ok() || response->status != 200) {
        log::Debug("agent scrape failed",
                   {{"url", url},
                    {"error", response.ok() ? "HTTP " + std::to_string(response->status)
                                            : response.status().ToString()}});
        continue;
      }
      Result<AgentCounts> counts = ParseAgentMetrics(response->body, &scraped_scopes[i]);
      if (!counts.ok()) {
        log::Warn("agent metrics unreadable",
                  {{"url", url}, {"error", counts.status().ToString()}});
        continue;
      }
      scraped[i] = *std::move(counts);
    }
  };
  std::vector<std::thread> workers;
  const size_t threads = std::min<size_t>(std::max(options_.parallel, 1), urls.size());
  for (size_t i = 1; i < threads; ++i) workers.emplace_back(work);
  work();
  for (std::thread& t : workers) t.join();
  AgentCounts total;
  ScopeTotals scopes;
  int answered = 0;
  for (size_t i = 0; i < scraped.size(); ++i) {
    if (!scraped[i]) continue;
    AddCounts(total, *scraped[i]);
    AddCounts(scopes, scraped_scopes[i]);
    ++answered;
  }
  if (answered == 0) return std::nullopt;
  return ComputeHitStats(total, scopes);
}

void HitRatioScraper::ScrapeAll(const std::vector<Json>& buildcaches, const OnChange& on_change) {
  std::set<std::string> keys;
  for (const Json& object : buildcaches) {
    const std::string ns = kube::NamespaceOf(object);
    const std::string name = kube::NameOf(object);
    const std::string key = ns + "/" + name;
    keys.insert(key);
    std::optional<HitStats> stats = ScrapeOne(ns, name);
    if (!stats) continue;
    bool changed = false;
    {
      MutexLock lock(mu_);
      auto [it, inserted] = stats_.try_emplace(key, *stats);
      if (inserted || !(it->second == *stats)) {
        it->second = std::move(*stats);
        changed = true;
      }
    }
    if (changed && on_change) on_change(key);
  }
  MutexLock lock(mu_);
  std::erase_if(stats_, [&](const auto& entry) { return !keys.contains(entry.first); });
}

std::optional<HitStats> HitRatioScraper::Get(const std::string& key) const {
  MutexLock lock(mu_);
  auto it = stats_.find(key);
  if (it == stats_.end()) return std::nullopt;
  return it->second;
}

}  // namespace buildcache::controllers
