#include "agent/replication/membership.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "agent/replication/rendezvous.h"
#include "common/log/log.h"

namespace buildcache::replication {
namespace {

std::vector<std::string> SortedUnique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

std::vector<std::string> ParsePeerList(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) {
      line.remove_prefix(1);
    }
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) {
      line.remove_suffix(1);
    }
    if (!line.empty()) out.emplace_back(line);
    pos = end + 1;
  }
  return SortedUnique(std::move(out));
}

StaticMembership::StaticMembership(std::vector<std::string> peers)
    : peers_(SortedUnique(std::move(peers))) {}

std::vector<std::string> StaticMembership::Peers() { return peers_; }

FileMembership::FileMembership(std::string path, std::chrono::milliseconds poll)
    : path_(std::move(path)), poll_(poll) {}

std::vector<std::string> FileMembership::Peers() {
  MutexLock lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (mtime_ns_ >= 0 && now - checked_ < poll_) return peers_;
  checked_ = now;
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (!failing_) log::Warn("peers file unreadable; keeping the last list", {{"path", path_}});
    failing_ = true;
    return peers_;
  }
  int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == mtime_ns_ && st.st_size == size_) return peers_;
  std::ifstream in(path_);
  std::stringstream buf;
  buf << in.rdbuf();
  if (!in.good() && !in.eof()) {
    if (!failing_) log::Warn("peers file unreadable; keeping the last list", {{"path", path_}});
    failing_ = true;
    return peers_;
  }
  failing_ = false;
  mtime_ns_ = mtime;
  size_ = st.st_size;
  peers_ = ParsePeerList(buf.str());
  log::Info("peers file read", {{"path", path_}, {"peers", static_cast<int64_t>(peers_.size())}});
  return peers_;
}

namespace {

// getaddrinfo(name): every A/AAAA address with the port.
std::optional<std::vector<std::string>> GetAddrInfo(const std::string& name, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    log::Warn("peer name not resolved; keeping the last list",
              {{"name", name}, {"error", ::gai_strerror(rc)}});
    return std::nullopt;
  }
  std::vector<std::string> peers;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    char host[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, host, sizeof host);
      peers.push_back(std::string(host) + ":" + std::to_string(port));
    } else if (ai->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, host,
                sizeof host);
      peers.push_back("[" + std::string(host) + "]:" + std::to_string(port));
    }
  }
  ::freeaddrinfo(res);
  return peers;
}

}  // namespace

DnsMembership::DnsMembership(std::string name, int port, std::chrono::nanoseconds interval)
    : DnsMembership(name, interval, [name, port] { return GetAddrInfo(name, port); }) {}

DnsMembership::DnsMembership(std::string name, std::chrono::nanoseconds interval, Resolver resolve)
    : name_(std::move(name)), interval_(interval), resolve_(std::move(resolve)) {
  Resolve();
  thread_ = std::thread([this] { Loop(); });
}

DnsMembership::~DnsMembership() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  thread_.join();
}

std::vector<std::string> DnsMembership::Peers() {
  MutexLock lock(mu_);
  return peers_;
}

void DnsMembership::Resolve() {
  std::optional<std::vector<std::string>> resolved = resolve_();
  if (!resolved) return;
  std::vector<std::string> peers = SortedUnique(std::move(*resolved));
  MutexLock lock(mu_);
  if (peers != peers_) {
    log::Info("peer name resolved",
              {{"name", name_}, {"peers", static_cast<int64_t>(peers.size())}});
  }
  peers_ = std::move(peers);
}

void DnsMembership::Loop() {
  mu_.Lock();
  while (!stop_) {
    // Fewer than two addresses: look again soon (doubling); else every interval.
    std::chrono::nanoseconds delay = interval_;
    if (peers_.size() < 2) {
      delay = std::min(retry_, interval_);
      retry_ = std::min(retry_ * 2, interval_);
    } else {
      retry_ = kDnsRetryMin;
    }
    const auto deadline = std::chrono::steady_clock::now() + delay;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) cv_.WaitUntil(mu_, deadline);
    if (stop_) break;
    mu_.Unlock();
    Resolve();
    mu_.Lock();
  }
  mu_.Unlock();
}

UnionMembership::UnionMembership(std::vector<std::unique_ptr<Membership>> sources)
    : sources_(std::move(sources)) {}

std::vector<std::string> UnionMembership::Peers() {
  std::vector<std::string> all;
  for (auto& s : sources_) {
    auto peers = s->Peers();
    all.insert(all.end(), peers.begin(), peers.end());
  }
  return SortedUnique(std::move(all));
}

Cluster::Cluster(std::unique_ptr<Membership> membership, std::string self, ClusterOptions options)
    : membership_(std::move(membership)), self_(std::move(self)), options_(std::move(options)) {}

std::chrono::steady_clock::time_point Cluster::Now() const {
  return options_.clock ? options_.clock() : std::chrono::steady_clock::now();
}

std::vector<std::string> Cluster::Peers() {
  std::vector<std::string> peers = membership_->Peers();
  std::erase(peers, self_);
  return peers;
}

std::vector<std::string> Cluster::Owners(std::string_view key) {
  std::vector<std::string> members = Peers();
  members.push_back(self_);
  return RendezvousOwners(key, members, static_cast<size_t>(options_.copies));
}

bool Cluster::IsLive(const std::string& peer) {
  if (peer == self_) return true;
  MutexLock lock(mu_);
  auto it = health_.find(peer);
  return it == health_.end() || it->second.failures == 0 || Now() >= it->second.retry_at;
}

std::vector<std::string> Cluster::LivePeers() {
  std::vector<std::string> out;
  for (std::string& p : Peers()) {
    if (IsLive(p)) out.push_back(std::move(p));
  }
  return out;
}

void Cluster::ReportFailure(const std::string& peer) {
  MutexLock lock(mu_);
  Health& h = health_[peer];
  ++h.failures;
  auto backoff = options_.backoff_min;
  for (int i = 1; i < h.failures && backoff < options_.backoff_max; ++i) backoff *= 2;
  backoff = std::min(backoff, options_.backoff_max);
  h.retry_at = Now() + backoff;
  if (h.failures == 1) log::Warn("peer marked down", {{"peer", peer}});
}

void Cluster::ReportSuccess(const std::string& peer) {
  MutexLock lock(mu_);
  auto it = health_.find(peer);
  if (it == health_.end()) return;
  if (it->second.failures > 0) log::Info("peer up again", {{"peer", peer}});
  health_.erase(it);
}

size_t Cluster::LiveCount() { return LivePeers().size() + 1; }
size_t Cluster::TotalCount() { return Peers().size() + 1; }

}  // namespace buildcache::replication
