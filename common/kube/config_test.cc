#include "common/kube/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace buildcache::kube {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/bc-kubeconfig-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& text) const {
    std::string p = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p) << text;
    return p;
  }

 private:
  std::string path_;
};

constexpr char kTwoContexts[] = R"(
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev-cluster
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmNhCg==
- name: prod-cluster
  cluster:
    server: https://api.example.internal
    certificate-authority: certs/ca.crt
users:
- name: dev-user
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: prod-user
  user:
    tokenFile: /var/run/token
contexts:
- name: dev
  context: {cluster: dev-cluster, user: dev-user, namespace: ci-system}
- name: prod
  context: {cluster: prod-cluster, user: prod-user}
)";

TEST(KubeConfigTest, CurrentContextWithInlineData) {
  auto config = ParseKubeConfig(kTwoContexts, "/home/me/.kube");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->server, "https://10.0.0.1:6443");
  EXPECT_EQ(config->ca_pem, "-----BEGIN CERTIFICATE-----\nca\n");
  EXPECT_EQ(config->ca_file, "");
  EXPECT_EQ(config->client_cert_pem, "cert");
  EXPECT_EQ(config->client_key_pem, "key");
  EXPECT_EQ(config->default_namespace, "ci-system");
}

TEST(KubeConfigTest, NamedContextWithFilesResolvedAgainstTheKubeconfigDirectory) {
  auto config = ParseKubeConfig(kTwoContexts, "/home/me/.kube", "prod");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->server, "https://api.example.internal");
  EXPECT_EQ(config->ca_file, "/home/me/.kube/certs/ca.crt");
  EXPECT_EQ(config->token_file, "/var/run/token");
  EXPECT_EQ(config->default_namespace, "default");
}

TEST(KubeConfigTest, BearerTokenAndJsonSyntax) {
  auto config = ParseKubeConfig(
      R"({"current-context":"c","clusters":[{"name":"k","cluster":{"server":"https://h"}}],)"
      R"("users":[{"name":"u","user":{"token":"abc.def"}}],)"
      R"("contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}]})",
      "");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->token, "abc.def");
  EXPECT_EQ(config->ca_file, "");
}

TEST(KubeConfigTest, ProblemsAreNamed) {
  auto expect_error = [](const std::string& text, const std::string& context,
                         const std::string& needle) {
    auto config = ParseKubeConfig(text, "", context);
    ASSERT_FALSE(config.ok()) << needle;
    EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(needle), std::string::npos)
        << config.status().message();
  };
  expect_error(kTwoContexts, "staging", "no contexts entry named \"staging\"");
  expect_error("clusters: []\n", "", "no current-context");
  expect_error("current-context: c\ncontexts:\n- name: c\n  context: {cluster: k}\n", "",
               "no clusters entry named \"k\"");
  expect_error("[1, 2]", "", "not a mapping");
  expect_error("a: [", "", "kubeconfig:");
  std::string base =
      "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n"
      "users:\n- name: u\n  user: {}\nclusters:\n- name: k\n  cluster:\n";
  expect_error(base + "    server: https://h\n    insecure-skip-tls-verify: true\n", "",
               "insecure-skip-tls-verify is not supported");
  expect_error(base + "    certificate-authority-data: '!!!'\n    server: https://h\n", "",
               "invalid base64");
  expect_error(base + "    insecure-skip-tls-verify: false\n", "", "has no server");
  expect_error(
      "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n"
      "clusters:\n- name: k\n  cluster: {server: 'https://h'}\n"
      "users:\n- name: u\n  user:\n    exec: {command: aws}\n",
      "", "exec is not supported");
}

TEST(KubeConfigTest, LoadFileResolvesRelativePaths) {
  TempDir dir;
  std::string path = dir.Write("conf/kubeconfig", kTwoContexts);
  auto config = LoadKubeConfigFile(path, "prod");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->ca_file, dir.path() + "/conf/certs/ca.crt");
  EXPECT_NE(config->source.find(path), std::string::npos);
  auto missing = LoadKubeConfigFile(dir.path() + "/nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(KubeConfigTest, InClusterUsesServiceAccountFiles) {
  TempDir dir;
  dir.Write("sa/token", "tok");
  dir.Write("sa/ca.crt", "ca");
  dir.Write("sa/namespace", "buildcache-system\n");
  std::map<std::string, std::string> env = {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                            {"KUBERNETES_SERVICE_PORT", "443"}};
  auto getenv = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto config = InClusterConfig(getenv, dir.path() + "/sa");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->server, "https://10.96.0.1:443");
  EXPECT_EQ(config->token_file, dir.path() + "/sa/token");
  EXPECT_EQ(config->ca_file, dir.path() + "/sa/ca.crt");
  EXPECT_EQ(config->default_namespace, "buildcache-system");
  EXPECT_EQ(config->token, "");

  env["KUBERNETES_SERVICE_HOST"] = "fd00::1";
  EXPECT_EQ(InClusterConfig(getenv, dir.path() + "/sa")->server, "https://[fd00::1]:443");

  env.clear();
  EXPECT_EQ(InClusterConfig(getenv, dir.path() + "/sa").status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(KubeConfigTest, InClusterWithoutTokenFails) {
  TempDir dir;
  auto getenv = [](const char* name) -> const char* {
    return std::string(name) == "KUBERNETES_SERVICE_HOST"   ? "10.96.0.1"
           : std::string(name) == "KUBERNETES_SERVICE_PORT" ? "443"
                                                            : nullptr;
  };
  auto config = InClusterConfig(getenv, dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("no service account token"), std::string::npos);
}

}  // namespace
}  // namespace buildcache::kube
