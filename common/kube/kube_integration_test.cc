// The kube library against a real kube-apiserver and etcd. Run by
// tests/integration/test_operator_kube.py, which starts the control plane and sets:
//   KUBECONFIG           admin kubeconfig (client certificate, inline CA)
//   BUILDCACHE_ETCD_URL  etcd's client URL, to compact its history (provokes 410 Gone)
// The API server runs with --watch-cache-sizes=podtemplates#0, so watches of podtemplates are
// served from etcd directly and see compaction; other resources use the watch cache, as in
// production.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/http/rest_client.h"
#include "common/kube/config.h"
#include "common/kube/event_recorder.h"
#include "common/kube/informer.h"
#include "common/kube/kube_time.h"
#include "common/kube/leader_election.h"
#include "common/kube/rest_kube_client.h"
#include "common/kube/testing/integration.h"
#include "common/kube/work_queue.h"

namespace buildcache::kube {
namespace {

using namespace std::chrono_literals;

const Resource kPodTemplates{"", "v1", "podtemplates", "PodTemplate", true};
const Resource kRoles{"rbac.authorization.k8s.io", "v1", "roles", "Role", true};
const Resource kRoleBindings{"rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding",
                             true};
// A test-only custom resource with a status subresource.
const Resource kWidgets{"test.buildcache.io", "v1", "widgets", "Widget", true};

using testing::Eventually;
using testing::RandomSuffix;

Json ConfigMap(const std::string& ns, const std::string& name, Json data = Json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"data", std::move(data)}};
}

class KubeIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* kubeconfig = std::getenv("KUBECONFIG");
    ASSERT_NE(kubeconfig, nullptr) << "KUBECONFIG is not set: run through "
                                      "tests/integration/test_operator_kube.py";
    auto config = LoadKubeConfigFile(kubeconfig);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    config_ = new KubeConfig(*config);
    auto client = RestKubeClient::Create(*config);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = client->release();
  }

  void SetUp() override {
    ASSERT_NE(client_, nullptr);
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string lower;
    for (char c : test) {
      if (std::isupper(static_cast<unsigned char>(c)) && !lower.empty()) lower += '-';
      lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    ns_ = lower.substr(0, 40) + "-" + RandomSuffix();
    auto created = client_->Create(
        resources::kNamespaces,
        {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns_}}}});
    ASSERT_TRUE(created.ok()) << created.status().ToString();
  }

  KubeClient& client() { return *client_; }

  static KubeConfig* config_;
  static RestKubeClient* client_;
  std::string ns_;
};

KubeConfig* KubeIntegrationTest::config_ = nullptr;
RestKubeClient* KubeIntegrationTest::client_ = nullptr;

TEST_F(KubeIntegrationTest, CreateGetUpdateDeleteRoundTrip) {
  auto created = client().Create(resources::kConfigMaps, ConfigMap(ns_, "settings", {{"a", "1"}}));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_FALSE(UidOf(*created).empty());

  auto again = client().Create(resources::kConfigMaps, ConfigMap(ns_, "settings"));
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(IsAlreadyExists(again.status())) << again.status().ToString();
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find(R"(configmaps "settings" already exists)"),
            std::string::npos)
      << again.status().message();

  auto got = client().Get(resources::kConfigMaps, ns_, "settings");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["data"]["a"], "1");

  Json changed = *got;
  changed["data"]["a"] = "2";
  auto updated = client().Update(resources::kConfigMaps, changed);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  EXPECT_EQ((*updated)["data"]["a"], "2");
  EXPECT_NE(ResourceVersionOf(*updated), ResourceVersionOf(*got));

  // The same edit based on the old version is an optimistic-concurrency conflict.
  Json stale = *got;
  stale["data"]["a"] = "3";
  auto conflict = client().Update(resources::kConfigMaps, stale);
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(IsConflict(conflict.status())) << conflict.status().ToString();
  EXPECT_FALSE(IsAlreadyExists(conflict.status()));
  EXPECT_NE(conflict.status().message().find("the object has been modified"), std::string::npos);

  // A precondition on a uid that is not the object's refuses the delete.
  Status wrong_uid = client().Delete(resources::kConfigMaps, ns_, "settings",
                                     {.precondition_uid = "00000000-0000-0000-0000-000000000000"});
  EXPECT_TRUE(IsConflict(wrong_uid)) << wrong_uid.ToString();

  Status deleted = client().Delete(resources::kConfigMaps, ns_, "settings",
                                   {.precondition_uid = UidOf(*created)});
  ASSERT_TRUE(deleted.ok()) << deleted.ToString();
  auto gone = client().Get(resources::kConfigMaps, ns_, "settings");
  EXPECT_TRUE(IsNotFound(gone.status())) << gone.status().ToString();
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(IsNotFound(client().Delete(resources::kConfigMaps, ns_, "settings")));
}

TEST_F(KubeIntegrationTest, InvalidObjectIsRejectedWithTheServersReason) {
  auto bad = client().Create(resources::kConfigMaps, ConfigMap(ns_, "Not_A_Valid_Name"));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(IsInvalid(bad.status())) << bad.status().ToString();
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("metadata.name: Invalid value"), std::string::npos)
      << bad.status().message();
}

TEST_F(KubeIntegrationTest, ListPagesAndSelects) {
  for (int i = 0; i < 5; ++i) {
    Json cm = ConfigMap(ns_, "cm-" + std::to_string(i));
    cm["metadata"]["labels"] = {{"parity", i % 2 ? "odd" : "even"}};
    ASSERT_TRUE(client().Create(resources::kConfigMaps, cm).ok());
  }
  std::set<std::string> names;
  std::string token;
  int pages = 0;
  do {
    auto page = client().List(
        resources::kConfigMaps, ns_,
        {.label_selector = "parity in (odd,even)", .limit = 2, .continue_token = token});
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const Json& item : (*page)["items"]) names.insert(NameOf(item));
    token = StringAt(*page, {"metadata", "continue"});
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(names.size(), 5u);
  EXPECT_EQ(pages, 3);

  auto odd = client().List(resources::kConfigMaps, ns_, {.label_selector = "parity=odd"});
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ((*odd)["items"].size(), 2u);
  auto one = client().List(resources::kConfigMaps, ns_, {.field_selector = "metadata.name=cm-3"});
  ASSERT_TRUE(one.ok());
  ASSERT_EQ((*one)["items"].size(), 1u);
  EXPECT_EQ(NameOf((*one)["items"][0]), "cm-3");
}

TEST_F(KubeIntegrationTest, MergePatchSetsAndRemovesFields) {
  ASSERT_TRUE(
      client()
          .Create(resources::kConfigMaps, ConfigMap(ns_, "m", {{"keep", "1"}, {"drop", "2"}}))
          .ok());
  auto patched = client().MergePatch(
      resources::kConfigMaps, ns_, "m",
      {{"data", {{"drop", nullptr}, {"new", "3"}}}, {"metadata", {{"labels", {{"l", "v"}}}}}});
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ((*patched)["data"], Json({{"keep", "1"}, {"new", "3"}}));
  EXPECT_EQ((*patched)["metadata"]["labels"]["l"], "v");
  auto missing = client().MergePatch(resources::kConfigMaps, ns_, "nope", {{"data", {}}});
  EXPECT_TRUE(IsNotFound(missing.status()));
}

TEST_F(KubeIntegrationTest, ServerSideApplyOwnsFieldsReportsConflictsAndForces) {
  auto first = client().Apply(resources::kConfigMaps, ConfigMap(ns_, "ssa", {{"a", "1"}}),
                              {.field_manager = "manager-a"});
  ASSERT_TRUE(first.ok()) << first.status().ToString();  // apply creates
  EXPECT_EQ((*first)["data"]["a"], "1");

  // Re-applying with a field dropped removes it; other managers' fields stay.
  ASSERT_TRUE(client()
                  .Apply(resources::kConfigMaps, ConfigMap(ns_, "ssa", {{"b", "x"}}),
                         {.field_manager = "manager-b"})
                  .ok());
  auto conflict = client().Apply(resources::kConfigMaps, ConfigMap(ns_, "ssa", {{"a", "2"}}),
                                 {.field_manager = "manager-b"});
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(IsConflict(conflict.status())) << conflict.status().ToString();
  EXPECT_NE(conflict.status().message().find("conflict with \"manager-a\""), std::string::npos)
      << conflict.status().message();
  EXPECT_NE(conflict.status().message().find(".data.a"), std::string::npos);

  auto forced = client().Apply(resources::kConfigMaps, ConfigMap(ns_, "ssa", {{"a", "2"}}),
                               {.field_manager = "manager-b", .force = true});
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_EQ((*forced)["data"], Json({{"a", "2"}}));  // b no longer applies data.b: removed

  std::set<std::string> managers;
  for (const Json& entry : (*forced)["metadata"]["managedFields"]) {
    managers.insert(entry.value("manager", ""));
  }
  EXPECT_TRUE(managers.count("manager-b"));
  EXPECT_FALSE(client().Apply(resources::kConfigMaps, ConfigMap(ns_, "ssa"), {}).ok());
}

// Creates the test-only Widget CRD (with a status subresource) once and waits for it.
void EnsureWidgetCrd(KubeClient& client) {
  static std::once_flag once;
  std::call_once(once, [&] {
    Json schema = {
        {"type", "object"},
        {"properties",
         {{"spec", {{"type", "object"}, {"x-kubernetes-preserve-unknown-fields", true}}},
          {"status", {{"type", "object"}, {"x-kubernetes-preserve-unknown-fields", true}}}}}};
    Json crd = {{"apiVersion", "apiextensions.k8s.io/v1"},
                {"kind", "CustomResourceDefinition"},
                {"metadata", {{"name", "widgets.test.buildcache.io"}}},
                {"spec",
                 {{"group", "test.buildcache.io"},
                  {"scope", "Namespaced"},
                  {"names",
                   {{"plural", "widgets"},
                    {"singular", "widget"},
                    {"kind", "Widget"},
                    {"listKind", "WidgetList"}}},
                  {"versions",
                   {{{"name", "v1"},
                     {"served", true},
                     {"storage", true},
                     {"subresources", {{"status", Json::object()}}},
                     {"schema", {{"openAPIV3Schema", schema}}}}}}}}};
    auto applied = client.Apply(resources::kCustomResourceDefinitions, crd,
                                {.field_manager = "kube-integration-test", .force = true});
    ASSERT_TRUE(applied.ok()) << applied.status().ToString();
    ASSERT_TRUE(Eventually([&] {
      auto got =
          client.Get(resources::kCustomResourceDefinitions, "", "widgets.test.buildcache.io");
      if (!got.ok()) return false;
      for (const Json& c : (*got)["status"].value("conditions", Json::array())) {
        if (c.value("type", "") == "Established" && c.value("status", "") == "True") return true;
      }
      return false;
    }));
    // Established is not quite "served" yet on every path; wait until a list works.
    ASSERT_TRUE(Eventually([&] { return client.List(kWidgets, "default").ok(); }));
  });
}

TEST_F(KubeIntegrationTest, StatusSubresourceIsSeparateFromTheMainResource) {
  EnsureWidgetCrd(client());
  Json widget = {{"apiVersion", "test.buildcache.io/v1"},
                 {"kind", "Widget"},
                 {"metadata", {{"name", "w"}, {"namespace", ns_}}},
                 {"spec", {{"size", 1}}},
                 {"status", {{"phase", "ignored-on-create"}}}};
  auto created = client().Create(kWidgets, widget);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_FALSE(created->contains("status"));
  EXPECT_EQ((*created)["metadata"]["generation"], 1);

  Json with_status = *created;
  with_status["status"] = {{"phase", "Ready"}, {"observedGeneration", 1}};
  with_status["spec"]["size"] = 99;  // ignored by the status subresource
  auto status_updated = client().Update(kWidgets, with_status, "status");
  ASSERT_TRUE(status_updated.ok()) << status_updated.status().ToString();
  EXPECT_EQ((*status_updated)["status"]["phase"], "Ready");
  EXPECT_EQ((*status_updated)["spec"]["size"], 1);
  EXPECT_EQ((*status_updated)["metadata"]["generation"], 1);  // status writes do not bump it

  // The main resource ignores status; spec changes bump the generation.
  Json main = *status_updated;
  main["status"]["phase"] = "Hacked";
  main["spec"]["size"] = 2;
  auto main_updated = client().Update(kWidgets, main);
  ASSERT_TRUE(main_updated.ok()) << main_updated.status().ToString();
  EXPECT_EQ((*main_updated)["status"]["phase"], "Ready");
  EXPECT_EQ((*main_updated)["metadata"]["generation"], 2);

  auto patched =
      client().MergePatch(kWidgets, ns_, "w", {{"status", {{"observedGeneration", 2}}}}, "status");
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ((*patched)["status"]["observedGeneration"], 2);

  Json applied_status = {{"apiVersion", "test.buildcache.io/v1"},
                         {"kind", "Widget"},
                         {"metadata", {{"name", "w"}, {"namespace", ns_}}},
                         {"status", {{"phase", "Applied"}}}};
  auto applied = client().Apply(kWidgets, applied_status,
                                {.field_manager = "status-writer", .force = true}, "status");
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ((*applied)["status"]["phase"], "Applied");

  auto got_status = client().Get(kWidgets, ns_, "w", "status");
  ASSERT_TRUE(got_status.ok());
  EXPECT_EQ((*got_status)["status"]["phase"], "Applied");
}

// Collects watch events on a thread until stopped.
class EventCollector {
 public:
  EventCollector(KubeClient& client, const Resource& resource, const std::string& ns,
                 WatchOptions options) {
    thread_ = std::jthread([&client, resource, ns, options, this](std::stop_token stop) {
      Status s = client.Watch(
          resource, ns, options,
          [this](const WatchEvent& e) {
            std::lock_guard lock(mu_);
            if (e.type != WatchEventType::kBookmark) {
              events_.push_back(std::string(WatchEventTypeName(e.type)) + " " + NameOf(e.object) +
                                " " + StringAt(e.object, {"data", "v"}));
            }
            return true;
          },
          stop);
      std::lock_guard lock(mu_);
      result_ = s;
      done_ = true;
    });
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  bool done() {
    std::lock_guard lock(mu_);
    return done_;
  }
  Status result() {
    std::lock_guard lock(mu_);
    return result_;
  }
  void Stop() {
    thread_.request_stop();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::vector<std::string> events_;
  Status result_;
  bool done_ = false;
  std::jthread thread_;
};

TEST_F(KubeIntegrationTest, WatchSeesAddUpdateDeleteInOrder) {
  auto list = client().List(resources::kConfigMaps, ns_);
  ASSERT_TRUE(list.ok());
  EventCollector watch(client(), resources::kConfigMaps, ns_,
                       {.resource_version = StringAt(*list, {"metadata", "resourceVersion"}),
                        .timeout_seconds = 60});
  auto cm = client().Create(resources::kConfigMaps, ConfigMap(ns_, "w", {{"v", "1"}}));
  ASSERT_TRUE(cm.ok());
  ASSERT_TRUE(client().MergePatch(resources::kConfigMaps, ns_, "w", {{"data", {{"v", "2"}}}}).ok());
  ASSERT_TRUE(client().Delete(resources::kConfigMaps, ns_, "w").ok());
  std::vector<std::string> want = {"ADDED w 1", "MODIFIED w 2", "DELETED w 2"};
  EXPECT_TRUE(Eventually([&] { return watch.events().size() >= want.size(); }));
  EXPECT_EQ(watch.events(), want);
  auto start = std::chrono::steady_clock::now();
  watch.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(watch.result().code(), StatusCode::kCancelled) << watch.result().ToString();
}

TEST_F(KubeIntegrationTest, WatchEndsWhenTheServerTimesItOut) {
  auto start = std::chrono::steady_clock::now();
  Status s = client().Watch(resources::kConfigMaps, ns_, {.timeout_seconds = 1},
                            [](const WatchEvent&) { return true; });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

// Moves etcd's revision forward (with a write outside the API server's keys) and compacts the
// history before it, so every resourceVersion issued so far is gone.
void CompactEtcd() {
  const char* url = std::getenv("BUILDCACHE_ETCD_URL");
  ASSERT_NE(url, nullptr) << "BUILDCACHE_ETCD_URL is not set";
  auto etcd = http::RestClient::Create({.base_url = url});
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  auto call = [&](const std::string& target, const Json& body) -> Json {
    auto resp = (*etcd)->Do({.method = "POST",
                             .target = target,
                             .headers = {{"Content-Type", "application/json"}},
                             .body = body.dump()});
    EXPECT_TRUE(resp.ok() && resp->status == 200)
        << target << ": " << resp.status().ToString() << (resp.ok() ? resp->body : "");
    return resp.ok() ? Json::parse(resp->body, nullptr, false) : Json();
  };
  // Two writes: a watch from version V starts at revision V+1, which must be compacted too.
  Json put;
  for (int i = 0; i < 2; ++i) {
    put = call("/v3/kv/put", {{"key", Base64Encode("buildcache-test/tick")},
                              {"value", Base64Encode(RandomSuffix())}});
  }
  std::string revision = StringAt(put, {"header", "revision"});
  ASSERT_FALSE(revision.empty()) << put.dump();
  call("/v3/kv/compaction", {{"revision", revision}, {"physical", true}});
}

Json PodTemplate(const std::string& ns, const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "PodTemplate"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"template",
           {{"spec",
             {{"containers", {{{"name", "c"}, {"image", "registry.example.internal/c:1"}}}}}}}}};
}

TEST_F(KubeIntegrationTest, WatchFromACompactedVersionIsGone) {
  auto list = client().List(kPodTemplates, ns_);
  ASSERT_TRUE(list.ok());
  std::string old_version = StringAt(*list, {"metadata", "resourceVersion"});
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "a")).ok());
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "b")).ok());
  CompactEtcd();
  int events = 0;
  Status s =
      client().Watch(kPodTemplates, ns_, {.resource_version = old_version, .timeout_seconds = 10},
                     [&](const WatchEvent&) { return ++events, true; });
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(IsGone(s)) << s.ToString();
  EXPECT_EQ(events, 0);
  EXPECT_EQ(GetApiError(s)->code, 410);
}

TEST_F(KubeIntegrationTest, ContinueTokenExpiresWithCompaction) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "p" + std::to_string(i))).ok());
  }
  auto first = client().List(kPodTemplates, ns_, {.limit = 1});
  ASSERT_TRUE(first.ok());
  std::string token = StringAt(*first, {"metadata", "continue"});
  ASSERT_FALSE(token.empty());
  CompactEtcd();
  auto second = client().List(kPodTemplates, ns_, {.limit = 1, .continue_token = token});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(IsGone(second.status())) << second.status().ToString();
}

// Forwards to a real client, compacting etcd before the first request for a second list page,
// so that page's continue token has expired.
class CompactBeforeSecondPage : public KubeClient {
 public:
  explicit CompactBeforeSecondPage(KubeClient* real) : real_(real) {}
  int expired_pages = 0;

  // KubeClient
  Result<Json> Get(const Resource& r, const std::string& ns, const std::string& name,
                   const std::string& sub) override {
    return real_->Get(r, ns, name, sub);
  }
  Result<Json> List(const Resource& r, const std::string& ns, const ListOptions& o) override {
    if (!o.continue_token.empty() && !compacted_) {
      compacted_ = true;
      CompactEtcd();
      auto page = real_->List(r, ns, o);
      if (IsGone(page.status())) ++expired_pages;
      return page;
    }
    return real_->List(r, ns, o);
  }
  Result<Json> Create(const Resource& r, const Json& o) override { return real_->Create(r, o); }
  Result<Json> Update(const Resource& r, const Json& o, const std::string& sub) override {
    return real_->Update(r, o, sub);
  }
  Result<Json> MergePatch(const Resource& r, const std::string& ns, const std::string& name,
                          const Json& p, const std::string& sub) override {
    return real_->MergePatch(r, ns, name, p, sub);
  }
  Result<Json> Apply(const Resource& r, const Json& o, const ApplyOptions& a,
                     const std::string& sub) override {
    return real_->Apply(r, o, a, sub);
  }
  Status Delete(const Resource& r, const std::string& ns, const std::string& name,
                const DeleteOptions& d) override {
    return real_->Delete(r, ns, name, d);
  }
  Status Watch(const Resource& r, const std::string& ns, const WatchOptions& o,
               const WatchHandler& h, std::stop_token stop) override {
    return real_->Watch(r, ns, o, h, stop);
  }

 private:
  KubeClient* real_;
  bool compacted_ = false;
};

TEST_F(KubeIntegrationTest, InformerStartsItsListOverWhenAPageExpires) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "p" + std::to_string(i))).ok());
  }
  CompactBeforeSecondPage compacting(&client());
  Informer informer(&compacting, kPodTemplates, {.ns = ns_, .page_size = 1});
  informer.Start();
  ASSERT_TRUE(informer.WaitForSync(20s));
  EXPECT_EQ(compacting.expired_pages, 1);
  EXPECT_EQ(informer.ListKeys(), (std::vector<std::string>{ns_ + "/p0", ns_ + "/p1", ns_ + "/p2"}));
  EXPECT_EQ(informer.stats().failures, 0u);
}

// Records what an informer's handlers saw.
struct HandlerLog {
  std::mutex mu;
  std::vector<std::string> lines;
  EventHandlers handlers() {
    return {
        .on_add = [this](const Json& o) { Push("add " + NameOf(o)); },
        .on_update =
            [this](const Json& old_o, const Json& new_o) {
              Push("update " + NameOf(new_o) + " " + StringAt(old_o, {"data", "v"}) + "->" +
                   StringAt(new_o, {"data", "v"}));
            },
        .on_delete = [this](const Json& o) { Push("delete " + NameOf(o)); },
    };
  }
  void Push(std::string line) {
    std::lock_guard lock(mu);
    lines.push_back(std::move(line));
  }
  std::vector<std::string> Get() {
    std::lock_guard lock(mu);
    return lines;
  }
  bool Contains(const std::string& line) {
    std::lock_guard lock(mu);
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  }
};

TEST_F(KubeIntegrationTest, InformerCachesObjectsAndCallsHandlers) {
  ASSERT_TRUE(client().Create(resources::kConfigMaps, ConfigMap(ns_, "before", {{"v", "0"}})).ok());
  Informer informer(&client(), resources::kConfigMaps, {.ns = ns_, .page_size = 1});
  HandlerLog log;
  informer.AddEventHandlers(log.handlers());
  informer.Start();
  ASSERT_TRUE(informer.WaitForSync(20s));
  EXPECT_EQ(log.Get(), std::vector<std::string>{"add before"});
  auto cached = informer.Get(ns_ + "/before");
  ASSERT_TRUE(cached);
  EXPECT_EQ((*cached)["kind"], "ConfigMap");  // set on listed objects too
  EXPECT_EQ((*cached)["apiVersion"], "v1");

  ASSERT_TRUE(client().Create(resources::kConfigMaps, ConfigMap(ns_, "after", {{"v", "1"}})).ok());
  ASSERT_TRUE(
      client().MergePatch(resources::kConfigMaps, ns_, "after", {{"data", {{"v", "2"}}}}).ok());
  ASSERT_TRUE(client().Delete(resources::kConfigMaps, ns_, "before").ok());
  std::vector<std::string> want = {"add before", "add after", "update after 1->2", "delete before"};
  EXPECT_TRUE(Eventually([&] { return log.Get().size() >= want.size(); }));
  EXPECT_EQ(log.Get(), want);
  EXPECT_EQ(informer.ListKeys(), std::vector<std::string>{ns_ + "/after"});
  EXPECT_FALSE(informer.Get(ns_ + "/before"));

  // A handler added late first hears about what is already cached.
  HandlerLog late;
  informer.AddEventHandlers(late.handlers());
  EXPECT_EQ(late.Get(), std::vector<std::string>{"add after"});
  informer.Stop();
  EXPECT_EQ(informer.stats().lists, 1u);
  EXPECT_EQ(informer.stats().expired, 0u);
}

TEST_F(KubeIntegrationTest, InformerListsAgainWhenItsVersionIsCompactedAway) {
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "stays")).ok());
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "goes")).ok());
  // Short watches, so the informer reconnects (from its last version) every two to four seconds.
  Informer informer(
      &client(), kPodTemplates,
      {.ns = ns_, .min_watch_timeout = 2s, .backoff = {.initial = 50ms, .max = 500ms}});
  HandlerLog log;
  informer.AddEventHandlers(log.handlers());
  informer.Start();
  ASSERT_TRUE(informer.WaitForSync(20s));
  ASSERT_TRUE(Eventually([&] { return informer.stats().watches >= 1; }));

  // Compaction removes the informer's version, so its next watch is answered with 410 Gone.
  CompactEtcd();
  ASSERT_TRUE(Eventually([&] { return informer.stats().expired >= 1; }, 30s))
      << "no 410 seen; watches=" << informer.stats().watches;
  ASSERT_TRUE(Eventually([&] { return informer.stats().lists >= 2; }));

  // The cache still converges on changes made afterwards.
  ASSERT_TRUE(client().Delete(kPodTemplates, ns_, "goes").ok());
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "new")).ok());
  EXPECT_TRUE(Eventually([&] {
    auto keys = informer.ListKeys();
    return keys == std::vector<std::string>{ns_ + "/new", ns_ + "/stays"};
  })) << ::testing::PrintToString(informer.ListKeys());
  EXPECT_TRUE(Eventually([&] { return log.Contains("delete goes") && log.Contains("add new"); }));
  EXPECT_EQ(informer.stats().failures, 0u);
}

TEST_F(KubeIntegrationTest, InformerReconcilesADeletionItMissedDuringAnExpiredWatch) {
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "a")).ok());
  Informer informer(&client(), kPodTemplates,
                    {.ns = ns_, .min_watch_timeout = 2s, .backoff = {.initial = 50ms}});
  HandlerLog log;
  informer.AddEventHandlers(log.handlers());
  informer.Start();
  ASSERT_TRUE(informer.WaitForSync(20s));
  // Stop the informer, change things and compact while it is away: when it comes back, its
  // version is gone and only a re-list can tell it that "a" was deleted.
  informer.Stop();
  ASSERT_TRUE(client().Delete(kPodTemplates, ns_, "a").ok());
  ASSERT_TRUE(client().Create(kPodTemplates, PodTemplate(ns_, "b")).ok());
  CompactEtcd();
  informer.Start();
  EXPECT_TRUE(
      Eventually([&] { return informer.ListKeys() == std::vector<std::string>{ns_ + "/b"}; }));
  EXPECT_GE(informer.stats().expired, 1u);
  EXPECT_TRUE(log.Contains("delete a"));
  EXPECT_TRUE(log.Contains("add b"));
}

TEST_F(KubeIntegrationTest, WorkQueueDrivenByAnInformerDeduplicatesKeys) {
  WorkQueue queue;
  Informer informer(&client(), resources::kConfigMaps, {.ns = ns_});
  auto enqueue = [&](const Json& o) { queue.Add(ObjectKey(o)); };
  informer.AddEventHandlers({.on_add = enqueue,
                             .on_update = [&](const Json&, const Json& o) { enqueue(o); },
                             .on_delete = enqueue});
  informer.Start();
  ASSERT_TRUE(informer.WaitForSync(20s));
  ASSERT_TRUE(client().Create(resources::kConfigMaps, ConfigMap(ns_, "q", {{"v", "0"}})).ok());
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(
        client()
            .MergePatch(resources::kConfigMaps, ns_, "q", {{"data", {{"v", std::to_string(i)}}}})
            .ok());
  }
  ASSERT_TRUE(Eventually([&] {
    auto o = informer.Get(ns_ + "/q");
    return o && StringAt(*o, {"data", "v"}) == "5";
  }));
  auto key = queue.GetFor(5s);
  ASSERT_EQ(key, ns_ + "/q");
  queue.Done(*key);
  EXPECT_LE(queue.Len(), 1u);  // six changes, at most two deliveries of the one key
}

class Candidate {
 public:
  Candidate(KubeClient& client, const std::string& ns, const std::string& identity,
            bool release_on_cancel) {
    LeaderElectionConfig config{
        .lease_namespace = ns,
        .lease_name = "operator",
        .identity = identity,
        .lease_duration = 3s,
        .renew_deadline = 2s,
        .retry_period = 300ms,
        .release_on_cancel = release_on_cancel,
        .on_started_leading =
            [this](std::stop_token leading) {
              {
                std::lock_guard lock(mu_);
                leading_ = true;
                became_leader_ = std::chrono::steady_clock::now();
              }
              std::mutex m;
              std::condition_variable_any cv;
              std::unique_lock lock(m);
              cv.wait(lock, leading, [] { return false; });
              std::lock_guard done(mu_);
              leading_ = false;
            },
        .on_stopped_leading = [this] { stopped_ = true; },
        .on_new_leader =
            [this](const std::string& id) {
              std::lock_guard lock(mu_);
              leaders_seen_.push_back(id);
            },
    };
    auto elector = LeaderElector::Create(&client, config);
    EXPECT_TRUE(elector.ok()) << elector.status().ToString();
    elector_ = std::move(*elector);
    thread_ = std::jthread([this](std::stop_token stop) { elector_->Run(stop); });
  }
  ~Candidate() { Stop(); }
  void Stop() {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
    }
  }
  bool leading() {
    std::lock_guard lock(mu_);
    return leading_;
  }
  std::chrono::steady_clock::time_point became_leader() {
    std::lock_guard lock(mu_);
    return became_leader_;
  }
  std::vector<std::string> leaders_seen() {
    std::lock_guard lock(mu_);
    return leaders_seen_;
  }
  bool stopped() const { return stopped_; }
  LeaderElector& elector() { return *elector_; }

 private:
  std::mutex mu_;
  bool leading_ = false;
  std::atomic<bool> stopped_{false};
  std::chrono::steady_clock::time_point became_leader_;
  std::vector<std::string> leaders_seen_;
  std::unique_ptr<LeaderElector> elector_;
  std::jthread thread_;
};

TEST_F(KubeIntegrationTest, LeaderElectionOneLeadsTheOtherTakesOverAfterACrash) {
  Candidate a(client(), ns_, "candidate-a", /*release_on_cancel=*/false);
  ASSERT_TRUE(Eventually([&] { return a.leading(); }, 10s));
  Candidate b(client(), ns_, "candidate-b", false);
  ASSERT_TRUE(Eventually([&] { return b.elector().leader() == "candidate-a"; }, 10s));
  // b keeps observing a's renewals and does not take over.
  std::this_thread::sleep_for(4s);
  EXPECT_TRUE(a.leading());
  EXPECT_FALSE(b.leading());

  auto lease = client().Get(resources::kLeases, ns_, "operator");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], "candidate-a");
  EXPECT_EQ((*lease)["spec"]["leaseDurationSeconds"], 3);

  // "Crash" a: it stops renewing and does not release.
  auto crashed = std::chrono::steady_clock::now();
  a.Stop();
  EXPECT_TRUE(a.stopped());
  ASSERT_TRUE(Eventually([&] { return b.leading(); }, 10s));
  auto takeover = b.became_leader() - crashed;
  // Within the lease duration (3s) of the last renewal, plus a retry period and some slack.
  EXPECT_LT(takeover, 5s)
      << std::chrono::duration_cast<std::chrono::milliseconds>(takeover).count();
  EXPECT_GT(takeover, 1500ms);  // not before a's lease could have expired
  auto after = client().Get(resources::kLeases, ns_, "operator");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)["spec"]["holderIdentity"], "candidate-b");
  EXPECT_EQ((*after)["spec"]["leaseTransitions"], 1);
  auto seen = b.leaders_seen();
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front(), "candidate-a");
  EXPECT_EQ(seen.back(), "candidate-b");
}

TEST_F(KubeIntegrationTest, LeaderElectionReleaseOnShutdownHandsOverQuickly) {
  Candidate a(client(), ns_, "candidate-a", /*release_on_cancel=*/true);
  ASSERT_TRUE(Eventually([&] { return a.leading(); }, 10s));
  Candidate b(client(), ns_, "candidate-b", true);
  ASSERT_TRUE(Eventually([&] { return b.elector().leader() == "candidate-a"; }, 10s));
  auto stopped = std::chrono::steady_clock::now();
  a.Stop();
  ASSERT_TRUE(Eventually([&] { return b.leading(); }, 10s));
  EXPECT_LT(b.became_leader() - stopped, 1500ms);  // no need to wait out the 3s lease
}

TEST_F(KubeIntegrationTest, LeaderElectionLeaderStepsDownWhenItsLeaseIsTakenOver) {
  Candidate a(client(), ns_, "candidate-a", /*release_on_cancel=*/true);
  ASSERT_TRUE(Eventually([&] { return a.leading(); }, 10s));
  // Another party writes itself into the lease (as after a network partition in which a's
  // renewals did not arrive).
  auto lease = client().Get(resources::kLeases, ns_, "operator");
  ASSERT_TRUE(lease.ok());
  Json taken = *lease;
  taken["spec"]["holderIdentity"] = "intruder";
  taken["spec"]["renewTime"] = FormatMicroTime(std::chrono::system_clock::now());
  auto start = std::chrono::steady_clock::now();
  auto updated = client().Update(resources::kLeases, taken);
  if (!updated.ok() && IsConflict(updated.status())) {  // a renewed in between: try once more
    lease = client().Get(resources::kLeases, ns_, "operator");
    ASSERT_TRUE(lease.ok());
    taken["metadata"] = (*lease)["metadata"];
    updated = client().Update(resources::kLeases, taken);
  }
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  // a notices, stops leading within its renew deadline (2s), and its Run returns.
  ASSERT_TRUE(Eventually([&] { return a.stopped(); }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  EXPECT_FALSE(a.leading());
  EXPECT_EQ(a.leaders_seen().back(), "intruder");
  // It did not release what it no longer holds.
  auto after = client().Get(resources::kLeases, ns_, "operator");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)["spec"]["holderIdentity"], "intruder");
}

TEST_F(KubeIntegrationTest, LeaderElectionConfigIsChecked) {
  LeaderElectionConfig config{.lease_namespace = ns_,
                              .lease_name = "x",
                              .identity = "i",
                              .lease_duration = 2s,
                              .renew_deadline = 3s,
                              .on_started_leading = [](std::stop_token) {}};
  EXPECT_EQ(LeaderElector::Create(&client(), config).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(KubeIntegrationTest, EventsAreRecordedAndRepeatsFormASeries) {
  auto cm = client().Create(resources::kConfigMaps, ConfigMap(ns_, "subject"));
  ASSERT_TRUE(cm.ok());
  Json subject = *cm;
  subject["apiVersion"] = "v1";
  subject["kind"] = "ConfigMap";
  EventRecorder recorder(&client(), {.instance = "operator-0"});
  Status s = recorder.Record(subject, EventType::kWarning, "UpstreamUnreachable", "Reconcile",
                             "pypi upstream https://pypi.example.internal did not answer");
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(recorder
                  .Record(subject, EventType::kWarning, "UpstreamUnreachable", "Reconcile",
                          "pypi upstream https://pypi.example.internal did not answer")
                  .ok());
  ASSERT_TRUE(recorder.Record(subject, EventType::kNormal, "Ready", "Reconcile", "all good").ok());

  auto events =
      client().List(resources::kEvents, ns_, {.field_selector = "regarding.name=subject"});
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ((*events)["items"].size(), 2u);
  std::map<std::string, Json> by_reason;
  for (const Json& e : (*events)["items"]) by_reason[e.value("reason", "")] = e;
  const Json& warning = by_reason["UpstreamUnreachable"];
  EXPECT_EQ(warning["type"], "Warning");
  EXPECT_EQ(warning["note"], "pypi upstream https://pypi.example.internal did not answer");
  EXPECT_EQ(warning["action"], "Reconcile");
  EXPECT_EQ(warning["reportingController"], "buildcache.io/operator");
  EXPECT_EQ(warning["reportingInstance"], "operator-0");
  EXPECT_EQ(warning["regarding"]["uid"], UidOf(*cm));
  EXPECT_EQ(warning["regarding"]["kind"], "ConfigMap");
  EXPECT_EQ(warning["series"]["count"], 2);
  EXPECT_FALSE(by_reason["Ready"].contains("series"));

  // Visible through the core v1 API as well, which is what kubectl describe reads.
  auto core =
      client().List(resources::kCoreEvents, ns_, {.field_selector = "involvedObject.name=subject"});
  ASSERT_TRUE(core.ok());
  EXPECT_EQ((*core)["items"].size(), 2u);
}

// A service account token in a file (as in a pod), replaced while the client runs.
TEST_F(KubeIntegrationTest, ServiceAccountTokenFileIsUsedAndRotated) {
  Json sa = {{"apiVersion", "v1"},
             {"kind", "ServiceAccount"},
             {"metadata", {{"name", "operator"}, {"namespace", ns_}}}};
  ASSERT_TRUE(client().Create(resources::kServiceAccounts, sa).ok());
  Json role = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "Role"},
      {"metadata", {{"name", "read-configmaps"}, {"namespace", ns_}}},
      {"rules",
       {{{"apiGroups", {""}}, {"resources", {"configmaps"}}, {"verbs", {"get", "list"}}}}}};
  ASSERT_TRUE(client().Create(kRoles, role).ok());
  Json binding = {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "RoleBinding"},
      {"metadata", {{"name", "operator"}, {"namespace", ns_}}},
      {"roleRef",
       {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "Role"}, {"name", "read-configmaps"}}},
      {"subjects", {{{"kind", "ServiceAccount"}, {"name", "operator"}, {"namespace", ns_}}}}};
  ASSERT_TRUE(client().Create(kRoleBindings, binding).ok());
  ASSERT_TRUE(client().Create(resources::kConfigMaps, ConfigMap(ns_, "visible")).ok());

  // TokenRequest is a subresource: POST .../serviceaccounts/operator/token.
  auto token_for = [&]() -> std::string {
    auto admin = http::RestClient::Create({.base_url = config_->server,
                                           .ca_pem = config_->ca_pem,
                                           .client_cert_pem = config_->client_cert_pem,
                                           .client_key_pem = config_->client_key_pem});
    EXPECT_TRUE(admin.ok());
    auto resp =
        (*admin)->Do({.method = "POST",
                      .target = resources::kServiceAccounts.Path(ns_, "operator", "token"),
                      .headers = {{"Content-Type", "application/json"}},
                      .body = R"({"apiVersion":"authentication.k8s.io/v1",)"
                              R"("kind":"TokenRequest","spec":{"expirationSeconds":600}})"});
    EXPECT_TRUE(resp.ok() && resp->status == 201) << (resp.ok() ? resp->body : "");
    return Json::parse(resp->body)["status"]["token"].get<std::string>();
  };

  std::string dir = std::filesystem::temp_directory_path() / ("bc-sa-" + RandomSuffix());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/token") << token_for();
  KubeConfig pod_config;
  pod_config.server = config_->server;
  pod_config.ca_pem = config_->ca_pem;
  pod_config.token_file = dir + "/token";
  auto as_pod = RestKubeClient::Create(pod_config);
  ASSERT_TRUE(as_pod.ok()) << as_pod.status().ToString();

  auto allowed = (*as_pod)->Get(resources::kConfigMaps, ns_, "visible");
  EXPECT_TRUE(allowed.ok()) << allowed.status().ToString();
  auto denied = (*as_pod)->List(resources::kSecrets, ns_);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(GetApiError(denied.status())->reason, "Forbidden") << denied.status().ToString();
  EXPECT_NE(denied.status().message().find("system:serviceaccount:" + ns_ + ":operator"),
            std::string::npos);

  // Rotation: a new token replaces the file (atomically, as the kubelet does); a garbage token
  // in between proves the file is really read again.
  std::ofstream(dir + "/token.new") << "not-a-token";
  std::filesystem::rename(dir + "/token.new", dir + "/token");
  auto rejected = (*as_pod)->Get(resources::kConfigMaps, ns_, "visible");
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(GetApiError(rejected.status())->code, 401) << rejected.status().ToString();
  std::ofstream(dir + "/token.new") << token_for();
  std::filesystem::rename(dir + "/token.new", dir + "/token");
  auto again = (*as_pod)->Get(resources::kConfigMaps, ns_, "visible");
  EXPECT_TRUE(again.ok()) << again.status().ToString();
  std::filesystem::remove_all(dir);
}

TEST_F(KubeIntegrationTest, UnreachableServerIsUnavailable) {
  KubeConfig dead = *config_;
  dead.server = "https://127.0.0.1:1";
  auto c = RestKubeClient::Create(dead, {.timeout = 2s});
  ASSERT_TRUE(c.ok());
  auto got = (*c)->Get(resources::kConfigMaps, ns_, "x");
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable) << got.status().ToString();
  EXPECT_FALSE(GetApiError(got.status()));
}

}  // namespace
}  // namespace buildcache::kube
