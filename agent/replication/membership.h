#pragma once

// Who the peers are (Membership: static list, file, DNS) and which of them are believed up
// (Cluster: failures mark a peer down with exponential backoff; it is tried again when the backoff
// ends). Addresses are "HOST:PORT" strings compared as written; this agent's own advertise
// address is excluded everywhere.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/base/thread_annotations.h"

namespace buildcache::replication {

// A source of peer addresses. Thread-safe.
class Membership {
 public:
  virtual ~Membership() = default;
  // The current peers, sorted, without duplicates (may include this agent; Cluster removes it).
  virtual std::vector<std::string> Peers() = 0;
};

// A fixed list.
class StaticMembership : public Membership {
 public:
  explicit StaticMembership(std::vector<std::string> peers);
  std::vector<std::string> Peers() override;

 private:
  std::vector<std::string> peers_;
};

// One HOST:PORT per line ('#' comments and blank lines ignored), re-read when the file's size or
// modification time changes (checked at most once per poll interval). A missing or unreadable
// file keeps the last list read (logged once per change of state).
class FileMembership : public Membership {
 public:
  explicit FileMembership(std::string path,
                          std::chrono::milliseconds poll = std::chrono::milliseconds(500));
  std::vector<std::string> Peers() override;

 private:
  std::string path_;
  std::chrono::milliseconds poll_;
  Mutex mu_;
  std::chrono::steady_clock::time_point checked_ GUARDED_BY(mu_);
  int64_t mtime_ns_ GUARDED_BY(mu_) = -1;
  int64_t size_ GUARDED_BY(mu_) = -1;
  bool failing_ GUARDED_BY(mu_) = false;
  std::vector<std::string> peers_ GUARDED_BY(mu_);
};

// The A/AAAA records of a name (a headless Service), resolved with getaddrinfo now and then every
// interval on a background thread, each with the given port. A failed resolution keeps the last
// list. While the name yields fewer than two addresses (this agent alone, or none yet: the pods of
// a DaemonSet start together, and each resolves before the others are listed), the next look-up
// comes after kDnsRetryMin, doubling up to interval, so peers find each other within seconds.
class DnsMembership : public Membership {
 public:
  // HOST:PORT strings of the name's addresses now, or nullopt when it does not resolve.
  using Resolver = std::function<std::optional<std::vector<std::string>>()>;
  static constexpr std::chrono::nanoseconds kDnsRetryMin = std::chrono::seconds(1);

  DnsMembership(std::string name, int port, std::chrono::nanoseconds interval);
  // For tests: `resolve` instead of getaddrinfo.
  DnsMembership(std::string name, std::chrono::nanoseconds interval, Resolver resolve);
  ~DnsMembership() override;
  std::vector<std::string> Peers() override;

 private:
  void Resolve();
  void Loop();

  std::string name_;
  std::chrono::nanoseconds interval_;
  Resolver resolve_;
  Mutex mu_;
  CondVar cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::vector<std::string> peers_ GUARDED_BY(mu_);
  std::chrono::nanoseconds retry_ GUARDED_BY(mu_) = kDnsRetryMin;
  std::thread thread_;
};

// The union of several sources.
class UnionMembership : public Membership {
 public:
  explicit UnionMembership(std::vector<std::unique_ptr<Membership>> sources);
  std::vector<std::string> Peers() override;

 private:
  std::vector<std::unique_ptr<Membership>> sources_;
};

struct ClusterOptions {
  int copies = 2;
  // A failed peer is skipped for backoff_min, doubling per consecutive failure up to backoff_max.
  std::chrono::milliseconds backoff_min{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::function<std::chrono::steady_clock::time_point()> clock;  // default: steady_clock::now
};

// Membership plus liveness plus ownership. Thread-safe.
class Cluster {
 public:
  Cluster(std::unique_ptr<Membership> membership, std::string self, ClusterOptions options);

  const std::string& self() const { return self_; }
  int copies() const { return options_.copies; }

  // Owners of key among this agent and every known peer (live or not, so ownership does not
  // flap with transient failures), highest rendezvous weight first.
  std::vector<std::string> Owners(std::string_view key);
  // Peers other than this agent.
  std::vector<std::string> Peers();
  std::vector<std::string> LivePeers();
  bool IsLive(const std::string& peer);
  void ReportFailure(const std::string& peer);
  void ReportSuccess(const std::string& peer);
  size_t LiveCount();   // live peers + this agent
  size_t TotalCount();  // peers + this agent

 private:
  struct Health {
    int failures = 0;
    std::chrono::steady_clock::time_point retry_at{};
  };
  std::chrono::steady_clock::time_point Now() const;

  std::unique_ptr<Membership> membership_;
  std::string self_;
  ClusterOptions options_;
  Mutex mu_;
  std::map<std::string, Health> health_ GUARDED_BY(mu_);
};

// Parses the peers-file format (exposed for tests).
std::vector<std::string> ParsePeerList(std::string_view text);

}  // namespace buildcache::replication
