#include "common/kube/resource.h"

#include <gtest/gtest.h>

namespace buildcache::kube {
namespace {

TEST(ResourceTest, PathsForCoreAndGroupResources) {
  EXPECT_EQ(resources::kConfigMaps.Path("ns"), "/api/v1/namespaces/ns/configmaps");
  EXPECT_EQ(resources::kConfigMaps.Path(""), "/api/v1/configmaps");
  EXPECT_EQ(resources::kConfigMaps.Path("ns", "a"), "/api/v1/namespaces/ns/configmaps/a");
  EXPECT_EQ(resources::kLeases.Path("kube-system", "op", "status"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/op/status");
  EXPECT_EQ(resources::kNamespaces.Path("ignored", "ci"), "/api/v1/namespaces/ci");
  EXPECT_EQ(resources::kConfigMaps.Path("ns", "a b"), "/api/v1/namespaces/ns/configmaps/a%20b");
}

TEST(ResourceTest, ApiVersionAndDescription) {
  EXPECT_EQ(resources::kPods.ApiVersion(), "v1");
  EXPECT_EQ(resources::kDaemonSets.ApiVersion(), "apps/v1");
  EXPECT_EQ(resources::kPods.Describe(), "pods");
  EXPECT_EQ(resources::kLeases.Describe(), "leases.coordination.k8s.io");
}

TEST(ResourceTest, KeysAndMetadata) {
  Json cm = Json::parse(R"({"metadata":{"name":"a","namespace":"ns","uid":"u",)"
                        R"("resourceVersion":"7"}})");
  EXPECT_EQ(ObjectKey(cm), "ns/a");
  EXPECT_EQ(ObjectKey(Json::parse(R"({"metadata":{"name":"node1"}})")), "node1");
  EXPECT_EQ(UidOf(cm), "u");
  EXPECT_EQ(ResourceVersionOf(cm), "7");
  std::string ns, name;
  SplitObjectKey("ns/a", &ns, &name);
  EXPECT_EQ(ns, "ns");
  EXPECT_EQ(name, "a");
  SplitObjectKey("node1", &ns, &name);
  EXPECT_EQ(ns, "");
  EXPECT_EQ(name, "node1");
}

TEST(ResourceTest, StringAtNeverThrows) {
  Json j = Json::parse(R"({"a":{"b":"c","n":1},"l":[1]})");
  EXPECT_EQ(StringAt(j, {"a", "b"}), "c");
  EXPECT_EQ(StringAt(j, {"a", "n"}), "");
  EXPECT_EQ(StringAt(j, {"a", "missing"}), "");
  EXPECT_EQ(StringAt(j, {"l", "x"}), "");
  EXPECT_EQ(StringAt(Json(), {"metadata", "name"}), "");
  EXPECT_EQ(NameOf(Json::array()), "");
}

}  // namespace
}  // namespace buildcache::kube
