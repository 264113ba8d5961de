// The HTTP/1.1 server: one blocking thread per connection (threads are pooled and reused), Beast's
// basic_parser for request heads and chunked bodies, and plain POSIX calls for everything that
// moves bytes (recv straight into the handler's buffer, writev for header+body, sendfile).
//
// This file holds the listener, the accept loop with its connection limits, the worker pool and
// Stop. A connection's keep-alive loop is in connection.cc, its reading half in request_reader.cc
// and its writing half in response_writer.cc.
#include "common/http/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/http/connection.h"
#include "common/net/host_port.h"

namespace buildcache::http {

std::string_view Request::path() const {
  std::string_view t = target();
  return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
  std::string_view t = target();
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

namespace {

using server_internal::Connection;
using server_internal::ConnState;

// Answers to a connection refused at accept: the server is full, or this client holds its share.
constexpr std::string_view kBusy =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 20\r\nConnection: close\r\n"
    "Retry-After: 1\r\n\r\ntoo many connections";
constexpr std::string_view kTooMany =
    "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 38\r\nConnection: close\r\n"
    "Retry-After: 1\r\n\r\ntoo many connections from this client\n";

// The address part of "ip:port" or "[v6]:port": the client a per-client limit counts.
std::string_view ClientIp(std::string_view remote) { return net::HostOf(remote); }

std::string PeerAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
    port = ntohs(sin->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
    port = ntohs(sin6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "unknown";
}

class ServerImpl final : public Server {
 public:
  ServerImpl(ServerOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {}
  ~ServerImpl() override { Stop(std::chrono::milliseconds(0)); }

  Status Listen();
  uint16_t port() const override { return port_; }
  void Stop(std::chrono::milliseconds grace) override;

 private:
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }

  void AcceptLoop();
  void Reject(int fd, std::string_view response);
  // Counts a connection from `remote` against max_connections_per_client; false (count
  // unchanged) when the client already holds its share.
  bool AdmitClient(std::string_view remote) EXCLUDES(clients_mu_);
  void ReleaseClient(std::string_view remote) EXCLUDES(clients_mu_);
  void Dispatch(int fd, std::string remote) EXCLUDES(pool_mu_);
  void WorkerLoop(std::list<std::thread>::iterator self, int fd, std::string remote)
      EXCLUDES(pool_mu_, conns_mu_, clients_mu_);
  // Serves one connection to its end; registered in conns_ meanwhile, so Stop can close it.
  void RunConnection(int fd, std::string remote) EXCLUDES(conns_mu_, clients_mu_);
  // Waits for a pending connection or the pool's stop. False when the worker should exit: the
  // pool stops, or it was idle for long while more than kKeepIdle workers were.
  bool NextConnection(int& fd, std::string& remote) REQUIRES(pool_mu_);
  bool PoolHasWork() const REQUIRES(pool_mu_) { return pool_stopping_ || !pending_.empty(); }
  // Closes the connections waiting for their next request; those mid-request go on.
  void CloseIdleConnections() REQUIRES(conns_mu_);
  void CloseConnections(std::chrono::milliseconds grace) EXCLUDES(conns_mu_);
  void StopPool() EXCLUDES(pool_mu_);

  const ServerOptions options_;
  const Handler handler_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;
  std::atomic<int> active_{0};

  // Connections per client address, for max_connections_per_client; no zero entries.
  Mutex clients_mu_;
  std::unordered_map<std::string, int> clients_ GUARDED_BY(clients_mu_);

  // Connections being served, so Stop can close them; conns_cv_ signals the set became empty.
  Mutex conns_mu_;
  CondVar conns_cv_;
  std::unordered_set<Connection*> conns_ GUARDED_BY(conns_mu_);

  // Worker pool: idle workers wait for a connection; a worker idle for long exits.
  Mutex pool_mu_;
  CondVar pool_cv_;
  struct Pending {
    int fd;
    std::string remote;
  };
  std::vector<Pending> pending_ GUARDED_BY(pool_mu_);
  int idle_workers_ GUARDED_BY(pool_mu_) = 0;
  bool pool_stopping_ GUARDED_BY(pool_mu_) = false;
  std::list<std::thread> workers_ GUARDED_BY(pool_mu_);
  std::vector<std::thread> finished_ GUARDED_BY(pool_mu_);
};

Status ServerImpl::Listen() {
  Result<net::HostPort> address = net::HostPort::ParseListen(options_.listen);
  if (!address.ok()) return address.status().WithContext("listen address");
  const std::string& host = address->host();
  const std::string port = std::to_string(address->port());
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return InvalidArgument("cannot resolve listen address " + options_.listen + ": " +
                           gai_strerror(rc));
  }
  Status last = Unavailable("no usable address for " + options_.listen);
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = ErrnoStatus(errno, "socket");
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last = ErrnoStatus(errno, "bind " + options_.listen);
      close(fd);
      continue;
    }
    if (::listen(fd, 1024) != 0) {
      last = ErrnoStatus(errno, "listen");
      close(fd);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    listen_fd_ = fd;
    break;
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) return last;
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return ErrnoStatus(errno, "eventfd");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

void ServerImpl::AcceptLoop() {
  pollfd pfds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    int rc = poll(pfds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfds[1].revents != 0 || stopping()) return;
    if ((pfds[0].revents & POLLIN) == 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: back off instead of spinning on a ready listener.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    if (active_.load() >= options_.max_connections) {
      Reject(fd, kBusy);
      continue;
    }
    std::string remote = PeerAddress(ss);
    if (!AdmitClient(remote)) {
      Reject(fd, kTooMany);
      continue;
    }
    active_.fetch_add(1);
    Dispatch(fd, std::move(remote));
  }
}

bool ServerImpl::AdmitClient(std::string_view remote) {
  if (options_.max_connections_per_client <= 0) return true;
  MutexLock lock(clients_mu_);
  int& held = clients_[std::string(ClientIp(remote))];
  if (held >= options_.max_connections_per_client) return false;
  ++held;
  return true;
}

void ServerImpl::ReleaseClient(std::string_view remote) {
  if (options_.max_connections_per_client <= 0) return;
  MutexLock lock(clients_mu_);
  auto it = clients_.find(std::string(ClientIp(remote)));
  if (it != clients_.end() && --it->second <= 0) clients_.erase(it);
}

void ServerImpl::Reject(int fd, std::string_view response) {
  // Read what already arrived so close() does not turn into a reset that could destroy the 503
  // before the client reads it.
  char scratch[4096];
  while (recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0) {
  }
  (void)send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  shutdown(fd, SHUT_WR);
  close(fd);
}

void ServerImpl::Dispatch(int fd, std::string remote) {
  MutexLock lock(pool_mu_);
  for (auto& t : finished_) t.join();
  finished_.clear();
  if (idle_workers_ > static_cast<int>(pending_.size())) {
    pending_.push_back({fd, std::move(remote)});
    pool_cv_.NotifyOne();
    return;
  }
  workers_.emplace_back();
  auto it = std::prev(workers_.end());
  *it = std::thread(
      [this, it, fd, r = std::move(remote)]() mutable { WorkerLoop(it, fd, std::move(r)); });
}

void ServerImpl::RunConnection(int fd, std::string remote) {
  {
    Connection conn(fd, std::move(remote), options_, handler_, stopping_);
    {
      MutexLock lock(conns_mu_);
      conns_.insert(&conn);
    }
    if (stopping()) {
      conn.state().store(ConnState::kClosing);
    } else {
      conn.Serve();
    }
    {
      MutexLock lock(conns_mu_);
      conns_.erase(&conn);
      if (conns_.empty()) conns_cv_.NotifyAll();
    }
    ReleaseClient(conn.remote_address());
  }
  active_.fetch_sub(1);
}

bool ServerImpl::NextConnection(int& fd, std::string& remote) {
  // Idle workers beyond this many exit after a while; the rest wait for the next connection.
  constexpr int kKeepIdle = 16;
  ++idle_workers_;
  const auto retire_at = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!PoolHasWork() && pool_cv_.WaitUntil(pool_mu_, retire_at)) {
  }
  if (!PoolHasWork() && idle_workers_ <= kKeepIdle) {
    while (!PoolHasWork()) pool_cv_.Wait(pool_mu_);
  }
  --idle_workers_;
  if (pending_.empty()) return false;
  fd = pending_.back().fd;
  remote = std::move(pending_.back().remote);
  pending_.pop_back();
  return true;
}

void ServerImpl::WorkerLoop(std::list<std::thread>::iterator self, int fd, std::string remote) {
  for (;;) {
    RunConnection(fd, std::move(remote));
    MutexLock lock(pool_mu_);
    if (NextConnection(fd, remote)) continue;
    if (!pool_stopping_) {
      // Retire: the next Dispatch (or Stop) joins this thread.
      finished_.push_back(std::move(*self));
      workers_.erase(self);
    }
    return;
  }
}

void ServerImpl::CloseIdleConnections() {
  for (Connection* c : conns_) {
    ConnState idle = ConnState::kIdle;
    if (c->state().compare_exchange_strong(idle, ConnState::kClosing)) {
      shutdown(c->fd(), SHUT_RDWR);
    }
  }
}

void ServerImpl::CloseConnections(std::chrono::milliseconds grace) {
  // Connections waiting for their next request are closed now; those mid-request get `grace`
  // to finish (they close after responding because stopping() is set).
  MutexLock lock(conns_mu_);
  auto deadline = std::chrono::steady_clock::now() + grace;
  CloseIdleConnections();
  while (!conns_.empty()) {
    auto wake =
        std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
    if (!conns_cv_.WaitUntil(conns_mu_, wake) && std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    CloseIdleConnections();  // connections that finished a request since
  }
  for (Connection* c : conns_) {
    c->state().store(ConnState::kClosing);
    shutdown(c->fd(), SHUT_RDWR);
  }
}

void ServerImpl::StopPool() {
  std::list<std::thread> workers;
  std::vector<std::thread> finished;
  {
    MutexLock lock(pool_mu_);
    pool_stopping_ = true;
    pool_cv_.NotifyAll();
    workers.swap(workers_);
    finished.swap(finished_);
    for (auto& p : pending_) close(p.fd);
    pending_.clear();
  }
  for (auto& t : finished) t.join();
  for (auto& t : workers) t.join();
}

void ServerImpl::Stop(std::chrono::milliseconds grace) {
  std::call_once(stop_once_, [&] {
    stopping_.store(true);
    if (accept_thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof(one));
      accept_thread_.join();
    }
    if (listen_fd_ >= 0) close(listen_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
    listen_fd_ = wake_fd_ = -1;
    CloseConnections(grace);
    StopPool();
  });
}

}  // namespace

std::string_view Request::client_ip() const { return ClientIp(remote_address()); }

Result<std::unique_ptr<Server>> Server::Start(ServerOptions options, Handler handler) {
  if (!handler) return InvalidArgument("server needs a handler");
  if (options.max_connections <= 0) return InvalidArgument("max_connections must be positive");
  if (options.max_connections_per_client < 0) {
    return InvalidArgument("max_connections_per_client must not be negative");
  }
  // sendfile(2) has no MSG_NOSIGNAL: a client that resets mid-body would kill the process with
  // SIGPIPE. Ignore it unless the program installed its own handler.
  struct sigaction old_action {};
  if (sigaction(SIGPIPE, nullptr, &old_action) == 0 && old_action.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  auto server = std::make_unique<ServerImpl>(std::move(options), std::move(handler));
  BC_RETURN_IF_ERROR(server->Listen());
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace buildcache::http
