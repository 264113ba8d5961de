#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"

namespace buildcache::upstream {
namespace {

using namespace std::chrono_literals;
using testing::FixtureUpstream;
using testing::Route;

struct Got {
  Status status;
  int http_status = 0;
  std::string body;
  std::string final_url;
  std::optional<uint64_t> content_length;
  int heads = 0;
};

Got Fetch(Fetcher& fetcher, const std::string& url, FetchOptions options = {}) {
  Got got;
  got.status = fetcher.Get(
      url, options,
      [&](const UpstreamResponse& r) {
        ++got.heads;
        got.http_status = r.status;
        got.final_url = r.final_url;
        got.content_length = r.content_length;
        return Status::Ok();
      },
      [&](std::string_view data) {
        got.body.append(data);
        return Status::Ok();
      });
  return got;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

FetcherOptions FastRetries(int attempts = 3) {
  FetcherOptions o;
  o.attempts = attempts;
  o.backoff = 20ms;
  return o;
}

// A port nothing listens on: bound, never listened, closed at the end of the test.
class DeadPort {
 public:
  DeadPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~DeadPort() { close(fd_); }
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_;
};

// Answers every connection with one scripted byte string, then closes (for responses our own
// server would never send).
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string reply) : reply_(std::move(reply)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 16);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) close(c);
          return;
        }
        std::string request;
        char buf[4096];
        while (request.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = recv(c, buf, sizeof(buf), 0);
          if (n <= 0) break;
          request.append(buf, static_cast<size_t>(n));
        }
        (void)!send(c, reply_.data(), reply_.size(), MSG_NOSIGNAL);
        close(c);
      }
    });
  }
  ~ScriptedServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  std::string Url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }

 private:
  std::string reply_;
  int fd_;
  uint16_t port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(UrlTest, ParsesAndValidates) {
  auto u = ParseUrl("HTTPS://User:pw@Example.Internal:8443/a/b?c=d#frag");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_TRUE(u->https);
  EXPECT_EQ(u->host, "example.internal");
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->target, "/a/b?c=d");
  EXPECT_EQ(u->userinfo, "User:pw");
  EXPECT_EQ(u->ToString(), "https://example.internal:8443/a/b?c=d");
  EXPECT_EQ(u->Redacted(), "https://example.internal:8443/a/b");

  auto v6 = ParseUrl("http://[::1]:81");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->target, "/");
  EXPECT_EQ(v6->authority(), "[::1]:81");
  EXPECT_TRUE(v6->ip_literal());

  for (const char* bad : {"ftp://host/x", "host/x", "http://", "http:///path", "http://ho st/",
                          "http://host:0/", "http://host:99999/", "http://host:80x/",
                          "http://host/a\r\nX-Injected: 1", "http://host/a\nb", "http://host/\x7f",
                          "http://[::1/", "http://ho%st/", "javascript:alert(1)"}) {
    auto r = ParseUrl(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(UrlTest, ResolvesRedirectReferences) {
  auto base = ParseUrl("https://up.internal/simple/pkg/index.html?x=1");
  ASSERT_TRUE(base.ok());
  auto resolve = [&](std::string_view ref) {
    auto r = ResolveReference(*base, ref);
    return r.ok() ? r->ToString() : "error: " + r.status().message();
  };
  EXPECT_EQ(resolve("/files/a.whl"), "https://up.internal/files/a.whl");
  EXPECT_EQ(resolve("a.whl"), "https://up.internal/simple/pkg/a.whl");
  EXPECT_EQ(resolve("../other/"), "https://up.internal/simple/other/");
  EXPECT_EQ(resolve("../../../x"), "https://up.internal/x");
  EXPECT_EQ(resolve("?y=2"), "https://up.internal/simple/pkg/index.html?y=2");
  EXPECT_EQ(resolve("//cdn.internal:444/f"), "https://cdn.internal:444/f");
  EXPECT_EQ(resolve("http://plain.internal/f"), "http://plain.internal/f");
  EXPECT_TRUE(resolve("ftp://x/").starts_with("error"));
  EXPECT_TRUE(resolve("/a\r\nb").starts_with("error"));
}

TEST(HttpFetcherTest, DeliversContentLengthAndChunkedBodies) {
  FixtureUpstream up;
  ASSERT_TRUE(up.ok());
  const std::string body = Pattern(300'000);
  up.Set("/cl", Route{.body = body});
  up.Set("/chunked", Route{.body = body, .chunked = true, .write_size = 7'000});
  up.Set("/empty", Route{.body = ""});
  auto fetcher = NewHttpFetcher();

  Got cl = Fetch(*fetcher, up.Url("/cl"));
  ASSERT_TRUE(cl.status.ok()) << cl.status.ToString();
  EXPECT_EQ(cl.http_status, 200);
  EXPECT_EQ(cl.content_length, body.size());
  EXPECT_EQ(cl.body, body);
  EXPECT_EQ(cl.heads, 1);

  Got chunked = Fetch(*fetcher, up.Url("/chunked"));
  ASSERT_TRUE(chunked.status.ok()) << chunked.status.ToString();
  EXPECT_FALSE(chunked.content_length.has_value());
  EXPECT_EQ(chunked.body, body);

  Got empty = Fetch(*fetcher, up.Url("/empty"));
  ASSERT_TRUE(empty.status.ok());
  EXPECT_EQ(empty.content_length, 0u);
  EXPECT_EQ(empty.body, "");
}

TEST(HttpFetcherTest, LargeBodiesArriveInLargeReads) {
  // Throughput without timing: a fetcher that reads a few hundred bytes per socket read is 5x
  // slower than a direct download, which a miss must never be.
  FixtureUpstream up;
  const std::string body = Pattern(8 << 20);
  up.Set("/big", Route{.body = body, .write_size = 256 << 10});
  auto fetcher = NewHttpFetcher();
  size_t calls = 0;
  size_t bytes = 0;
  Status s = fetcher->Get(
      up.Url("/big"), {}, [](const UpstreamResponse&) { return Status::Ok(); },
      [&](std::string_view data) {
        ++calls;
        bytes += data.size();
        return Status::Ok();
      });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(bytes, body.size());
  EXPECT_LE(calls, body.size() / (16 << 10)) << "average read " << bytes / calls << " bytes";
}

TEST(HttpFetcherTest, SendsHeadersAndIdentityEncoding) {
  FixtureUpstream up;
  up.Set("/h", Route{.body = "x"});
  FetcherOptions options;
  options.user_agent = "bc-test/1";
  auto fetcher = NewHttpFetcher(options);
  FetchOptions fetch;
  fetch.headers = {{"Accept", "application/vnd.pypi.simple.v1+json"},
                   {"X-Test", "yes"},
                   {"Host", "ignored.internal"}};
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/h"), fetch).status.ok());
  EXPECT_EQ(up.LastHeader("/h", "Accept"), "application/vnd.pypi.simple.v1+json");
  EXPECT_EQ(up.LastHeader("/h", "X-Test"), "yes");
  EXPECT_EQ(up.LastHeader("/h", "Accept-Encoding"), "identity");
  EXPECT_EQ(up.LastHeader("/h", "User-Agent"), "bc-test/1");
  EXPECT_EQ(up.LastHeader("/h", "Host"), "127.0.0.1:" + std::to_string(up.port()));
  EXPECT_EQ(up.LastHeader("/h", "Authorization"), "");

  // Credentials in the URL become Basic auth and never show up in final_url.
  Got got = Fetch(*fetcher, "http://us%40er:p%3Ass@127.0.0.1:" + std::to_string(up.port()) + "/h");
  ASSERT_TRUE(got.status.ok());
  EXPECT_EQ(up.LastHeader("/h", "Authorization"), "Basic dXNAZXI6cDpzcw==");  // us@er:p:ss
  EXPECT_EQ(got.final_url.find("us%40er"), std::string::npos);
}

TEST(HttpFetcherTest, RejectsBadUrlsAndHeadersBeforeSendingAnything) {
  FixtureUpstream up;
  up.Set("/x", Route{.body = "x"});
  auto fetcher = NewHttpFetcher();
  for (std::string bad : {std::string("ftp://127.0.0.1/x"), up.Url("/x\r\nX-Evil: 1"),
                          std::string("http:///x"), up.Url("/x y")}) {
    Got got = Fetch(*fetcher, bad);
    EXPECT_EQ(got.status.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(got.heads, 0);
  }
  FetchOptions evil;
  evil.headers = {{"X-Test", "a\r\nX-Evil: 1"}};
  EXPECT_EQ(Fetch(*fetcher, up.Url("/x"), evil).status.code(), StatusCode::kInvalidArgument);
  evil.headers = {{"Bad Name", "v"}};
  EXPECT_EQ(Fetch(*fetcher, up.Url("/x"), evil).status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(up.Requests("/x"), 0);
}

TEST(HttpFetcherTest, ReusesKeptAliveConnections) {
  FixtureUpstream up;
  up.Set("/a", Route{.body = "a"});
  up.Set("/b", Route{.body = "b"});
  auto fetcher = NewHttpFetcher();
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/a")).status.ok());
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/b")).status.ok());
  EXPECT_EQ(up.LastRemote("/a"), up.LastRemote("/b"));
}

// Declines non-2xx answers at the head, as the artifact cache does with a 404.
Status FetchDeclining(Fetcher& fetcher, const std::string& url) {
  return fetcher.Get(
      url, {},
      [](const UpstreamResponse& r) {
        if (r.status != 200) return NotFound("answered " + std::to_string(r.status));
        return Status::Ok();
      },
      [](std::string_view) { return Status::Ok(); });
}

// Not-found probes one after another (go mod tidy asks for path prefixes; a misspelt crate): N
// answers that the consumer declines cost one upstream connection, not N.
TEST(HttpFetcherTest, SequentialNotFoundProbesShareOneConnection) {
  FixtureUpstream up;
  constexpr int kFetches = 8;
  const int statuses[] = {404, 410, 403};
  for (int i = 0; i < kFetches; ++i) {
    up.Set("/p" + std::to_string(i), Route{.status = statuses[i % 3], .body = "not here\n"});
  }
  auto fetcher = NewHttpFetcher(FastRetries(1));
  for (int i = 0; i < kFetches; ++i) {
    EXPECT_EQ(FetchDeclining(*fetcher, up.Url("/p" + std::to_string(i))).code(),
              StatusCode::kNotFound);
  }
  EXPECT_LT(up.Connections(), static_cast<size_t>(kFetches));
  EXPECT_EQ(up.Connections(), 1u);
}

// Cold misses one after another (crates that exist and probes for ones that do not) share one
// upstream connection: a declined answer with a small body is read to its end and the connection
// parked, not closed (each close cost the next request a connect and a TLS handshake).
TEST(HttpFetcherTest, SequentialColdFetchesShareConnectionsAcrossDeclinedAnswers) {
  FixtureUpstream up;
  constexpr int kFetches = 10;
  for (int i = 0; i < kFetches; ++i) {
    if (i % 2 == 0) {
      up.Set("/f" + std::to_string(i), Route{.body = Pattern(3000 + i)});
    } else {
      up.Set("/f" + std::to_string(i), Route{.status = 404, .body = "no such crate\n"});
    }
  }
  auto fetcher = NewHttpFetcher(FastRetries(1));
  for (int i = 0; i < kFetches; ++i) {
    Status s = FetchDeclining(*fetcher, up.Url("/f" + std::to_string(i)));
    EXPECT_EQ(s.code(), i % 2 == 0 ? StatusCode::kOk : StatusCode::kNotFound) << i << s.ToString();
  }
  for (int i = 0; i < kFetches; ++i) EXPECT_EQ(up.Requests("/f" + std::to_string(i)), 1) << i;
  EXPECT_LT(up.Connections(), static_cast<size_t>(kFetches));
  EXPECT_EQ(up.Connections(), 1u);
}

// A declined answer with a large body is not read to keep the connection: the request ends at
// once and the next one gets a new connection.
TEST(HttpFetcherTest, DeclinedLargeBodyIsNotReadAndTheConnectionIsClosed) {
  FixtureUpstream up;
  up.Set("/big", Route{.status = 403, .body = Pattern(4 << 20), .stall_after = 1});
  up.Set("/ok", Route{.body = "ok"});
  auto fetcher = NewHttpFetcher(FastRetries(1));
  EXPECT_EQ(FetchDeclining(*fetcher, up.Url("/big")).code(), StatusCode::kNotFound);
  up.Release();
  EXPECT_TRUE(FetchDeclining(*fetcher, up.Url("/ok")).ok());
  EXPECT_EQ(up.Connections(), 2u);
}

TEST(HttpFetcherTest, ParkedConnectionClosedByServerIsReplacedTransparently) {
  http::ServerOptions server_options;
  server_options.idle_timeout = 100ms;
  FixtureUpstream up(server_options);
  up.Set("/a", Route{.body = "a"});
  auto fetcher = NewHttpFetcher(FastRetries(1));  // no retries: reuse must not cost an attempt
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/a")).status.ok());
  std::string first = up.LastRemote("/a");
  std::this_thread::sleep_for(400ms);
  Got again = Fetch(*fetcher, up.Url("/a"));
  ASSERT_TRUE(again.status.ok()) << again.status.ToString();
  EXPECT_NE(up.LastRemote("/a"), first);
  EXPECT_EQ(up.Requests("/a"), 2);
}

TEST(HttpFetcherTest, RetriesServerErrorsWithBackoff) {
  FixtureUpstream up;
  up.Set("/flaky", Route{.body = "finally", .fail_first = 2, .fail_status = 503});
  auto fetcher = NewHttpFetcher(FastRetries(3));
  auto start = std::chrono::steady_clock::now();
  Got got = Fetch(*fetcher, up.Url("/flaky"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(got.status.ok()) << got.status.ToString();
  EXPECT_EQ(got.body, "finally");
  EXPECT_EQ(got.heads, 1);  // the failed attempts never reached the consumer
  EXPECT_EQ(up.Requests("/flaky"), 3);
  // Backoff: [10, 20] ms after the first failure, [20, 40] ms after the second.
  EXPECT_GE(elapsed, 30ms);
}

TEST(HttpFetcherTest, LastAttemptHandsTheErrorToTheConsumer) {
  FixtureUpstream up;
  up.Set("/down", Route{.body = "", .fail_first = 100, .fail_status = 500});
  up.Set("/busy", Route{.body = "", .fail_first = 1, .fail_status = 429});
  auto fetcher = NewHttpFetcher(FastRetries(3));
  Got got = Fetch(*fetcher, up.Url("/down"));
  EXPECT_TRUE(got.status.ok());
  EXPECT_EQ(got.http_status, 500);
  EXPECT_EQ(got.heads, 1);
  EXPECT_EQ(up.Requests("/down"), 3);
  Got busy = Fetch(*fetcher, up.Url("/busy"));
  EXPECT_EQ(busy.http_status, 200);
  EXPECT_EQ(up.Requests("/busy"), 2);
}

TEST(HttpFetcherTest, DoesNotRetryClientErrors) {
  FixtureUpstream up;
  up.Set("/missing", Route{.status = 404, .body = "nope"});
  auto fetcher = NewHttpFetcher(FastRetries(3));
  Got got = Fetch(*fetcher, up.Url("/missing"));
  EXPECT_TRUE(got.status.ok());
  EXPECT_EQ(got.http_status, 404);
  EXPECT_EQ(up.Requests("/missing"), 1);
}

TEST(HttpFetcherTest, RetriesRefusedConnectionsThenFails) {
  DeadPort dead;
  auto fetcher = NewHttpFetcher(FastRetries(3));
  auto start = std::chrono::steady_clock::now();
  Got got = Fetch(*fetcher, "http://127.0.0.1:" + std::to_string(dead.port()) + "/x");
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("127.0.0.1:" + std::to_string(dead.port())),
            std::string::npos)
      << got.status.message();
  EXPECT_NE(got.status.message().find("refused"), std::string::npos) << got.status.message();
  EXPECT_EQ(got.heads, 0);
  EXPECT_GE(elapsed, 30ms);  // two backoffs happened
}

TEST(HttpFetcherTest, TimesOutWaitingForTheHead) {
  FixtureUpstream up;
  up.Set("/slow", Route{.body = "late", .hold = true});
  auto fetcher = NewHttpFetcher(FastRetries(2));
  FetchOptions fetch;
  fetch.read_timeout = 200ms;
  auto start = std::chrono::steady_clock::now();
  Got got = Fetch(*fetcher, up.Url("/slow"), fetch);
  auto elapsed = std::chrono::steady_clock::now() - start;
  up.Release();
  EXPECT_EQ(got.status.code(), StatusCode::kDeadlineExceeded) << got.status.ToString();
  EXPECT_EQ(got.heads, 0);
  EXPECT_GE(elapsed, 400ms);  // both attempts waited their read timeout
  EXPECT_LT(elapsed, 3s);
  EXPECT_EQ(up.Requests("/slow"), 2);
}

TEST(HttpFetcherTest, StallMidBodyTimesOutWithoutRetry) {
  FixtureUpstream up;
  up.Set("/stall", Route{.body = Pattern(10'000), .stall_after = 4'000});
  auto fetcher = NewHttpFetcher(FastRetries(3));
  FetchOptions fetch;
  fetch.read_timeout = 200ms;
  Got got = Fetch(*fetcher, up.Url("/stall"), fetch);
  up.Release();
  EXPECT_EQ(got.status.code(), StatusCode::kDeadlineExceeded) << got.status.ToString();
  EXPECT_EQ(got.body, Pattern(10'000).substr(0, 4'000));
  EXPECT_EQ(got.heads, 1);
  EXPECT_EQ(up.Requests("/stall"), 1);  // bytes went to the consumer: never retried
}

TEST(HttpFetcherTest, ConsumerCanAbandonTheTransfer) {
  FixtureUpstream up;
  up.Set("/big", Route{.body = Pattern(1'000'000)});
  auto fetcher = NewHttpFetcher();
  size_t seen = 0;
  Status s = fetcher->Get(
      up.Url("/big"), {}, [](const UpstreamResponse&) { return Status::Ok(); },
      [&](std::string_view data) {
        seen += data.size();
        return TooLarge("enough");
      });
  EXPECT_EQ(s.code(), StatusCode::kTooLarge);
  EXPECT_GT(seen, 0u);
  EXPECT_LT(seen, 1'000'000u);
  Status head = fetcher->Get(
      up.Url("/big"), {}, [](const UpstreamResponse&) { return NotFound("no thanks"); },
      [](std::string_view) { return Status::Ok(); });
  EXPECT_EQ(head.code(), StatusCode::kNotFound);
}

TEST(HttpFetcherTest, FollowsRelativeAndAbsoluteRedirects) {
  FixtureUpstream up;
  FixtureUpstream other;
  up.Set("/target", Route{.body = "here"});
  up.Set("/rel", Route{.status = 302, .location = "target"});
  up.Set("/abs", Route{.status = 301, .location = up.Url("/target")});
  up.Set("/cross", Route{.status = 307, .location = other.Url("/elsewhere")});
  other.Set("/elsewhere", Route{.body = "there"});
  auto fetcher = NewHttpFetcher();

  Got rel = Fetch(*fetcher, up.Url("/rel"));
  ASSERT_TRUE(rel.status.ok()) << rel.status.ToString();
  EXPECT_EQ(rel.body, "here");
  EXPECT_EQ(rel.final_url, up.Url("/target"));
  EXPECT_EQ(rel.heads, 1);

  Got abs = Fetch(*fetcher, up.Url("/abs"));
  ASSERT_TRUE(abs.status.ok());
  EXPECT_EQ(abs.body, "here");

  // Credentials stay with their origin.
  FetchOptions fetch;
  fetch.headers = {{"Authorization", "Bearer secret"}};
  Got cross = Fetch(*fetcher, up.Url("/cross"), fetch);
  ASSERT_TRUE(cross.status.ok());
  EXPECT_EQ(cross.body, "there");
  EXPECT_EQ(up.LastHeader("/cross", "Authorization"), "Bearer secret");
  EXPECT_EQ(other.LastHeader("/elsewhere", "Authorization"), "");
}

TEST(HttpFetcherTest, CheckTargetSeesTheUrlAndEveryRedirectBeforeItIsAsked) {
  FixtureUpstream up;
  FixtureUpstream other;
  up.Set("/start", Route{.status = 302, .location = other.Url("/inside")});
  other.Set("/inside", Route{.body = "secret"});
  auto fetcher = NewHttpFetcher();
  FetchOptions fetch;
  std::vector<std::string> checked;
  fetch.check_target = [&](const Url& url) -> Status {
    checked.push_back(url.ToString());
    if (url.origin() != ParseUrl(up.Url("/"))->origin()) {
      return PermissionDenied("not an upstream: " + url.Redacted());
    }
    return Status::Ok();
  };
  Got got = Fetch(*fetcher, up.Url("/start"), fetch);
  EXPECT_EQ(got.status.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(checked, (std::vector<std::string>{up.Url("/start"), other.Url("/inside")}));
  EXPECT_EQ(other.Requests("/inside"), 0);  // refused before anything was sent
  EXPECT_EQ(got.heads, 0);
}

TEST(HttpFetcherTest, RedirectsAreCapped) {
  FixtureUpstream up;
  up.Set("/loop", Route{.status = 302, .location = "/loop"});
  auto fetcher = NewHttpFetcher();
  FetchOptions fetch;
  fetch.max_redirects = 3;
  Got got = Fetch(*fetcher, up.Url("/loop"), fetch);
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("redirects"), std::string::npos);
  EXPECT_EQ(got.heads, 0);
  EXPECT_EQ(up.Requests("/loop"), 4);

  up.Set("/bad", Route{.status = 302, .location = "gopher://x/"});
  EXPECT_EQ(Fetch(*fetcher, up.Url("/bad")).status.code(), StatusCode::kUnavailable);
}

TEST(HttpFetcherTest, ReadsCloseDelimitedBodies) {
  ScriptedServer server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
  auto fetcher = NewHttpFetcher();
  Got got = Fetch(*fetcher, server.Url("/"));
  ASSERT_TRUE(got.status.ok()) << got.status.ToString();
  EXPECT_EQ(got.body, "until the end");
  EXPECT_FALSE(got.content_length.has_value());
}

TEST(HttpFetcherTest, TruncatedBodyIsAnError) {
  ScriptedServer server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
  auto fetcher = NewHttpFetcher(FastRetries(1));
  Got got = Fetch(*fetcher, server.Url("/"));
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable) << got.status.ToString();
  EXPECT_EQ(got.body, "only this");
}

TEST(HttpFetcherTest, GarbageResponseIsAnError) {
  ScriptedServer server("SSH-2.0-OpenSSH_9.0\r\n\r\n");
  auto fetcher = NewHttpFetcher(FastRetries(1));
  Got got = Fetch(*fetcher, server.Url("/"));
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(got.heads, 0);
}

}  // namespace
}  // namespace buildcache::upstream
