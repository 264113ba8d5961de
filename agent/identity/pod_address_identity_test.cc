#include "agent/identity/pod_address_identity.h"

#include <gtest/gtest.h>

#include <deque>
#include <optional>
#include <thread>

#include "common/kube/testing/unused_kube_client.h"

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

Json Pod(std::string ns, std::string name, std::string ip, Json spec = Json::object(),
         Json labels = Json::object(), std::string phase = "Running") {
  spec["nodeName"] = "node-1";
  return {{"metadata",
           {{"namespace", ns}, {"name", name}, {"labels", labels}, {"resourceVersion", "3"}}},
          {"spec", spec},
          {"status", {{"phase", phase}, {"podIP", ip}, {"podIPs", {{{"ip", ip}}}}}}};
}

// Lists the given pods once; watches block until stopped.
class PodListClient : public kube::testing::UnusedKubeClient {
 public:
  explicit PodListClient(std::vector<Json> pods) : pods_(std::move(pods)) {}
  Result<Json> List(const kube::Resource&, const std::string&,
                    const kube::ListOptions& options) override {
    field_selector = options.field_selector;
    return Json{{"apiVersion", "v1"},
                {"kind", "PodList"},
                {"metadata", {{"resourceVersion", "5"}}},
                {"items", pods_}};
  }
  Status Watch(const kube::Resource&, const std::string&, const kube::WatchOptions&,
               const kube::WatchHandler&, std::stop_token stop) override {
    while (!stop.stop_requested()) std::this_thread::sleep_for(5ms);
    return Cancelled("stopped");
  }
  std::string field_selector;

 private:
  std::vector<Json> pods_;
};

// Lists the given pods, then delivers the events pushed with Send.
class PodEventClient : public PodListClient {
 public:
  using PodListClient::PodListClient;
  Status Watch(const kube::Resource&, const std::string&, const kube::WatchOptions&,
               const kube::WatchHandler& on_event, std::stop_token stop) override {
    while (!stop.stop_requested()) {
      std::optional<kube::WatchEvent> event;
      {
        MutexLock lock(mu_);
        if (!events_.empty()) {
          event = std::move(events_.front());
          events_.pop_front();
        }
      }
      if (event) {
        on_event(*event);
        MutexLock lock(mu_);
        ++delivered_;
      } else {
        std::this_thread::sleep_for(2ms);
      }
    }
    return Cancelled("stopped");
  }
  // Queues an event and waits (bounded) until the watch has delivered it.
  bool Send(kube::WatchEventType type, Json pod) {
    int target;
    {
      MutexLock lock(mu_);
      events_.push_back({type, std::move(pod)});
      target = delivered_ + static_cast<int>(events_.size());
    }
    for (int i = 0; i < 5000; ++i) {
      {
        MutexLock lock(mu_);
        if (delivered_ >= target) return true;
      }
      std::this_thread::sleep_for(2ms);
    }
    return false;
  }

 private:
  Mutex mu_;
  std::deque<kube::WatchEvent> events_ GUARDED_BY(mu_);
  int delivered_ GUARDED_BY(mu_) = 0;
};

Json WithUid(Json pod, std::string uid, std::string rv = "6") {
  pod["metadata"]["uid"] = std::move(uid);
  pod["metadata"]["resourceVersion"] = std::move(rv);
  return pod;
}

TEST(PodAddressIdentityTest, PodsOfTheNodeAreTheirNamespaceAndServiceAccount) {
  PodListClient client({
      Pod("team-a", "ci-1", "10.0.0.5", {{"serviceAccountName", "builder"}}),
      Pod("release", "main-1", "10.0.0.6", Json::object(), {{"branch", "main"}}),
      Pod("team-a", "node-exporter", "10.0.0.1", {{"hostNetwork", true}}),
      Pod("team-b", "done", "10.0.0.7", Json::object(), Json::object(), "Succeeded"),
      Pod("team-b", "ci-v6", "fd00::7"),
  });
  PodAddressOptions options;
  options.node_name = "node-1";
  options.trusted.pod_labels = {{"branch", "main"}};
  PodAddressIdentity source(&client, options, nullptr);
  ASSERT_TRUE(source.WaitForSync(10s));
  EXPECT_EQ(client.field_selector, "spec.nodeName=node-1");

  Caller a = source.ForAddress("10.0.0.5");
  EXPECT_EQ(a.scope, "team-a");
  EXPECT_EQ(a.subject, "team-a/builder");
  EXPECT_FALSE(a.trusted_writer);
  EXPECT_FALSE(a.anonymous);
  Caller main = source.ForAddress("10.0.0.6");
  EXPECT_EQ(main.scope, "release");
  EXPECT_EQ(main.subject, "release/default");
  EXPECT_TRUE(main.trusted_writer);
  EXPECT_EQ(source.ForAddress("[fd00::7]").scope, "team-b");
  // Host-network and finished pods, and addresses of no pod, are anonymous.
  EXPECT_TRUE(source.ForAddress("10.0.0.1").anonymous);
  EXPECT_TRUE(source.ForAddress("10.0.0.7").anonymous);
  EXPECT_TRUE(source.ForAddress("10.0.0.99").anonymous);
  EXPECT_EQ(source.known_addresses(), 3u);
}

TEST(PodAddressIdentityTest, ATokensPodIsGoneOnceDeletedOrReplaced) {
  PodEventClient client({WithUid(Pod("team-a", "ci-1", "10.0.0.5"), "uid-1", "3"),
                         WithUid(Pod("team-a", "ci-2", "10.0.0.6"), "uid-2", "3")});
  std::vector<std::string> deleted;
  Mutex deleted_mu;
  PodAddressOptions options;
  options.node_name = "node-1";
  options.on_pod_deleted = [&](const std::string& uid) {
    MutexLock lock(deleted_mu);
    deleted.push_back(uid);
  };
  PodAddressIdentity source(&client, options, nullptr);
  ASSERT_TRUE(source.WaitForSync(10s));
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-1", "uid-1"), BoundPod::kLive);
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-1", "uid-other"), BoundPod::kGone);
  EXPECT_EQ(source.CheckBoundPod("team-b", "elsewhere", "uid-9"), BoundPod::kUnknown);

  ASSERT_TRUE(client.Send(kube::WatchEventType::kDeleted,
                          WithUid(Pod("team-a", "ci-1", "10.0.0.5"), "uid-1")));
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-1", "uid-1"), BoundPod::kGone);
  EXPECT_TRUE(source.ForAddress("10.0.0.5").anonymous);
  // The same name again, as a new pod: the old pod's tokens stay refused, the new one's pass.
  ASSERT_TRUE(client.Send(kube::WatchEventType::kAdded,
                          WithUid(Pod("team-a", "ci-1", "10.0.0.7"), "uid-3", "7")));
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-1", "uid-1"), BoundPod::kGone);
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-1", "uid-3"), BoundPod::kLive);
  // A pod replaced without a delete event seen (the watch missed it): the old uid is gone too.
  ASSERT_TRUE(client.Send(kube::WatchEventType::kModified,
                          WithUid(Pod("team-a", "ci-2", "10.0.0.6"), "uid-4", "8")));
  EXPECT_EQ(source.CheckBoundPod("team-a", "ci-2", "uid-2"), BoundPod::kGone);
  MutexLock lock(deleted_mu);
  EXPECT_EQ(deleted, (std::vector<std::string>{"uid-1", "uid-2"}));
}

TEST(TrustedWritersTest, AnyListMatchesAndLabelsMustAllMatch) {
  TrustedWriters t;
  EXPECT_FALSE(t.Matches("ns", "sa", {}));
  t.namespaces = {"release"};
  t.service_accounts = {"ci/publisher"};
  t.pod_labels = {{"branch", "main"}, {"trusted", "yes"}};
  EXPECT_TRUE(t.Matches("release", "default", {}));
  EXPECT_TRUE(t.Matches("ci", "publisher", {}));
  EXPECT_FALSE(t.Matches("ci", "builder", {}));
  EXPECT_FALSE(t.Matches("other", "publisher", {}));
  EXPECT_TRUE(t.Matches("x", "y", {{"branch", "main"}, {"trusted", "yes"}, {"more", "1"}}));
  EXPECT_FALSE(t.Matches("x", "y", {{"branch", "main"}}));
}

}  // namespace
}  // namespace buildcache::identity
