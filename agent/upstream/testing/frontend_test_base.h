#pragma once

// The wiring every front-end unit test needs, written once: a fixture upstream (up_), a memory
// store, a real fetcher, the artifact and metadata caches over them, a router with the front
// end's routes, a server on port 0 and a client for it, and a wall clock that moves only when the
// test says so. A test derives from FrontendTestBase, builds its front end over artifacts_,
// metadata_ and store_ after NewCaches, and hands it to Serve. Header-only; for tests only.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string_view>
#include <utility>

#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/upstream.h"
#include "common/base/thread_annotations.h"
#include "common/http/client.h"
#include "common/http/router.h"
#include "common/http/server.h"

namespace buildcache::upstream::testing {

class FrontendTestBase : public ::testing::Test {
 protected:
  using WallClock = std::chrono::system_clock;

  void TearDown() override { StopServing(); }

  // The test's wall clock: the metadata cache reads it (unless NewCaches is given another), and
  // so does a front end given Clock(). It starts at the real time and moves only with Advance or
  // SetNow. Thread-safe (the server's threads read it).
  WallClock::time_point Now() {
    MutexLock lock(clock_mu_);
    return now_;
  }
  void Advance(std::chrono::seconds d) {
    MutexLock lock(clock_mu_);
    now_ += d;
  }
  void SetNow(WallClock::time_point t) {
    MutexLock lock(clock_mu_);
    now_ = t;
  }
  std::function<WallClock::time_point()> Clock() {
    return [this] { return Now(); };
  }

  // Replaces the fetcher and both caches, over store_: a real fetcher that makes one attempt
  // (handed to `wrap` first when given, which returns the fetcher to use), and a metadata cache on
  // Clock() unless `metadata` has a clock of its own. Call StopServing first when a front end is
  // being served over the old ones.
  void NewCaches(
      ArtifactCacheOptions artifact = {}, MetadataCacheOptions metadata = {},
      const std::function<std::unique_ptr<Fetcher>(std::unique_ptr<Fetcher>)>& wrap = nullptr) {
    metadata_.reset();
    artifacts_.reset();
    FetcherOptions fetcher_options;
    fetcher_options.attempts = 1;
    fetcher_ = NewHttpFetcher(fetcher_options);
    if (wrap) fetcher_ = wrap(std::move(fetcher_));
    artifacts_ = std::make_unique<ArtifactCache>(*store_, *fetcher_, UpstreamObserver{},
                                                 std::move(artifact));
    if (!metadata.clock) metadata.clock = Clock();
    metadata_ = std::make_unique<MetadataCache>(*store_, *fetcher_, UpstreamObserver{},
                                                std::move(metadata));
  }

  // Serves the routes `frontend` adds (its AddRoutes(http::Router&)) on 127.0.0.1:0; client_
  // talks to it.
  template <class Frontend>
  void Serve(Frontend& frontend) {
    StopServing();
    router_ = std::make_unique<http::Router>();
    frontend.AddRoutes(*router_);
    auto server = http::Server::Start({}, router_->AsHandler());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    client_ = std::make_unique<http::Client>("127.0.0.1", server_->port());
  }
  // Stops the server, so the front end it serves can be replaced or destroyed.
  void StopServing() {
    client_.reset();
    server_.reset();
  }

  // A GET through client_; a failed transfer fails the test and gives an empty response.
  http::ClientResponse Get(std::string_view target, const http::HeaderList& headers = {}) {
    auto r = client_->Fetch("GET", target, headers);
    EXPECT_TRUE(r.ok()) << target << ": " << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }

  FixtureUpstream up_;
  std::unique_ptr<store::MemoryStore> store_ = std::make_unique<store::MemoryStore>();
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<ArtifactCache> artifacts_;
  std::unique_ptr<MetadataCache> metadata_;
  std::unique_ptr<http::Router> router_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<http::Client> client_;

 private:
  Mutex clock_mu_;
  WallClock::time_point now_ GUARDED_BY(clock_mu_) = WallClock::now();
};

}  // namespace buildcache::upstream::testing
